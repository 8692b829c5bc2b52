import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

/// Every file of the malformed corpus (`scripts/fixtures/io_malformed.py`) fails with its own error code and a
/// message naming the file and the tensor; the valid corner cases open with the right tensors.
@Suite("Malformed corpus")
struct MalformedCorpusTests {

    nonisolated(unsafe) static let expected: [String: Any] = {
        guard let e = try? Fixture.json("malformed/expected.json") as? [String: Any] else {
            fatalError("malformed/expected.json is missing")
        }
        return e
    }()

    static func cases(_ group: String) -> [MalformedCase] {
        MalformedCase.cases(expected[group] as? [String: [String: Any]] ?? [:])
    }

    static let fileCases = cases("files")
    static let folderCases = cases("folders")

    @Test("The corpus has at least 30 malformed files and every error code it promises exists")
    func corpusSize() {
        #expect(Self.fileCases.count + Self.folderCases.count >= 30)
        MalformedCase.expectKnownCodes(Self.fileCases + Self.folderCases, CheckpointError.Code.self)
        // Each error family of the format is represented.
        let codes = Set((Self.fileCases + Self.folderCases).map(\.code))
        #expect(codes.count >= 20)
    }

    @Test("A malformed file is refused with its code, naming the file and tensor", arguments: fileCases)
    func malformedFile(_ c: MalformedCase) {
        let path = Fixture.path("malformed/files/\(c.name).safetensors")
        c.expectRefusal(checkpointError { _ = try SafeTensorsFile(path: path) }, naming: path)
        // Same through the model-folder entry point, which is what the CLI uses.
        #expect(checkpointError { _ = try ModelFolder(path: path) }?.code.rawValue == c.code)
    }

    @Test("A malformed model folder is refused with its code, naming the file and tensor", arguments: folderCases)
    func malformedFolder(_ c: MalformedCase) {
        let path = Fixture.path("malformed/folders/\(c.name)")
        c.expectRefusal(checkpointError { _ = try ModelFolder(path: path) }, naming: path)
    }

    @Test("Messages are single full sentences")
    func messageShape() {
        for c in Self.fileCases {
            let path = Fixture.path("malformed/files/\(c.name).safetensors")
            guard let error = checkpointError({ _ = try SafeTensorsFile(path: path) }) else { continue }
            #expect(error.message.hasSuffix("."), "\(c.name): \(error.message)")
            #expect(!error.message.contains("\n"), "\(c.name): \(error.message)")
            #expect(error.description == error.message)
        }
    }

    @Test("Valid corner cases open with the expected tensors and element counts", arguments: cases("valid").map(\.name))
    func validEdgeCase(_ name: String) throws {
        let spec = try #require((Self.expected["valid"] as? [String: [String: Any]])?[name])
        let elements = try #require(spec["elements"] as? [String: Int])
        let file = try SafeTensorsFile(path: Fixture.path("malformed/valid/\(name).safetensors"))
        #expect(Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.name, $0.elementCount) }) == elements)
        for t in file.tensors {
            #expect(try file.tensor(t.name).bytes.count == t.byteCount)
            if t.dtype.isConvertibleFloat { #expect(try file.tensor(t.name).floats().count == t.elementCount) }
        }
    }

    @Test("Valid corner cases keep their values: scalar, NaN and Inf, header order")
    func validValues() throws {
        let scalar = try SafeTensorsFile(path: Fixture.path("malformed/valid/scalar.safetensors"))
        #expect(try scalar.tensor("s").floats() == [2.5])
        let special = try SafeTensorsFile(path: Fixture.path("malformed/valid/nan_inf_data.safetensors"))
        let v = try special.tensor("a").floats()
        #expect(v[0].isNaN && v[1] == .infinity && v[2] == -.infinity && v[3] == 0 && v[3].sign == .minus)
        let ordered = try SafeTensorsFile(
            path: Fixture.path("malformed/valid/header_order_not_offset_order.safetensors"))
        #expect(ordered.tensors.map(\.name) == ["a", "b"], "tensors are listed in offset order")
        #expect(try ordered.tensor("b").floats() == [2])
        let unpadded = try SafeTensorsFile(path: Fixture.path("malformed/valid/unpadded_header.safetensors"))
        #expect(unpadded.header.dataStart % 8 != 0)
        #expect(try unpadded.tensor("a").floats() == [1, 2, 3])
    }
}

/// A deterministic mutation fuzzer that runs with every `swift test` (libFuzzer runs in `scripts/fuzz`): mutants of
/// the valid files either parse into a header whose spans tile the data exactly, or throw a `CheckpointError`.
@Suite("Mutation fuzzing of the header parser")
struct HeaderMutationTests {
    static func parse(_ bytes: [UInt8]) throws(CheckpointError) -> SafeTensorsHeader {
        try MutationRun.withBytes(bytes) { raw throws(CheckpointError) in
            let n = try SafeTensorsHeader.headerLength(
                prefix: UnsafeRawBufferPointer(rebasing: raw[0..<min(8, raw.count)]), fileSize: raw.count,
                file: "mutant")
            return try SafeTensorsHeader.parse(
                json: UnsafeRawBufferPointer(rebasing: raw[8..<(8 + n)]), fileSize: raw.count, file: "mutant")
        }
    }

    @Test("20,000 mutants of valid files are parsed or refused with a CheckpointError, never accepted inconsistently")
    func mutants() throws {
        let valid =
            try FileManager.default.contentsOfDirectory(atPath: Fixture.path("malformed/valid")).sorted()
            .map { try [UInt8](Data(contentsOf: Fixture.root.appendingPathComponent("malformed/valid/\($0)"))) }
            + [try [UInt8](Data(contentsOf: Fixture.root.appendingPathComponent("models/mixed.safetensors")))]
        let (accepted, codes) = MutationRun.run(
            valid, count: 20_000, seed: 2026,
            edit: { b, pos, rng in
                switch rng.next() % 6 {
                case 0 where !b.isEmpty: b[pos] ^= UInt8(1 << (rng.next() % 8))  // bit flip
                case 1 where !b.isEmpty: b[pos] = Array("{}[],:\"0123456789-.e\\ ".utf8).randomElement(using: &rng) ?? 0
                case 2: b = Array(b.prefix(pos))  // truncate
                case 3:
                    b.insert(
                        contentsOf: Array("\"F32\",[0,1]".utf8).shuffled(using: &rng).prefix(Int(rng.next() % 6)),
                        at: min(pos, b.count))
                case 4 where b.count >= 8:
                    b.replaceSubrange(
                        0..<8,
                        with: withUnsafeBytes(of: UInt64(rng.next() % UInt64(b.count + 16)).littleEndian, Array.init))
                default: if !b.isEmpty { b.remove(at: pos) }
                }
            },
            parse: Self.parse,
            accepted: { h, b in
                var end = 0
                for t in h.tensors {
                    #expect(t.dataOffsets.lowerBound == end)
                    #expect(TensorInfo.byteCount(shape: t.shape, dtype: t.dtype) == t.byteCount)
                    end = t.dataOffsets.upperBound
                }
                #expect(h.dataStart + end == b.count)
            })
        #expect(accepted > 0, "some mutants (e.g. whitespace changes) stay valid")
        #expect(codes.count >= 8, "mutants reach many different checks: \(codes)")
    }
}
