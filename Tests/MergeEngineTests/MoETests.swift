import CheckpointIO
import Foundation
import Testing

@testable import Evaluation
@testable import MergeEngine

/// `tswitch moe`'s library side against mergekit-moe 0.1.5's outputs in Fixtures/moe (scripts/fixtures/moe_fixtures.py):
/// config validation, torch's generator, cheap_embed routers and the tensors copied into the mixture.
@Suite("MoE upcycling: mergekit-moe configs, routers and layout")
struct MoETests {
    static let moe = Fixtures.directory.appendingPathComponent("moe")
    static func model(_ name: String) -> String { moe.appendingPathComponent("models/\(name)").path }
    static func expected(_ file: String) -> String { moe.appendingPathComponent("expected/\(file)").path }

    /// A config with two experts of the fixture models and `extra` lines appended at the top level.
    static func yaml(gate: String = "random", extra: String = "", expertExtra: String = "") -> String {
        """
        base_model: \(model("base"))
        gate_mode: \(gate)
        experts:
          - source_model: \(model("code"))
            positive_prompts: ["def add"]\(expertExtra)
          - source_model: \(model("math"))
            positive_prompts: ["the integral"]
        \(extra)
        """
    }

    static func parseError(_ yaml: String, allowAllSame: Bool = false) -> MergeError? {
        mergeError { _ = try MoEConfigParser.parse(yaml, file: "moe.yml", allowAllSame: allowAllSame) }
    }

    @Test("a valid config parses with mergekit's defaults")
    func parsesDefaults() throws {
        let c = try MoEConfigParser.parse(Self.yaml(gate: "cheap_embed"), file: "moe.yml")
        #expect(c.baseModel == Self.model("base"))
        #expect(c.experts.map(\.sourceModel) == [Self.model("code"), Self.model("math")])
        #expect(c.experts[0].positivePrompts == ["def add"] && c.experts[0].negativePrompts.isEmpty)
        #expect(c.gateMode == .cheapEmbed && c.expertsPerToken == 2 && c.dtype == nil && c.sharedExperts.isEmpty)
        let d = try MoEConfigParser.parse(
            "base_model: b\nexperts:\n  - source_model: x\n  - source_model: y\ngate_mode: random\n", file: "f")
        #expect(d.gateMode == .random)
        // mergekit: hidden_avg averages over tokens, anything else of the hidden family takes the last token.
        for (mode, want) in [("hidden", MoEGateMode.hidden), ("hidden_last", .hidden), ("hidden_avg", .hiddenAverage)] {
            let h = try MoEConfigParser.parse(
                "base_model: b\ngate_mode: \(mode)\nexperts:\n  - source_model: x\n    positive_prompts: [p]\n  - source_model: y\n    positive_prompts: [q]\n",
                file: "f")
            #expect(h.gateMode == want, "\(mode)")
        }
    }

    @Test(
        "config errors name the file, the line and what was expected",
        arguments: [
            (yaml(extra: "gate_mod: random"), "unknownKey", "moe.yml:8: unknown key 'gate_mod'"),
            (
                yaml(expertExtra: "\n    positive_prompt: [x]"), "unknownKey",
                "moe.yml:6: unknown key 'positive_prompt' in an expert"
            ),
            ("gate_mode: random\nexperts:\n  - source_model: a\n", "missingParameter", "no 'base_model'"),
            ("base_model: a\ngate_mode: random\n", "missingParameter", "no 'experts'"),
            ("base_model: a\ngate_mode: random\nexperts: []\n", "invalidConfig", "'experts' is empty"),
            (
                yaml(gate: "hiden"), "invalidConfig",
                "moe.yml:2: 'gate_mode' is 'hiden'; expected one of hidden, hidden_avg, cheap_embed, random, uniform_random"
            ),
            (yaml(extra: "experts_per_token: 3"), "invalidConfig", "fewer than experts_per_token (3)"),
            (yaml(extra: "experts_per_token: 0"), "invalidConfig", "must be at least 1"),
            (yaml(extra: "experts_per_token: two"), "invalidConfig", "'experts_per_token' must be an integer"),
            (yaml(extra: "dtype: int8"), "invalidConfig", "'dtype' is 'int8'"),
            (yaml(expertExtra: "\n    noise_scale: 0.1"), "unsupported", "'noise_scale'"),
            (
                yaml(expertExtra: "\n    residual_scale: big"), "invalidConfig",
                "'residual_scale' must be a finite number"
            ),
            (
                yaml(expertExtra: "\n    negative_prompts: oops"), "invalidConfig",
                "'negative_prompts' must be a list of strings"
            ),
            (
                "base_model: a\ngate_mode: cheap_embed\nexperts:\n  - source_model: x\n  - source_model: y\n    positive_prompts: [p]\n",
                "missingParameter", "moe.yml:4: expert 0 ('x') has no positive_prompts"
            ),
            (
                "base_model: a\ngate_mode: cheap_embed\nexperts:\n  - source_model: x\n    positive_prompts: [p]\n  - source_model: y\n    positive_prompts: [p]\n",
                "invalidConfig", "the same positive and negative prompts"
            ),
            (
                "base_model: a\ngate_mode: cheap_embed\nexperts:\n  - source_model: x\n    positive_prompts: [p]\n  - source_model: x\n    positive_prompts: [q]\n",
                "invalidConfig", "every expert is the model 'x'"
            ),
            (
                yaml(extra: "shared_experts:\n  - source_model: a\n    positive_prompts: [p]\n  - source_model: b"),
                "invalidConfig",
                "either every shared expert has positive_prompts or none"
            ),
            ("base_model: a\n---\nbase_model: b\n", "invalidConfig", "one YAML document; this file holds 2"),
            ("base_model: [a\n", "invalidConfig", "not valid YAML"),
        ])
    func configErrors(yaml: String, code: String, message: String) {
        let e = Self.parseError(yaml)
        #expect(e?.code.rawValue == code, "\(e.map { String(describing: $0) } ?? "no error")")
        #expect(e?.message.contains(message) == true, "\(e?.message ?? "no error")")
        #expect(e?.message.hasPrefix("moe.yml") == true)
    }

