import CheckpointIO
import Foundation
import MergeEngine
import TestSupport
import Testing

@testable import TaskSwitches

/// GGUF files as `merge` and `pack` inputs, against their Hugging Face twins: the fixtures
/// (scripts/fixtures/make_gguf_fixtures.py) pair each llama GGUF with the safetensors file of its tensors as
/// `gguf` dequantizes them and numpy un-permutes Q/K, so a GGUF input must merge and pack exactly as its twin.
@Suite("GGUF inputs to merge and pack")
final class GGUFInputTests {
    /// The merges' folders of one test, removed when it ends (Swift Testing makes an instance per test).
    let scratch: URL

    init() throws { scratch = try temporaryFolder("GGUFInputTests") }

    deinit { try? FileManager.default.removeItem(at: scratch) }

    /// The GGUF fixtures live with CheckpointIO's tests (one script, one folder).
    static let gguf = TestPaths.repository.appendingPathComponent("Tests/CheckpointIOTests/Fixtures/gguf")

    static func path(_ name: String) -> String { gguf.appendingPathComponent(name).path }

    static let base = path("tiny_llama.gguf")
    static let baseTwin = path("tiny_llama.reference.safetensors")
    static let tuned = path("tiny_llama_tuned.gguf")
    static let tunedTwin = path("tiny_llama_tuned.reference.safetensors")

    /// Every tensor of a model: shape and f32 bit patterns.
    static func bits(_ path: String) throws -> [String: ([Int], [UInt32])] {
        let model = try ModelFolder(path: path)
        var out: [String: ([Int], [UInt32])] = [:]
        for name in model.tensorNames {
            let view = try model.tensor(name)
            out[name] = (view.shape, try view.floats().map(\.bitPattern))
        }
        return out
    }

    func merge(_ yaml: String, streaming: Bool = true) throws -> URL {
        let dir = scratch.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = dir.appendingPathComponent("merge.yml")
        try Data(yaml.utf8).write(to: config)
        var options = MergeOptions()
        options.streaming = streaming
        let out = dir.appendingPathComponent("out")
        try MergeEngine.run(configFile: config.path, output: out.path, options: options)
        return out
    }

    static func expectSameTensors(_ a: URL, _ b: URL) throws {
        let x = try bits(a.path)
        let y = try bits(b.path)
        #expect(x.keys.sorted() == y.keys.sorted())
        for (name, (shape, values)) in x {
            #expect(shape == y[name]?.0, "\(name)")
            #expect(values == y[name]?.1, "\(name)")
        }
    }

    @Test("A GGUF model lists its Hugging Face twin's tensors, dequantized to F32 bit for bit")
    func seenAsTwin() throws {
        let model = try ModelFolder(path: Self.tuned)
        let twin = try ModelFolder(path: Self.tunedTwin)
        #expect(model.tensorNames.sorted() == twin.tensorNames.sorted())
        #expect(model.tensorInfos.allSatisfy { $0.dtype == .F32 })
        let got = try Self.bits(Self.tuned)
        for name in twin.tensorNames {
            let want = try twin.tensor(name)
            #expect(got[name]?.0 == want.shape, "\(name)")
            #expect(got[name]?.1 == (try want.floats().map(\.bitPattern)), "\(name)")
        }
        #expect(model.ggufName("model.layers.1.self_attn.k_proj.weight") == "blk.1.attn_k.weight")
        let config = try #require(try model.config())
        #expect(config["num_hidden_layers"] as? Int == 2 && config["num_key_value_heads"] as? Int == 2)
        #expect(model.supportFiles.isEmpty && model.generatedFiles["config.json"] != nil)
    }

    @Test(
        "Merging GGUF inputs equals merging their safetensors twins bit for bit",
        arguments: [
            ("task_arithmetic", "    parameters: {weight: 0.7}\n", true),
            ("ties", "    parameters: {weight: 0.9, density: 0.5}\n", true),
            ("linear", "    parameters: {weight: 0.3}\n", false),
        ])
    func mergeEqualsTwin(method: String, parameters: String, streaming: Bool) throws {
        func yaml(_ base: String, _ model: String) -> String {
            var s = "merge_method: \(method)\nbase_model: \(base)\nmodels:\n  - model: \(model)\n\(parameters)"
            if method == "linear" { s += "  - model: \(base)\n    parameters: {weight: 0.7}\n" }
            return s
        }
        let twins = try merge(yaml(Self.baseTwin, Self.tunedTwin), streaming: streaming)
        // Both inputs GGUF, then one of each kind.
        for (b, m) in [(Self.base, Self.tuned), (Self.baseTwin, Self.tuned), (Self.base, Self.tunedTwin)] {
            let out = try merge(yaml(b, m), streaming: streaming)
            try Self.expectSameTensors(out, twins)
        }
        // The merge really moved the weights: the result is neither input.
        let merged = try Self.bits(twins.path)
        let base = try Self.bits(Self.baseTwin)
        #expect(merged["model.layers.0.mlp.up_proj.weight"]?.1 != base["model.layers.0.mlp.up_proj.weight"]?.1)
    }

