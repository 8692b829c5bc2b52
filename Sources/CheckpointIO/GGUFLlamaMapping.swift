import Foundation

/// A llama-family GGUF file seen as a Hugging Face model: architecture `llama` (Llama, SmolLM, Mistral as
/// llama.cpp writes them) as `LlamaForCausalLM`, `qwen2` as `Qwen2ForCausalLM`; tensor names mapped to Hugging
/// Face's, `config.json` built from the metadata, and for llama the Q/K rows put back in Hugging Face's order.
///
/// llama.cpp's converter permutes the rows of a llama's `q_proj` and `k_proj` within each head (interleaving the
/// two rotary halves, for its rope kernel); `floats(_:)` undoes it, as `transformers`' GGUF loader does. Its
/// Qwen2 converter does not permute (Qwen2 uses the other rope layout), so those rows are read as stored.
public struct GGUFLlamaMapping: Sendable {
    /// The `general.architecture` values read, each with its Hugging Face class.
    public enum Architecture: String, Sendable, CaseIterable {
        case llama, qwen2

        var hfClass: String { self == .llama ? "LlamaForCausalLM" : "Qwen2ForCausalLM" }
        /// Qwen2's defaults are `Qwen2Config`'s, which is what `transformers` falls back to for a missing key.
        var defaultContext: Int { self == .llama ? 2048 : 32768 }
        var defaultEpsilon: Double { self == .llama ? 1e-5 : 1e-6 }
    }

    public struct Tensor: Sendable {
        public let hfName: String
        public let ggufName: String
        /// Row-major, as Hugging Face stores it.
        public let shape: [Int]
        /// Heads whose rows llama.cpp permuted (q: attention heads, k: key-value heads), nil for other tensors.
        public let permutedHeads: Int?
    }

    public let file: GGUFFile
    public let architecture: Architecture
    public let tensors: [Tensor]
    /// `config.json`, without `torch_dtype` (the writer's dtype sets it).
    public let config: [String: ConfigValue]

    /// A JSON value of `config.json` (Sendable, unlike `Any`).
    public enum ConfigValue: Sendable, Equatable {
        case int(Int), double(Double), bool(Bool), string(String), strings([String])
        case object([String: ConfigValue])
        var json: Any {
            switch self {
            case .object(let v): v.mapValues(\.json)
            case .int(let v): v
            case .double(let v): v
            case .bool(let v): v
            case .string(let v): v
            case .strings(let v): v
            }
        }
    }

