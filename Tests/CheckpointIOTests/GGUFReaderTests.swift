import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

/// GGUF files written by the `gguf` Python package (`scripts/fixtures/make_gguf_fixtures.py`): headers, metadata of
/// every value type, and every dequantizable type bit for bit against `gguf.quants.dequantize`.
@Suite("GGUF: reading files written by gguf-py")
struct GGUFReaderTests {
    static let dequantized = [
        "f32.cube", "f16.vector", "bf16.matrix", "q8_0.weight", "q4_0.weight", "q4_1.weight", "q5_0.weight",
        "q5_1.weight", "q2_k.weight", "q3_k.weight", "q4_k.weight", "q5_k.weight", "q6_k.weight", "q8_k.weight",
    ]

    @Test("The header: version, alignment, tensors in file order with ggml type, dims and offsets")
    func header() throws {
        let f = try GGUFFile(path: Fixture.path("gguf/quants.gguf"))
        #expect(f.header.version == 3 && f.header.alignment == 32)
        #expect(f.tensors.map(\.name) == Self.dequantized + ["i32.ids", "iq4_nl.weight"])
        let byName = Dictionary(uniqueKeysWithValues: f.tensors.map { ($0.name, $0) })
        #expect(byName["f32.cube"]?.dims == [4, 3, 2] && byName["f32.cube"]?.shape == [2, 3, 4])
        #expect(byName["q4_k.weight"]?.type == .Q4_K && byName["q4_k.weight"]?.shape == [3, 256])
        #expect(byName["q4_k.weight"]?.byteCount == 3 * 144)
        #expect(byName["q8_k.weight"]?.byteCount == 2 * 292)
        #expect(byName["iq4_nl.weight"]?.type == .IQ4_NL && byName["iq4_nl.weight"]?.shape == [2, 32])
        for t in f.tensors {
            #expect(t.offset % 32 == 0, "\(t.name)")
            #expect(GGMLType.byteCount(dims: t.dims, type: t.type) == t.byteCount)
        }
        #expect(f.header.dataStart % 32 == 0)
    }

