import Foundation
import Testing

@testable import CheckpointIO

/// Every file of the malformed corpus (`scripts/fixtures/io_malformed.py`) fails with its own error code and a
/// message naming the file and the tensor; the valid corner cases open with the right tensors.
@Suite("Malformed corpus")
struct MalformedCorpusTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let code: String
        let tensor: String?
        var testDescription: String { "\(name) -> \(code)" }
    }

    nonisolated(unsafe) static let expected: [String: Any] = {
        guard let e = try? Fixture.json("malformed/expected.json") as? [String: Any] else {
            fatalError("malformed/expected.json is missing")
        }
        return e
    }()

    static func cases(_ group: String) -> [Case] {
        let entries = expected[group] as? [String: [String: Any]] ?? [:]
        return entries.keys.sorted().map { name in
            Case(name: name, code: entries[name]?["code"] as? String ?? "?", tensor: entries[name]?["tensor"] as? String)
        }
    }

    static let fileCases = cases("files")
    static let folderCases = cases("folders")

    @Test("The corpus has at least 30 malformed files and every error code it promises exists")
    func corpusSize() {
        #expect(Self.fileCases.count + Self.folderCases.count >= 30)
        for c in Self.fileCases + Self.folderCases {
            #expect(CheckpointError.Code(rawValue: c.code) != nil, "\(c.name): unknown code \(c.code)")
        }
        // Each error family of the format is represented.
        let codes = Set((Self.fileCases + Self.folderCases).map(\.code))
        #expect(codes.count >= 20)
    }

    @Test("A malformed file is refused with its code, naming the file and tensor", arguments: fileCases)
    func malformedFile(_ c: Case) {
        let path = Fixture.path("malformed/files/\(c.name).safetensors")
        let error = checkpointError { _ = try SafeTensorsFile(path: path) }
        #expect(error?.code.rawValue == c.code, "\(c.name): \(error?.message ?? "accepted")")
        #expect(error?.message.contains(path) == true, "message does not name the file: \(error?.message ?? "")")
        if let tensor = c.tensor {
            #expect(error?.message.contains("'\(tensor)'") == true, "message does not name '\(tensor)': \(error?.message ?? "")")
        }
        // Same through the model-folder entry point, which is what the CLI uses.
        #expect(checkpointError { _ = try ModelFolder(path: path) }?.code.rawValue == c.code)
    }

    @Test("A malformed model folder is refused with its code, naming the file and tensor", arguments: folderCases)
    func malformedFolder(_ c: Case) {
        let path = Fixture.path("malformed/folders/\(c.name)")
        let error = checkpointError { _ = try ModelFolder(path: path) }
        #expect(error?.code.rawValue == c.code, "\(c.name): \(error?.message ?? "accepted")")
        #expect(error?.message.contains(path) == true, "message does not name the folder or file: \(error?.message ?? "")")
        if let tensor = c.tensor {
            #expect(error?.message.contains("'\(tensor)'") == true, "message does not name '\(tensor)': \(error?.message ?? "")")
        }
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
        let ordered = try SafeTensorsFile(path: Fixture.path("malformed/valid/header_order_not_offset_order.safetensors"))
        #expect(ordered.tensors.map(\.name) == ["a", "b"], "tensors are listed in offset order")
        #expect(try ordered.tensor("b").floats() == [2])
        let unpadded = try SafeTensorsFile(path: Fixture.path("malformed/valid/unpadded_header.safetensors"))
        #expect(unpadded.header.dataStart % 8 != 0)
        #expect(try unpadded.tensor("a").floats() == [1, 2, 3])
    }
}