    public init(file: GGUFFile) throws(CheckpointError) {
        self.file = file
        let h = file.header
        let path = file.path
        let archName = h.value("general.architecture")?.stringValue ?? "(none)"
        guard let arch = Architecture(rawValue: archName) else {
            throw CheckpointError(
                .notAModel,
                "\(path): metadata key 'general.architecture' is '\(archName)'; only 'llama' and 'qwen2' files are read as Hugging Face models."
            )
        }
        architecture = arch
        let a = arch.rawValue
        func int(_ key: String, default value: Int? = nil) throws(CheckpointError) -> Int {
            if let v = h.value(key) {
                guard let i = v.intValue, i > 0 else {
                    throw CheckpointError(
                        .invalidMetadata,
                        "\(path): metadata key '\(key)' is \(v.summary()); expected a positive integer.")
                }
                return i
            }
            guard let value else {
                throw CheckpointError(
                    .invalidMetadata, "\(path): metadata key '\(key)' is missing; a \(a) model needs it.")
            }
            return value
        }
        func double(_ key: String, default value: Double) throws(CheckpointError) -> Double {
            guard let v = h.value(key) else { return value }
            guard let d = v.doubleValue, d.isFinite, d > 0 else {
                throw CheckpointError(
                    .invalidMetadata, "\(path): metadata key '\(key)' is \(v.summary()); expected a positive number.")
            }
            return d
        }
        let layers = try int("\(a).block_count")
        let hidden = try int("\(a).embedding_length")
        let heads = try int("\(a).attention.head_count")
        let kvHeads = try int("\(a).attention.head_count_kv", default: heads)
        let headDim = try int("\(a).rope.dimension_count", default: hidden / heads)
        guard heads % kvHeads == 0, headDim % 2 == 0 else {
            throw CheckpointError(
                .invalidMetadata,
                "\(path): \(heads) attention heads, \(kvHeads) key-value heads and head size \(headDim) do not make a \(a) attention (heads a multiple of key-value heads, even head size)."
            )
        }
        // Qwen2Config has no head_dim (transformers ignores qwen2.rope.dimension_count): it is hidden / heads.
        if arch == .qwen2, headDim * heads != hidden {
            throw CheckpointError(
                .invalidMetadata,
                "\(path): metadata key 'qwen2.rope.dimension_count' is \(headDim) with \(heads) heads of a \(hidden)-wide model; Qwen2 needs head size \(hidden) / \(heads)."
            )
        }
        let tokens = h.value("tokenizer.ggml.tokens")?.arrayValue?.count
        let embedRows = file.info("token_embd.weight")?.shape.first
        let vocab = try int("\(a).vocab_size", default: tokens ?? embedRows ?? 0)
        let ropeTheta = try double("\(a).rope.freq_base", default: 10_000)
        var config: [String: ConfigValue] = [
            "architectures": .strings([arch.hfClass]), "model_type": .string(a),
            "hidden_size": .int(hidden), "intermediate_size": .int(try int("\(a).feed_forward_length")),
            "num_hidden_layers": .int(layers), "num_attention_heads": .int(heads), "num_key_value_heads": .int(kvHeads),
            "max_position_embeddings": .int(try int("\(a).context_length", default: arch.defaultContext)),
            "rms_norm_eps": .double(try double("\(a).attention.layer_norm_rms_epsilon", default: arch.defaultEpsilon)),
            "rope_theta": .double(ropeTheta),
            "vocab_size": .int(vocab), "hidden_act": .string("silu"),
            "tie_word_embeddings": .bool(file.info("output.weight") == nil),
        ]
        switch arch {
        case .llama:
            config["head_dim"] = .int(headDim)
            config["attention_bias"] = .bool(false)
            config["mlp_bias"] = .bool(false)
        case .qwen2:
            // As transformers' GGUF loader leaves them (Qwen2Config's defaults), said outright.
            config["use_sliding_window"] = .bool(false)
        }
        for (key, name) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let id = h.value(key)?.intValue { config[name] = .int(id) }
        }
        var scaling = try GGUFRopeScaling.fromMetadata(h, architecture: a, path: path)
        // Llama 3's scaling lives in a tensor; Hugging Face computes it from the config instead.
        let ropeFrequencies = "rope_freqs.weight"
        if arch == .llama, let info = file.info(ropeFrequencies) {
            guard scaling == nil else {
                throw CheckpointError(
                    .invalidMetadata,
                    "\(path): both metadata key '\(a).rope.scaling.type' and tensor '\(ropeFrequencies)' scale the rope; expected one."
                )
            }
            guard info.type.isDequantizable, info.shape.count == 1 else {
                throw CheckpointError(
                    .invalidShape,
                    "\(path): tensor '\(ropeFrequencies)' is \(info.type.name) of shape \(info.shapeDescription); expected a 1-D float tensor."
                )
            }
            let view = try file.tensor(ropeFrequencies)
            defer { view.release() }
            var divisors = [Float](repeating: 0, count: info.shape[0])
            try divisors.withUnsafeMutableBufferPointer { (b) throws(CheckpointError) in try view.copyFloats(into: b) }
            scaling = try GGUFRopeScaling.fromFrequencyDivisors(
                divisors, theta: ropeTheta, headDim: headDim, path: path)
        }
        if let scaling { config["rope_scaling"] = .object(scaling) }
        self.config = config