    @Test("Metadata of every value type, nested arrays and UTF-8 strings read exactly")
    func metadata() throws {
        let h = try GGUFFile(path: Fixture.path("gguf/quants.gguf")).header
        #expect(h.value("general.architecture") == .string("llama"))
        #expect(h.value("general.name") == .string("gguf fixture ✓\nsecond line"))
        #expect(h.value("test.u8") == .uint8(250))
        #expect(h.value("test.i8") == .int8(-100))
        #expect(h.value("test.u16") == .uint16(65000))
        #expect(h.value("test.i16") == .int16(-32000))
        #expect(h.value("test.u32") == .uint32(4_000_000_000))
        #expect(h.value("test.i32") == .int32(-2_000_000_000))
        #expect(h.value("test.f32") == .float32(0.1))
        #expect(h.value("test.bool") == .bool(true))
        #expect(h.value("test.u64") == .uint64(1 << 63 + 5))
        #expect(h.value("test.i64") == .int64(-(1 << 62)))
        #expect(h.value("test.f64") == .float64(1.0 / 3.0))
        #expect(h.value("test.array.i32") == .array(.int32, [.int32(1), .int32(-2), .int32(3)]))
        #expect(h.value("test.array.str") == .array(.string, [.string("a"), .string(""), .string("ünï")]))
        #expect(h.value("test.array.f32") == .array(.float32, [.float32(0.5), .float32(-1.5)]))
        #expect(
            h.value("test.array.nested")
                == .array(
                    .array,
                    [
                        .array(.int32, [.int32(1), .int32(2)]), .array(.int32, [.int32(3)]),
                    ]))
        #expect(h.metadata.first?.key == "general.architecture", "file order is kept")
    }

    static func reference() throws -> SafeTensorsFile {
        try SafeTensorsFile(path: Fixture.path("gguf/quants.reference.safetensors"))
    }

    @Test("Every type dequantizes bit for bit as gguf.quants.dequantize", arguments: dequantized)
    func dequantize(_ name: String) throws {
        let ref = try Self.reference().tensor(name)
        for path in ["gguf/quants.gguf", "gguf/v2.gguf", "gguf/align64.gguf"] {
            let f = try GGUFFile(path: Fixture.path(path))
            let t = try f.tensor(name)
            #expect(t.info.shape == ref.shape, "\(path): \(name)")
            let got = try t.floats()
            let want = try ref.floats()
            #expect(got.count == want.count)
            let mismatches = zip(got, want).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
            #expect(
                mismatches.isEmpty,
                "\(path): \(name): \(mismatches.count) of \(want.count) differ, first at \(mismatches.first.map { "\($0.offset): \($0.element.0) vs \($0.element.1)" } ?? "")"
            )
        }
    }

    @Test("Version 2 and a 64-byte alignment read the same tensors")
    func variants() throws {
        let v3 = try GGUFFile(path: Fixture.path("gguf/quants.gguf"))
        let v2 = try GGUFFile(path: Fixture.path("gguf/v2.gguf"))
        let a64 = try GGUFFile(path: Fixture.path("gguf/align64.gguf"))
        #expect(v2.header.version == 2 && v2.tensors == v3.tensors)
        #expect(a64.header.alignment == 64 && a64.header.value("general.alignment") == .uint32(64))
        #expect(a64.tensors.map(\.name) == v3.tensors.map(\.name))
        #expect(a64.tensors.allSatisfy { $0.offset % 64 == 0 } && a64.header.dataStart % 64 == 0)
        let empty = try GGUFFile(path: Fixture.path("gguf/empty.gguf"))
        #expect(empty.tensors.isEmpty && empty.header.value("general.architecture") == .string("llama"))
    }

    @Test("Types that are not dequantized are refused with a typed error naming file and tensor")
    func unsupportedTypes() throws {
        let path = Fixture.path("gguf/quants.gguf")
        let f = try GGUFFile(path: path)
        for name in ["i32.ids", "iq4_nl.weight"] {
            let e = checkpointError { _ = try f.tensor(name).floats() }
            #expect(e?.code == .unsupportedDType)
            #expect(e?.message.contains("'\(name)'") == true && e?.message.contains(path) == true)
        }
        #expect(try f.tensor("i32.ids").bytes.loadUnaligned(fromByteOffset: 20, as: Int32.self) == 5)
        #expect(checkpointError { _ = try f.tensor("nope") }?.code == .tensorNotFound)
        #expect(GGUFFile.hasMagic(path: path))
        #expect(!GGUFFile.hasMagic(path: Fixture.path("models/mixed.safetensors")))
    }

    @Test("Large tensors split across cores decode exactly as block by block")
    func parallelSplit() {
        var rng = SplitMix(7)
        for type in GGMLType.allCases where type.isDequantizable && type.blockSize > 1 {
            let blocks = 9_000 * 32 / type.blockSize + 3
            var raw = [UInt8](repeating: 0, count: blocks * type.typeSize)
            for i in raw.indices { raw[i] = UInt8(truncatingIfNeeded: rng.next()) }
            // Scales must be finite: clear the exponent's top bit of every f16/f32 scale field.
            let scaleBytes: [Int] =
                switch type {
                case .Q2_K: [81, 83]
                case .Q3_K: [109]
                case .Q6_K: [209]
                case .Q8_K: [3]
                case .Q4_K, .Q5_K, .Q4_1, .Q5_1: [1, 3]
                default: [1]
                }
            for b in 0..<blocks { for o in scaleBytes { raw[b * type.typeSize + o] &= 0xBF } }
            let n = blocks * type.blockSize
            var whole = [Float](repeating: 0, count: n)
            var single = [Float](repeating: 0, count: n)
            raw.withUnsafeBytes { src in
                whole.withUnsafeMutableBufferPointer { GGMLDequantize.toFloat(src, type: type, into: $0) }
                single.withUnsafeMutableBufferPointer { dst in
                    for b in 0..<blocks {
                        GGMLDequantize.toFloat(
                            UnsafeRawBufferPointer(rebasing: src[(b * type.typeSize)..<((b + 1) * type.typeSize)]),
                            type: type,
                            into: UnsafeMutableBufferPointer(
                                rebasing: dst[(b * type.blockSize)..<((b + 1) * type.blockSize)]))
                    }
                }
            }
            #expect(whole.map(\.bitPattern) == single.map(\.bitPattern), "\(type.name)")
            let finite = whole.allSatisfy { $0.isFinite }
            #expect(finite, "\(type.name)")
        }
    }
}
