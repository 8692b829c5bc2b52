import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

/// Every file of the GGUF malformed corpus (`scripts/fixtures/make_gguf_fixtures.py`) fails with its own error
/// code, in one sentence naming the file and the tensor or key involved.
@Suite("GGUF malformed corpus")
struct GGUFMalformedTests {
    static let cases: [MalformedCase] = {
        guard let e = try? Fixture.json("gguf/malformed/expected.json") as? [String: [String: Any]] else {
            fatalError("gguf/malformed/expected.json is missing")
        }
        return MalformedCase.cases(e)
    }()

    @Test("The corpus covers every rule: at least 40 files and 14 distinct codes, all of them real codes")
    func corpusSize() {
        #expect(Self.cases.count >= 40)
        #expect(Set(Self.cases.map(\.code)).count >= 14)
        MalformedCase.expectKnownCodes(Self.cases, CheckpointError.Code.self)
    }

    @Test("A malformed file is refused with its code, naming the file and the tensor or key", arguments: cases)
    func malformed(_ c: MalformedCase) {
        let path = Fixture.path("gguf/malformed/\(c.name).gguf")
        let error = checkpointError { _ = try GGUFFile(path: path) }
        c.expectRefusal(error, naming: path)
        guard let error else { return }
        #expect(error.message.hasSuffix(".") && !error.message.contains("\n"), "\(c.name): \(error.message)")
    }
}

/// A deterministic mutation fuzzer run with every `swift test` (libFuzzer's `gguf` target runs in `scripts/fuzz`):
/// mutants of the valid files either parse into a header whose tensors are laid out as the rules say, or throw
/// a `CheckpointError` naming the input.
@Suite("Mutation fuzzing of the GGUF parser")
struct GGUFMutationTests {
    static func parse(_ bytes: [UInt8]) throws(CheckpointError) -> GGUFHeader {
        try MutationRun.withBytes(bytes) { raw throws(CheckpointError) in try GGUFHeader.parse(raw, file: "mutant") }
    }

    @Test("10,000 mutants are parsed consistently or refused with a CheckpointError")
    func mutants() throws {
        let valid = try ["quants.gguf", "align64.gguf", "empty.gguf"].map {
            try [UInt8](Data(contentsOf: Fixture.root.appendingPathComponent("gguf/\($0)")))
        }
        let (accepted, codes) = MutationRun.run(
            valid, count: 10_000, seed: 2027,
            edit: { b, pos, rng in
                switch rng.next() % 5 {
                case 0 where !b.isEmpty: b[pos] ^= UInt8(1 << (rng.next() % 8))
                case 1 where !b.isEmpty:
                    b[pos] = [0, 1, 2, 9, 0x20, 0x40, 0x7F, 0x80, 0xFF].randomElement(using: &rng) ?? 0
                case 2: b = Array(b.prefix(pos))
                case 3:
                    b.insert(
                        contentsOf: (0..<(1 + rng.next() % 8)).map { _ in UInt8(truncatingIfNeeded: rng.next()) },
                        at: min(pos, b.count))
                default: if !b.isEmpty { b.remove(at: pos) }
                }
            },
            parse: Self.parse,
            accepted: { h, b in
                var expected = 0
                for t in h.tensors {
                    #expect(t.offset == expected && t.offset % h.alignment == 0)
                    #expect(t.dims.count <= GGUFHeader.Limits.maxRank)
                    #expect(GGMLType.byteCount(dims: t.dims, type: t.type) == t.byteCount)
                    expected = GGUFHeader.paddedEnd(t.offset, t.byteCount, h.alignment) ?? -1
                }
                if let last = h.tensors.last {
                    #expect(h.dataStart + last.offset + last.byteCount <= b.count && b.count <= h.dataStart + expected)
                }
                // The accepted spans are inside the buffer: dequantize what is small.
                b.withUnsafeBytes { raw in
                    for t in h.tensors where t.type.isDequantizable && t.elementCount <= 1 << 16 {
                        let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: t.elementCount)
                        GGMLDequantize.toFloat(
                            UnsafeRawBufferPointer(
                                rebasing: raw[(h.dataStart + t.offset)..<(h.dataStart + t.offset + t.byteCount)]),
                            type: t.type, into: out)
                        out.deallocate()
                    }
                }
            })
        #expect(accepted > 0, "some mutants (e.g. changed tensor bytes) stay valid")
        #expect(codes.count >= 8, "mutants reach many different checks: \(codes)")
    }
}
