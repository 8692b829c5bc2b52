// Compiled together with Sources/CheckpointIO into one module by scripts/fuzz (swiftc -sanitize=fuzzer,address
// -parse-as-library): libFuzzer supplies `main`, which a SwiftPM executable target cannot leave out.
import Foundation

/// libFuzzer entry point. Each input is tried as a whole safetensors file (length field, header, data buffer) and
/// as a `model.safetensors.index.json`. Both parsers must return a value or throw a `CheckpointError`; any crash,
/// trap or sanitizer report is a finding. Accepted headers are re-checked for the invariants the reader relies on.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzParsers(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    #if FUZZ_SELFTEST
    // `scripts/fuzz --selftest` builds with this flag to prove that a finding makes the run fail.
    if size >= 5, bytes[0] == UInt8(ascii: "C"), bytes[4] == UInt8(ascii: "H") { fatalError("self-test finding") }
    #endif
    checkHeader(bytes)
    do {
        let entries = try ModelFolder.parseIndex(Data(bytes), file: "fuzz.index.json")
        precondition(Set(entries.map(\.tensor)).count == entries.count, "index parser accepted a tensor twice")
    } catch {}
    return 0
}

private func checkHeader(_ bytes: UnsafeRawBufferPointer) {
    do {
        let n = try SafeTensorsHeader.headerLength(
            prefix: UnsafeRawBufferPointer(rebasing: bytes[0..<min(8, bytes.count)]), fileSize: bytes.count, file: "fuzz")
        let header = try SafeTensorsHeader.parse(
            json: UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + n)]), fileSize: bytes.count, file: "fuzz")
        // Invariants of an accepted header: contiguous spans that tile the data buffer exactly.
        var end = 0
        for t in header.tensors {
            precondition(t.dataOffsets.lowerBound == end, "accepted a gap or overlap")
            precondition(TensorInfo.byteCount(shape: t.shape, dtype: t.dtype) == t.byteCount, "accepted a wrong span")
            end = t.dataOffsets.upperBound
        }
        precondition(header.dataStart + end == bytes.count, "accepted trailing or missing bytes")
        // Converting accepted float tensors must stay inside the buffer.
        for t in header.tensors where t.dtype.isConvertibleFloat && t.elementCount <= 1 << 16 {
            let start = header.dataStart + t.dataOffsets.lowerBound
            let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: t.elementCount)
            DTypeConversion.toFloat(
                UnsafeRawBufferPointer(rebasing: bytes[start..<(start + t.byteCount)]), dtype: t.dtype, into: out)
            out.deallocate()
        }
    } catch {}
}