    @Test("A Qwen2 GGUF is read as its Hugging Face twin, biases included, and merges as the twin does")
    func qwen2() throws {
        let qwen = Self.path("tiny_qwen2.gguf")
        let twin = Self.path("tiny_qwen2.reference.safetensors")
        let got = try Self.bits(qwen)
        let want = try Self.bits(twin)
        #expect(got.keys.sorted() == want.keys.sorted() && got["model.layers.0.self_attn.v_proj.bias"] != nil)
        for (name, (shape, values)) in want {
            #expect(got[name]?.0 == shape && got[name]?.1 == values, "\(name)")
        }
        // A second copy of the twin: one merge may not name a file twice.
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let copy = dir.appendingPathComponent("copy.safetensors").path
        try FileManager.default.copyItem(atPath: twin, toPath: copy)
        func linear(_ first: String) -> String {
            "merge_method: linear\nmodels:\n  - model: \(first)\n    parameters: {weight: 0.3}\n  - model: \(copy)\n    parameters: {weight: 0.7}\n"
        }
        try Self.expectSameTensors(try merge(linear(qwen)), try merge(linear(twin)))
        // config.json and the tokenizer files of a merge over the GGUF base are the ones convert writes.
        let out = try merge(
            "merge_method: task_arithmetic\nbase_model: \(qwen)\nmodels:\n  - model: \(copy)\n    parameters: {weight: 0.5}\n"
        )
        let mapping = try GGUFLlamaMapping(file: GGUFFile(path: qwen))
        let config = try Data(contentsOf: out.appendingPathComponent("config.json"))
        #expect(config == (try mapping.configJSON(torchDType: "float32")))
        let tokenizer = try GGUFTokenizerFiles.build(mapping.file.header, file: qwen).files
        #expect(try Data(contentsOf: out.appendingPathComponent("tokenizer.json")) == tokenizer["tokenizer.json"])
    }

    @Test("With a GGUF base, config.json comes from the GGUF metadata, as convert writes it")
    func configFromMetadata() throws {
        let yaml =
            "merge_method: task_arithmetic\nbase_model: \(Self.base)\ndtype: bfloat16\nmodels:\n  - model: \(Self.tunedTwin)\n    parameters: {weight: 1}\n"
        let out = try merge(yaml)
        let data = try Data(contentsOf: out.appendingPathComponent("config.json"))
        let got = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        // The bytes `convert --dtype bf16` writes for this file.
        let mapping = try GGUFLlamaMapping(file: GGUFFile(path: Self.base))
        #expect(data == (try mapping.configJSON(torchDType: "bfloat16")))
        #expect(got["torch_dtype"] as? String == "bfloat16" && got["model_type"] as? String == "llama")
        #expect(got["num_hidden_layers"] as? Int == 2 && got["tie_word_embeddings"] as? Bool == false)
        #expect(try ModelFolder(path: out.path).tensorInfos.allSatisfy { $0.dtype == .BF16 })
    }

