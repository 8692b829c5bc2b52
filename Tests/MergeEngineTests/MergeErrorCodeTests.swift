import CheckpointIO
import Foundation
import Testing

@testable import MergeEngine

/// Every `MergeError` code, reached through `MergeEngine.run`, surfaces with that code (not `.checkpoint` for a
/// method's own error) and a message naming the file, tensor or value at fault.
@Suite("MergeError codes through MergeEngine.run")
struct MergeErrorCodeTests {
    /// Writes `yaml` to a config file and runs it; the error and the config's path.
    static func run(_ yaml: String, tag: String, options: MergeOptions = MergeOptions()) -> (MergeError?, String) {
        let file = Fixtures.scratch("config-\(tag)") + ".yml"
        let out = Fixtures.scratch("out-\(tag)")
        defer { for p in [file, out] { try? FileManager.default.removeItem(atPath: p) } }
        let error = mergeError {
            try Data(yaml.utf8).write(to: URL(fileURLWithPath: file))
            try MergeEngine.run(configFile: file, output: out, options: options)
        }
        return (error, file)
    }

    static let base = Fixtures.model("base")

    static func taskArithmetic(_ model: String, method: String = "task_arithmetic") -> String {
        "merge_method: \(method)\nbase_model: \(base)\nmodels:\n  - model: \(model)\n    parameters: {weight: 1}\n"
    }

    /// A copy of the base model whose every value is `value`.
    static func constantModel(_ tag: String, _ value: Float) throws -> String {
        let dir = Fixtures.scratch(tag)
        let folder = try ModelFolder(path: base)
        let specs = folder.tensorInfos.map { TensorSpec(name: $0.name, dtype: .F32, shape: $0.shape) }
        let writer = try ModelWriter(directory: dir, tensors: specs)
        for s in specs { try writer.write(s.name, floats: [Float](repeating: value, count: s.elementCount)) }
        try writer.copySupportFiles(from: folder, dtype: .F32)
        try writer.finish()
        return dir
    }

    @Test("invalidConfig: two unnamed documents name the config file")
    func invalidConfig() {
        let doc = Self.taskArithmetic(Fixtures.model("a"))
        let (e, file) = Self.run(doc + "---\n" + doc, tag: "invalid")
        #expect(e?.code == .invalidConfig)
        #expect(e?.message.contains(file) == true)
    }

    @Test("unknownKey names the config file and the key")
    func unknownKey() {
        let (e, file) = Self.run(Self.taskArithmetic(Fixtures.model("a")) + "frobnicate: 1\n", tag: "key")
        #expect(e?.code == .unknownKey)
        #expect(e?.message.contains(file) == true && e?.message.contains("frobnicate") == true)
    }

    @Test("unknownMethod names the config file and the method")
    func unknownMethod() {
        let (e, file) = Self.run(Self.taskArithmetic(Fixtures.model("a"), method: "no_such_method"), tag: "method")
        #expect(e?.code == .unknownMethod)
        #expect(e?.message.contains(file) == true && e?.message.contains("no_such_method") == true)
    }

    @Test("missingParameter names the config file and the key")
    func missingParameter() {
        let (e, file) = Self.run("models:\n  - model: \(Fixtures.model("a"))\n", tag: "param")
        #expect(e?.code == .missingParameter)
        #expect(e?.message.contains(file) == true && e?.message.contains("merge_method") == true)
    }

    @Test("modelNotFound names the config file and the model")
    func modelNotFound() {
        let (e, file) = Self.run(Self.taskArithmetic("./no-such-model-here"), tag: "model")
        #expect(e?.code == .modelNotFound)
        #expect(e?.message.contains(file) == true && e?.message.contains("no-such-model-here") == true)
    }

    @Test("missingTensor names the tensor and the model lacking it")
    func missingTensor() throws {
        let lacking = try MergeInputTests.variant("engine-missing") {
            $0.name.contains("layers.1.mlp.down_proj") ? .some(nil) : .none
        }
        defer { try? FileManager.default.removeItem(atPath: lacking) }
        let (e, _) = Self.run(Self.taskArithmetic(lacking), tag: "tensor")
        #expect(e?.code == .missingTensor)
        #expect(
            e?.message.contains("model.layers.1.mlp.down_proj.weight") == true && e?.message.contains(lacking) == true)
    }

    @Test("shapeMismatch names the tensor and the shapes")
    func shapeMismatch() throws {
        let odd = try MergeInputTests.variant("engine-shape") { $0.name == "model.norm.weight" ? .some([32]) : .none }
        defer { try? FileManager.default.removeItem(atPath: odd) }
        let (e, _) = Self.run(Self.taskArithmetic(odd), tag: "shape")
        #expect(e?.code == .shapeMismatch)
        #expect(e?.message.contains("'model.norm.weight'") == true && e?.message.contains("\(odd): 32") == true)
    }

    @Test("invalidInputs names the config file and the model given twice")
    func invalidInputs() {
        let a = Fixtures.model("a")
        let yaml = Self.taskArithmetic(a) + "  - model: \(a)\n    parameters: {weight: 1}\n"
        let (e, file) = Self.run(yaml, tag: "inputs")
        #expect(e?.code == .invalidInputs)
        #expect(e?.message.contains(file) == true && e?.message.contains(a) == true)
    }

    @Test("numerical: a method's own error keeps its code through the engine (once turned into .checkpoint)")
    func numerical() throws {
        let nan = try Self.constantModel("engine-nan", .nan)
        defer { try? FileManager.default.removeItem(atPath: nan) }
        for streaming in [true, false] {
            var options = MergeOptions()
            options.streaming = streaming
            let (e, _) = Self.run(Self.taskArithmetic(nan, method: "t_switch"), tag: "nan", options: options)
            #expect(e?.code == .numerical)
            #expect(e?.message.contains("tensor '") == true && e?.message.contains(nan) == true)
            #expect(e?.cause == nil)
        }
    }

    @Test("checkpoint: an existing output names the folder and keeps the CheckpointError as cause")
    func checkpoint() throws {
        let out = Fixtures.scratch("exists")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let configs = try MergeConfigParser.parse(Self.taskArithmetic(Fixtures.model("a")), file: "inline.yml")
        let e = mergeError { try MergeEngine.run(configs: configs, configDirectory: nil, output: out) }
        #expect(e?.code == .checkpoint)
        #expect(e?.message.contains(URL(fileURLWithPath: out).lastPathComponent) == true)
        #expect(e?.message.contains("--") == false)
        #expect(e?.underlying(CheckpointError.self)?.code == .outputExists)
        #expect(e.map { String(reflecting: $0) }?.contains("CheckpointError.outputExists") == true)
    }

    @Test("limitExceeded names the config file")
    func limitExceeded() {
        let yaml =
            "merge_method: linear\nmodels:\n"
            + String(repeating: "  - model: a\n", count: MergeConfigParser.Limits.maxModels + 1)
        let (e, file) = Self.run(yaml, tag: "limit")
        #expect(e?.code == .limitExceeded)
        #expect(e?.message.contains(file) == true)
    }

    @Test("every MergeError code has an engine-level test here")
    func everyCode() {
        #expect(MergeError.Code.allCases.count == 12)  // `unsupported`: MoETests
        #expect(MergeError.Code(rawValue: "numerical") == .numerical && MergeError.Code(rawValue: "nope") == nil)
    }
}