        // Qwen2ForCausalLM always has q/k/v biases; a file without one would load with it left at its init.
        if arch == .qwen2 {
            let names = Set(file.tensors.map(\.name))
            for layer in 0..<layers {
                for part in ["attn_q", "attn_k", "attn_v"] where !names.contains("blk.\(layer).\(part).bias") {
                    throw CheckpointError(
                        .invalidEntry,
                        "\(path): tensor 'blk.\(layer).\(part).bias' is missing; every Qwen2 layer has q, k and v biases."
                    )
                }
            }
        }
        var tensors: [Tensor] = []
        for t in file.tensors where !(arch == .llama && t.name == ropeFrequencies) {
            guard
                let (hf, permuted) = Self.hfName(
                    t.name, heads: heads, kvHeads: kvHeads, layers: layers, architecture: arch)
            else {
                throw CheckpointError(
                    .invalidEntry, "\(path): tensor '\(t.name)' has no Hugging Face name in the \(a) mapping.")
            }
            guard t.type.isDequantizable else {
                let known = GGMLType.allCases.filter(\.isDequantizable).map(\.name).joined(separator: ", ")
                throw CheckpointError(
                    .unsupportedDType,
                    "\(path): tensor '\(t.name)' is \(t.type.name), which is not dequantized; expected one of \(known)."
                )
            }
            if let permuted, t.shape.first.map({ $0 % (2 * permuted) != 0 }) ?? true {
                throw CheckpointError(
                    .invalidShape,
                    "\(path): tensor '\(t.name)' has shape \(t.shapeDescription); its rows must split into \(permuted) heads of two rotary halves."
                )
            }
            tensors.append(Tensor(hfName: hf, ggufName: t.name, shape: t.shape, permutedHeads: permuted))
        }
        self.tensors = tensors
    }

    /// llama.cpp's name for a tensor → Hugging Face's, and the heads to un-permute (nil: none; always for qwen2).
    static func hfName(
        _ name: String, heads: Int, kvHeads: Int, layers: Int, architecture: Architecture = .llama
    ) -> (String, Int?)? {
        let llama = architecture == .llama
        switch name {
        case "token_embd.weight": return ("model.embed_tokens.weight", nil)
        case "output_norm.weight": return ("model.norm.weight", nil)
        case "output.weight": return ("lm_head.weight", nil)
        default: break
        }
        let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), (0..<layers).contains(layer),
            String(layer) == parts[1]
        else { return nil }
        let p = "model.layers.\(layer)."
        switch parts[2] {
        case "attn_norm.weight": return (p + "input_layernorm.weight", nil)
        case "attn_q.weight": return (p + "self_attn.q_proj.weight", llama ? heads : nil)
        case "attn_k.weight": return (p + "self_attn.k_proj.weight", llama ? kvHeads : nil)
        case "attn_q.bias" where !llama: return (p + "self_attn.q_proj.bias", nil)
        case "attn_k.bias" where !llama: return (p + "self_attn.k_proj.bias", nil)
        case "attn_v.bias" where !llama: return (p + "self_attn.v_proj.bias", nil)
        case "attn_v.weight": return (p + "self_attn.v_proj.weight", nil)
        case "attn_output.weight": return (p + "self_attn.o_proj.weight", nil)
        case "ffn_norm.weight": return (p + "post_attention_layernorm.weight", nil)
        case "ffn_gate.weight": return (p + "mlp.gate_proj.weight", nil)
        case "ffn_up.weight": return (p + "mlp.up_proj.weight", nil)
        case "ffn_down.weight": return (p + "mlp.down_proj.weight", nil)
        default: return nil
        }
    }

    /// `config.json` with `torch_dtype`, as bytes.
    public func configJSON(torchDType: String) throws(CheckpointError) -> Data {
        var object = config.mapValues(\.json)
        object["torch_dtype"] = torchDType
        do {
            return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
                + Data("\n".utf8)
        } catch {
            throw CheckpointError(.io, "\(file.path): cannot encode config.json: \(error.localizedDescription).")
        }
    }

    /// The tensor dequantized to f32 in Hugging Face's layout.
    public func floats(_ t: Tensor) throws(CheckpointError) -> [Float] {
        var out = [Float](repeating: 0, count: t.shape.reduce(1, *))
        try out.withUnsafeMutableBufferPointer { (b) throws(CheckpointError) in try copyFloats(t, into: b) }
        return out
    }

    /// Dequantizes the tensor into `destination` (its element count) in Hugging Face's layout; a permuted Q/K
    /// tensor goes through one scratch copy of itself.
    public func copyFloats(_ t: Tensor, into destination: UnsafeMutableBufferPointer<Float>) throws(CheckpointError) {
        let view = try file.tensor(t.ggufName)
        defer { view.release() }
        guard let heads = t.permutedHeads else { return try view.copyFloats(into: destination) }
        let stored = UnsafeMutableBufferPointer<Float>.allocate(capacity: destination.count)
        defer { stored.deallocate() }
        try view.copyFloats(into: stored)
        // GGUF row h·2d + 2i + j holds Hugging Face row h·2d + j·d + i (d = rows per head / 2).
        let rows = t.shape[0]
        let cols = destination.count / max(1, rows)
        let d = rows / heads / 2
        for h in 0..<heads {
            for i in 0..<d {
                for j in 0..<2 {
                    let from = (h * 2 * d + 2 * i + j) * cols
                    let to = (h * 2 * d + j * d + i) * cols
                    _ = UnsafeMutableBufferPointer(rebasing: destination[to..<(to + cols)])
                        .update(fromContentsOf: UnsafeBufferPointer(rebasing: stored[from..<(from + cols)]))
                }
            }
        }
    }
}