    @Test("Packing a GGUF fine-tune, or over a GGUF base, gives the twins' pack byte for byte")
    func packEqualsTwin() throws {
        // A pack lists tensors in its base's order; `convert` writes them in the GGUF file's, so the twins do too.
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        func inFileOrder(_ twin: String, _ name: String) throws -> ModelFolder {
            let source = try ModelFolder(path: twin)
            let order = try ModelFolder(path: Self.base).tensorNames
            #expect(Set(order) == Set(source.tensorNames))
            let tensors = try order.map { n in (n, try #require(source.info(n)).shape, try source.tensor(n).floats()) }
            try writeModel(dir.appendingPathComponent(name), tensors)
            return try ModelFolder(path: dir.appendingPathComponent(name).path)
        }
        let twinBase = try inFileOrder(Self.baseTwin, "base")
        let twinTuned = try inFileOrder(Self.tunedTwin, "tuned")
        for random in [nil, RandomMaskSettings(seed: 3, code: .f32)] {
            let want = PackFile.encode(
                try SwitchPack.build(
                    base: twinBase, fineTuned: twinTuned, dropRatio: 0.7, task: "t", randomMask: random))
            let ggufTuned = try SwitchPack.build(
                base: twinBase, fineTuned: ModelFolder(path: Self.tuned), dropRatio: 0.7, task: "t", randomMask: random)
            #expect(PackFile.encode(ggufTuned) == want, "GGUF fine-tune")
            // Over a GGUF base the fingerprint is its twin's, so the pack applies to either.
            let ggufBoth = try SwitchPack.build(
                base: ModelFolder(path: Self.base), fineTuned: ModelFolder(path: Self.tuned), dropRatio: 0.7, task: "t",
                randomMask: random)
            #expect(PackFile.encode(ggufBoth) == want, "GGUF base and fine-tune")
            #expect(!ggufBoth.tensors.isEmpty)
        }
        #expect(try BaseFingerprint(model: ModelFolder(path: Self.base)) == BaseFingerprint(model: twinBase))
        #expect(try BaseFingerprint(model: ModelFolder(path: Self.base)) != BaseFingerprint(model: twinTuned))
    }

    @Test("A GGUF of another architecture is a typed error naming the file and the key")
    func otherArchitecture() throws {
        let other = Self.path("tiny_phi3.gguf")
        let e = mergeFailure(
            "merge_method: linear\nmodels:\n  - model: \(other)\n    parameters: {weight: 1}\n  - model: \(Self.baseTwin)\n    parameters: {weight: 1}\n"
        )
        #expect(e?.code == .checkpoint)
        let cause = e?.underlying(CheckpointError.self)
        #expect(cause?.code == .notAModel)
        #expect(
            e?.message.contains(other) == true && e?.message.contains("'phi3'") == true, "\(e?.message ?? "accepted")")
        // pack opens its models the same way: the same error before anything is read.
        do {
            _ = try ModelFolder(path: other)
            Issue.record("accepted")
        } catch {
            #expect(error.code == .notAModel && error.message.contains(other))
        }
    }

    @Test("A tensor type that is not dequantized is a typed error naming the file and the tensor")
    func notDequantized() throws {
        let iq4 = Self.path("tiny_llama_iq4.gguf")
        let e = mergeFailure(
            "merge_method: task_arithmetic\nbase_model: \(Self.baseTwin)\nmodels:\n  - model: \(iq4)\n    parameters: {weight: 1}\n"
        )
        #expect(e?.underlying(CheckpointError.self)?.code == .unsupportedDType)
        #expect(
            e?.message.contains(iq4) == true && e?.message.contains("'blk.1.ffn_up.weight'") == true
                && e?.message.contains("IQ4_NL") == true,
            "\(e?.message ?? "accepted")")
    }

    @Test("A shape mismatch against the other inputs names the files and the tensor, in both spellings")
    func shapeMismatch() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        // The twin with one tensor cut to fewer rows.
        let twin = try ModelFolder(path: Self.baseTwin)
        var tensors: [(String, [Int], [Float])] = []
        for name in twin.tensorNames {
            var shape = try #require(twin.info(name)).shape
            var values = try twin.tensor(name).floats()
            if name == "model.layers.0.mlp.up_proj.weight" {
                shape[0] -= 1
                values = Array(values.prefix(shape.reduce(1, *)))
            }
            tensors.append((name, shape, values))
        }
        let other = dir.appendingPathComponent("other")
        try writeModel(other, tensors)
        let e = mergeFailure(
            "merge_method: task_arithmetic\nbase_model: \(other.path)\nmodels:\n  - model: \(Self.tuned)\n    parameters: {weight: 1}\n"
        )
        #expect(e?.code == .shapeMismatch)
        for part in [
            "'model.layers.0.mlp.up_proj.weight'", "GGUF tensor 'blk.0.ffn_up.weight'", Self.tuned, "63x32", "64x32",
        ] {
            #expect(e?.message.contains(part) == true, "\(part): \(e?.message ?? "accepted")")
        }
        let p = Self.packFailure(base: other.path, fineTuned: Self.tuned)
        #expect(
            p?.code == .shapeMismatch && p?.message.contains(Self.tuned) == true
                && p?.message.contains("'model.layers.0.mlp.up_proj.weight'") == true, "\(p?.message ?? "accepted")")
    }

    func mergeFailure(_ yaml: String) -> MergeError? {
        do {
            _ = try merge(yaml)
            return nil
        } catch let e as MergeError {
            return e
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    static func packFailure(base: String, fineTuned: String) -> SwitchError? {
        do {
            _ = try SwitchPack.build(
                base: ModelFolder(path: base), fineTuned: ModelFolder(path: fineTuned), dropRatio: 0.7, task: "t")
            return nil
        } catch let e as SwitchError {
            return e
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }
}
