import CheckpointIO
import Foundation

/// A whole safetensors file (length field, header, data buffer). Accepted headers are re-checked for the
/// invariants the reader relies on: spans that tile the data buffer, and conversions that stay inside it.
func fuzzSafeTensorsHeader(_ bytes: UnsafeRawBufferPointer) {
    do {
        let n = try SafeTensorsHeader.headerLength(
            prefix: UnsafeRawBufferPointer(rebasing: bytes[0..<min(8, bytes.count)]), fileSize: bytes.count,
            file: "fuzz")
        let header = try SafeTensorsHeader.parse(
            json: UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + n)]), fileSize: bytes.count, file: "fuzz")
        var end = 0
        for t in header.tensors {
            precondition(t.shape.count <= SafeTensorsHeader.Limits.maxRank, "accepted a rank over the limit")
            precondition(t.dataOffsets.lowerBound == end, "accepted a gap or overlap")
            precondition(TensorInfo.byteCount(shape: t.shape, dtype: t.dtype) == t.byteCount, "accepted a wrong span")
            end = t.dataOffsets.upperBound
        }
        precondition(header.dataStart + end == bytes.count, "accepted trailing or missing bytes")
        for t in header.tensors where t.dtype.isConvertibleFloat && t.elementCount <= 1 << 16 {
            let start = header.dataStart + t.dataOffsets.lowerBound
            let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: t.elementCount)
            DTypeConversion.toFloat(
                UnsafeRawBufferPointer(rebasing: bytes[start..<(start + t.byteCount)]), dtype: t.dtype, into: out)
            out.deallocate()
        }
    } catch {}
}

/// A whole GGUF file. Accepted headers are re-checked for the layout the reader relies on (aligned tensors, each
/// where the previous one ends, spans of whole blocks inside the buffer), small tensors are dequantized, and the
/// tokenizer files are rebuilt from the metadata (refused or built, never a crash).
func fuzzGGUF(_ bytes: UnsafeRawBufferPointer) {
    do {
        let h = try GGUFHeader.parse(bytes, file: "fuzz")
        var expected = 0
        for t in h.tensors {
            precondition(t.dims.count <= GGUFHeader.Limits.maxRank, "accepted a rank over the limit")
            precondition(
                t.offset == expected && t.offset % h.alignment == 0, "accepted a gap, overlap or misaligned offset")
            precondition(GGMLType.byteCount(dims: t.dims, type: t.type) == t.byteCount, "accepted a wrong span")
            expected = t.offset + t.byteCount
            expected = (expected + h.alignment - 1) / h.alignment * h.alignment
        }
        if let last = h.tensors.last {
            precondition(h.dataStart + last.offset + last.byteCount <= bytes.count, "accepted a tensor past the end")
        }
        for t in h.tensors where t.type.isDequantizable && t.elementCount <= 1 << 16 {
            let start = h.dataStart + t.offset
            let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: t.elementCount)
            GGMLDequantize.toFloat(
                UnsafeRawBufferPointer(rebasing: bytes[start..<(start + t.byteCount)]), type: t.type, into: out)
            out.deallocate()
        }
        _ = try? GGUFTokenizerFiles.build(h, file: "fuzz")
    } catch {}
}

/// A `model.safetensors.index.json`: the weight map must come back without a tensor twice.
func fuzzIndex(_ bytes: UnsafeRawBufferPointer) {
    do {
        let entries = try ModelFolder.parseIndex(Data(bytes), file: "fuzz.index.json")
        precondition(Set(entries.map(\.tensor)).count == entries.count, "index parser accepted a tensor twice")
    } catch {}
}