    @Test("all-same experts are accepted with mergekit's --i-understand flag, and random mode skips prompt checks")
    func allSameAllowed() throws {
        let same =
            "base_model: a\ngate_mode: cheap_embed\nexperts:\n  - source_model: x\n    positive_prompts: [p]\n  - source_model: x\n    positive_prompts: [q]\n"
        #expect(try MoEConfigParser.parse(same, file: "f", allowAllSame: true).experts.count == 2)
        #expect(
            try MoEConfigParser.parse(
                "base_model: a\ngate_mode: random\nexperts:\n  - source_model: x\n  - source_model: x\n", file: "f"
            ).experts.count == 2)
    }

    // MARK: torch's generator

    static func reference(_ name: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(path: expected("\(name).safetensors"))
    }

    @Test("uniform_random rows equal mergekit-moe --random-seed 7 bit for bit (torch.rand is exact)")
    func uniformRandomExact() throws {
        let rows = MoERouter.uniformRandom(layers: 2, gates: 2, hidden: 64, seed: 7)
        let ref = try Self.reference("mixtral_uniform_seed")
        for l in 0..<2 {
            let r = try ref.tensor("model.layers.\(l).mlp.gate.weight").floats()
            #expect(Array(rows[(l * 128)..<((l + 1) * 128)]) == r)
        }
    }

    @Test("random rows equal mergekit-moe --random-seed 1234 within float32 rounding, shared expert's row included")
    func randomWithinRounding() throws {
        // Qwen MoE: (layers 2, gates 2 experts + 1 shared, hidden 64); float32 output.
        let rows = MoERouter.random(layers: 2, gates: 3, hidden: 64, seed: 1234)
        let ref = try Self.reference("qwen_random")
        var maxDiff: Float = 0
        for l in 0..<2 {
            let gate = try ref.tensor("model.layers.\(l).mlp.gate.weight").floats()
            let shared = try ref.tensor("model.layers.\(l).mlp.shared_expert_gate.weight").floats()
            // torch.allclose(rtol: 1e-6, atol: 1e-6): 1-2 ulps of the largest normals.
            for (i, v) in (gate + shared).enumerated() {
                maxDiff = max(maxDiff, abs(rows[l * 192 + i] - v) / (1 + abs(v)))
            }
        }
        #expect(maxDiff <= 1e-6)
        // Not vacuous: another seed is far off.
        let other = MoERouter.random(layers: 2, gates: 3, hidden: 64, seed: 1235)
        #expect(zip(other, rows).map { abs($0 - $1) }.max() ?? 0 > 0.5)
    }

    @Test("the Mersenne Twister matches its published 10000th output for the reference seed 5489")
    func mersenneTwister() {
        var g = TorchGenerator(seed: 5489)
        var last: UInt32 = 0
        for _ in 0..<10_000 { last = g.next() }
        #expect(last == 4_123_659_995)
    }

    // MARK: building

    static func build(_ name: String, seed: UInt64 = 0) throws -> String {
        let out = Fixtures.scratch("moe-\(name)")
        var options = MoEOptions()
        options.seed = seed
        options.loadTokenizer = { folder in
            let t = try ByteLevelBPETokenizer(folder: folder)
            return PromptTokenizer { t.tokenIDs($0) }
        }
        try MoEBuilder.run(configFile: moe.appendingPathComponent("\(name).yml").path, output: out, options: options)
        return out
    }

    @Test("the byte-level BPE tokenizer (Llama 3 pre-tokenizer) gives transformers' ids for every prompt and sample")
    func promptIDs() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.expected("prompts.json")))
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let bos = try #require(obj["bos_token"] as? String)
        #expect(MoERouter.bosToken(folder: URL(fileURLWithPath: Self.model("base"))) == bos)
        let ids = try #require(obj["ids"] as? [String: [Int]])
        let t = try ByteLevelBPETokenizer(folder: URL(fileURLWithPath: Self.model("base")))
        #expect(ids.count >= 8)
        for (prompt, expected) in ids { #expect(t.tokenIDs(bos + prompt).map(Int.init) == expected, "\(prompt)") }
        // Llama 3's Split pre-tokenizer on digits, contractions, newlines, tabs, accents, CJK, emoji, added tokens.
        let samples = try #require(obj["samples"] as? [String: [Int]])
        #expect(samples.count == 6)
        for (text, expected) in samples { #expect(t.tokenIDs(text).map(Int.init) == expected, "\(text)") }
        #expect(!t.splits.isEmpty)
    }

    @Test(
        "cheap_embed Mixtral: routers within float32 rounding of mergekit's, experts copied exactly, residual_scale applied"
    )
    func cheapEmbedMixtral() throws {
        let out = try Self.build("mixtral_cheap_embed")
        defer { try? FileManager.default.removeAtPath(out) }
        let m = try ModelFolder(path: out)
        let ref = try Self.reference("mixtral_cheap_embed")
        for l in 0..<2 {
            let ours = try m.tensor("model.layers.\(l).block_sparse_moe.gate.weight").floats()
            let theirs = try ref.tensor("model.layers.\(l).mlp.gate.weight").floats()
            #expect(ours.count == 3 * 64)
            #expect(zip(ours, theirs).allSatisfy { abs($0 - $1) <= 1e-6 })
        }
        // Expert 1 is `code` (BF16): w1 its gate_proj widened exactly, w2 its down_proj × 0.5 rounded to BF16 first.
        let code = try ModelFolder(path: Self.model("code"))
        let gate = try code.tensor("model.layers.1.mlp.gate_proj.weight").floats()
        let w1 = try m.tensor("model.layers.1.block_sparse_moe.experts.1.w1.weight")
        #expect(w1.dtype == .F32 && w1.shape == [96, 64])
        #expect(try w1.floats() == gate)
        let down = try code.tensor("model.layers.1.mlp.down_proj.weight").floats()
        let w2 = try m.tensor("model.layers.1.block_sparse_moe.experts.1.w2.weight").floats()
        #expect(w2 == MoEBuilder.roundTrip(down.map { $0 * 0.5 }, through: .BF16))
        #expect(w2 != down)
        // Non-MLP tensors come from the base, byte for byte; no dense MLP tensor is left.
        let base = try ModelFolder(path: Self.model("base"))
        for name in [
            "model.embed_tokens.weight", "lm_head.weight", "model.layers.0.self_attn.k_proj.weight",
            "model.norm.weight",
        ] {
            #expect(Array(try m.tensor(name).bytes) == Array(try base.tensor(name).bytes), "\(name)")
        }
        #expect(!m.tensorNames.contains { $0.contains(".mlp.") })
        let config = try #require(try m.config())
        #expect(config["model_type"] as? String == "mixtral" && config["num_local_experts"] as? Int == 3)
        #expect(
            config["architectures"] as? [String] == ["MixtralForCausalLM"] && config["num_experts_per_tok"] as? Int == 2
        )
        #expect(FileManager.default.fileExists(atPath: out + "/tokenizer.json"))
    }

    @Test(
        "hidden / hidden_avg Mixtral: unit router rows within bfloat16 rounding of mergekit's (which runs the base in bf16)"
    )
    func hiddenMixtral() throws {
        var rows: [String: [Float]] = [:]
        for name in ["mixtral_hidden", "mixtral_hidden_avg"] {
            let out = try Self.build(name)
            defer { try? FileManager.default.removeAtPath(out) }
            let m = try ModelFolder(path: out)
            let ref = try Self.reference(name)
            let experts = name == "mixtral_hidden" ? 3 : 2
            for l in 0..<2 {
                let ours = try m.tensor("model.layers.\(l).block_sparse_moe.gate.weight").floats()
                let theirs = try ref.tensor("model.layers.\(l).mlp.gate.weight").floats()
                #expect(ours.count == experts * 64)
                // Measured: at most 2.3e-3 apart (bf16 keeps 8 bits); each row at unit length.
                #expect(zip(ours, theirs).allSatisfy { abs($0 - $1) <= 4e-3 }, "\(name) layer \(l)")
                for e in 0..<experts {
                    let norm = ours[(e * 64)..<((e + 1) * 64)].reduce(0) { $0 + $1 * $1 }.squareRoot()
                    #expect(abs(norm - 1) <= 1e-5)
                }
                rows["\(name)-\(l)"] = ours
            }
        }
        // The layers' inputs differ: layer 1 sees layer 0's output.
        #expect(rows["mixtral_hidden-0"] != rows["mixtral_hidden-1"])
    }

    @Test("a file tensor list matches mergekit's for Qwen2-MoE (same names, dtypes and shapes)")
    func qwenLayout() throws {
        let out = try Self.build("qwen_cheap_embed")
        defer { try? FileManager.default.removeAtPath(out) }
        let m = try ModelFolder(path: out)
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.expected("qwen_cheap_embed.json")))
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let files = try #require(obj["file_tensors"] as? [String: [Any]])
        #expect(Set(m.tensorNames) == Set(files.keys))
        for (name, spec) in files {
            let info = try #require(m.info(name))
            #expect(info.shape == spec[1] as? [Int], "\(name)")
            #expect(info.dtype.torchName == spec[0] as? String, "\(name)")
        }
        let bias = try m.tensor("model.layers.0.self_attn.k_proj.bias").floats()
        #expect(bias.count == 32 && bias.allSatisfy { $0 == 0 })
    }

    // MARK: input validation

    static func buildError(_ yaml: String, tag: String) -> (MergeError?, String) {
        let file = Fixtures.scratch("moe-config-\(tag)") + ".yml"
        let out = Fixtures.scratch("moe-out-\(tag)")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let e = mergeError {
            try Data(yaml.utf8).write(to: URL(fileURLWithPath: file))
            try MoEBuilder.run(configFile: file, output: out)
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        return (e, file)
    }

    @Test("a configuration built in code is validated as a parsed one is")
    func programmaticConfig() {
        let out = Fixtures.scratch("moe-code")
        let config = MoEConfig(
            baseModel: Self.model("base"), experts: [MoEExpert(sourceModel: Self.model("code"))], gateMode: .random,
            expertsPerToken: 2, file: "in-code")
        let e = mergeError { try MoEBuilder.build(config, configDirectory: nil, output: out) }
        #expect(e?.code == .invalidConfig)
        #expect(e?.message.contains("fewer than experts_per_token (2)") == true)
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test(
        "inputs are checked before the output exists",
        arguments: [
            (
                "missing-model",
                "base_model: \(model("base"))\ngate_mode: random\nexperts:\n  - source_model: \(model("code"))\n  - source_model: /nonexistent/model\n",
                "modelNotFound", "'/nonexistent/model'"
            ),
            (
                "hidden-size",
                "base_model: \(model("base"))\ngate_mode: random\nexperts:\n  - source_model: \(model("code"))\n  - source_model: \(Fixtures.directory.path)/tokenizer/models/base\n",
                "shapeMismatch", "hidden_size 16"
            ),
            (
                "deepseek",
                "base_model: \(model("base"))\ngate_mode: random\nexperts:\n  - source_model: \(model("code"))\n  - source_model: \(model("math"))\nshared_experts:\n  - source_model: \(model("base"))\n",
                "unsupported", "DeepSeek MoE, which TaskSwitch does not write"
            ),
            (
                "mixtral-shared",
                "base_model: \(model("base"))\narchitecture: mixtral\ngate_mode: random\nexperts:\n  - source_model: \(model("code"))\n  - source_model: \(model("math"))\nshared_experts:\n  - source_model: \(model("base"))\n",
                "invalidInputs", "Mixtral has no shared experts"
            ),
            (
                "bad-arch",
                "base_model: \(model("base"))\narchitecture: gpt\ngate_mode: random\nexperts:\n  - source_model: \(model("code"))\n  - source_model: \(model("math"))\n",
                "invalidConfig", "no output architecture matches architecture 'gpt'"
            ),
            ("no-tokenizer", yaml(gate: "cheap_embed"), "invalidInputs", "needs the base model's tokenizer"),
        ])
    func inputErrors(tag: String, yaml: String, code: String, message: String) {
        let (e, file) = Self.buildError(yaml, tag: tag)
        #expect(e?.code.rawValue == code, "\(e.map { String(describing: $0) } ?? "no error")")
        #expect(e?.message.contains(message) == true, "\(e?.message ?? "no error")")
        #expect(e?.message.contains(file) == true || e?.message.contains("/models/") == true)
    }
}

extension FileManager {
    fileprivate func removeAtPath(_ path: String) throws { try removeItem(atPath: path) }
}
