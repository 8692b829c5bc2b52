import Foundation
import Testing

@testable import MergeEngine

/// `MergeConfigParser.Limits`: each bound accepts its exact value and refuses one more, before the recursive YAML
/// composer runs; alias bombs are refused by their expanded size.
struct ConfigLimitTests {
    typealias L = MergeConfigParser.Limits
    static let valid = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"

    func code(_ yaml: String) -> MergeError.Code? {
        mergeError { _ = try MergeConfigParser.parse(yaml, file: "l.yml") }?.code
    }

    @Test("a configuration of exactly maxBytes parses; one byte more is refused")
    func size() {
        let pad = L.maxBytes - Self.valid.utf8.count - 2
        let atLimit = Self.valid + "#" + String(repeating: "x", count: pad) + "\n"
        #expect(atLimit.utf8.count == L.maxBytes)
        #expect(code(atLimit) == nil)
        #expect(code(atLimit + " ") == .limitExceeded)
    }

    @Test("a file over maxBytes is refused before it is read")
    func fileSize() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tswitch-big-\(getpid()).yml")
        defer { try? FileManager.default.removeItem(at: url) }
        try Data(count: L.maxBytes + 1).write(to: url)
        let err = mergeError { _ = try MergeConfigParser.read(url.path) }
        #expect(err?.code == .limitExceeded)
        #expect(err?.message.contains(url.path) == true)
    }

    /// A config whose `parameters` carries one value nested `depth` levels deep, counting the root mapping.
    static func nested(_ depth: Int) -> String {
        // root mapping (1) > parameters mapping (2) > x: [[...]] (depth - 2 sequences)
        let n = depth - 2
        return Self.valid + "parameters:\n  x: " + String(repeating: "[", count: n) + "1"
            + String(repeating: "]", count: n) + "\n"
    }

    @Test("nesting of exactly maxDepth levels is not a limit error; one more is")
    func depth() {
        #expect(code(Self.nested(L.maxDepth)) != .limitExceeded)
        #expect(code(Self.nested(L.maxDepth + 1)) == .limitExceeded)
        // Deep enough to overflow a recursive composer's stack: refused (libyaml's own bound of 1000 levels stops
        // its look-ahead first), not a crash.
        let deep = String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
        let err = mergeError { _ = try MergeConfigParser.parse(deep, file: "deep.yml") }
        #expect(err?.code == .limitExceeded || err?.code == .invalidConfig)
        #expect(err?.message.hasPrefix("deep.yml") == true)
    }

    @Test("maxNodes nodes are accepted, one more is refused; an alias bomb counts its expansion")
    func nodes() {
        // root mapping, key, sequence = 3 nodes, plus n scalars.
        func doc(_ n: Int) -> String { "x: [" + Array(repeating: "0", count: n).joined(separator: ",") + "]\n" }
        #expect(code(doc(L.maxNodes - 3)) != .limitExceeded)
        #expect(code(doc(L.maxNodes - 2)) == .limitExceeded)
        // "Billion laughs": 10 levels of 10 aliases each expands to 10^10 nodes from 1 KB of text.
        var bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1..<10 {
            bomb += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        let err = mergeError { _ = try MergeConfigParser.parse(bomb, file: "bomb.yml") }
        #expect(err?.code == .limitExceeded)
        #expect(err?.message.contains("bomb.yml:") == true)
    }

    @Test("maxDocuments documents are accepted, one more is refused")
    func documents() {
        func docs(_ n: Int) -> String { (0..<n).map { "---\nname: d\($0)\n" + Self.valid }.joined() }
        #expect(code(docs(L.maxDocuments)) == nil)
        #expect(code(docs(L.maxDocuments + 1)) == .limitExceeded)
    }

    @Test("maxModels models, slices and slice sources are accepted, one more is refused")
    func models() {
        func models(_ n: Int) -> String {
            "merge_method: linear\nmodels:\n" + String(repeating: "  - model: a\n", count: n)
        }
        #expect(code(models(L.maxModels)) == nil)
        #expect(code(models(L.maxModels + 1)) == .limitExceeded)
        func slices(_ n: Int) -> String {
            "merge_method: passthrough\nslices:\n"
                + String(repeating: "  - sources:\n      - model: a\n        layer_range: [0, 1]\n", count: n)
        }
        #expect(code(slices(L.maxModels)) == nil)
        #expect(code(slices(L.maxModels + 1)) == .limitExceeded)
        func sources(_ n: Int) -> String {
            "merge_method: linear\nslices:\n  - sources:\n"
                + String(repeating: "      - model: a\n        layer_range: [0, 1]\n", count: n)
        }
        #expect(code(sources(L.maxModels)) == nil)
        #expect(code(sources(L.maxModels + 1)) == .limitExceeded)
    }
}
