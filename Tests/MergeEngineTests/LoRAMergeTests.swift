import CheckpointIO
import Foundation
import TestSupport
import Testing

@testable import MergeEngine

/// mergekit's `model: path+lora_path` inputs (fixtures: scripts/fixtures/lora_fixtures.py; mergekit 0.1.5 with
/// PEFT 0.21 made expected/).
@Suite("Merging LoRA adapters given as model+lora", .serialized)
struct LoRAMergeTests {
    static let folder = Fixtures.directory.appendingPathComponent("lora")

    func mergeAndCompare(_ name: String) throws -> Float {
        let out = Fixtures.scratch(name)
        defer { try? FileManager.default.removeItem(atPath: out) }
        try MergeEngine.run(
            configFile: Self.folder.appendingPathComponent("\(name).yml").path, output: out, options: MergeOptions())
        let ours = try ModelFolder(path: out)
        let ref = try ModelFolder(path: Self.folder.appendingPathComponent("expected/\(name).safetensors").path)
        #expect(Set(ours.tensorNames) == Set(ref.tensorNames))
        var worst: Float = 0
        for t in ref.tensorNames {
            let x = try ours.tensor(t).floats()
            let y = try ref.tensor(t).floats()
            #expect(x.count == y.count, "\(t)")
            for (a, b) in zip(x, y) { worst = max(worst, abs(a - b) / max(1e-3, abs(b))) }
        }
        return worst
    }

    @Test("a linear merge of base+adapter equals mergekit's output (the PEFT-merged model) exactly")
    func linearEqualsMergekit() throws {
        #expect(try mergeAndCompare("lora_linear") == 0)
    }

    @Test("task arithmetic over two base+adapter inputs matches mergekit within f32 rounding")
    func taskArithmeticMatchesMergekit() throws {
        #expect(try mergeAndCompare("lora_task_arithmetic") <= 1e-6)
    }

    @Test("the temporary merged model of a model+lora input is deleted with the plan")
    func scratchIsRemoved() throws {
        let file = Self.folder.appendingPathComponent("lora_linear.yml").path
        let config = try #require(
            try MergeConfigParser.parse(String(contentsOfFile: file, encoding: .utf8), file: file).first)
        var path = ""
        do {
            let plan = try MergePlan(config: config, resolver: ModelResolver(configDirectory: Self.folder.path))
            path = plan.models[0].path
            #expect(FileManager.default.fileExists(atPath: path + "/model.safetensors"))
        }
        #expect(!path.isEmpty && !FileManager.default.fileExists(atPath: path))
    }

    @Test("a model+lora whose adapter is not a PEFT folder fails naming the reference, and leaves nothing behind")
    func badAdapter() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let yml = dir.appendingPathComponent("bad.yml")
        let base = Self.folder.appendingPathComponent("base").path
        try "merge_method: linear\nmodels:\n  - model: \(base)+\(base)\n    parameters: {weight: 1.0}\n"
            .write(to: yml, atomically: true, encoding: .utf8)
        let before = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())
            .filter { $0.hasPrefix("tswitch-lora-\(getpid())") }
        do {
            try MergeEngine.run(
                configFile: yml.path, output: dir.appendingPathComponent("out").path, options: MergeOptions())
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .checkpoint)
            #expect(error.message.contains("adapter_config.json") && error.message.contains("+"))
        }
        let after = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())
            .filter { $0.hasPrefix("tswitch-lora-\(getpid())") }
        #expect(after == before)
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("out").path))
    }
}
