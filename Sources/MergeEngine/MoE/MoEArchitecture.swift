import CheckpointIO
import Foundation

/// The sparse architectures `tswitch moe` writes, chosen as mergekit-moe chooses (`select_output_arch`).
public enum MoEArchitecture: String, Sendable, CaseIterable {
    /// `MixtralForCausalLM`: per layer a router `block_sparse_moe.gate` and experts `w1` (gate_proj), `w2`
    /// (down_proj), `w3` (up_proj); no shared experts.
    case mixtral = "Mixtral"
    /// `Qwen2MoeForCausalLM`: per layer `mlp.gate`, `mlp.experts.E.{gate,up,down}_proj`, one `mlp.shared_expert`
    /// and its scalar gate `mlp.shared_expert_gate`; q/k/v biases (zeros when the base has none).
    case qwen2MoE = "Qwen MoE"

    /// mergekit-moe's output architectures in its order; the two it has that are not written here are named so
    /// that a configuration mergekit would send to them fails rather than silently becoming another model.
    static let mergekitOrder = ["Mixtral", "DeepSeek MoE", "Qwen MoE", "Qwen3 MoE"]

    /// `model_type`s of the dense inputs each output accepts.
    var inputModelTypes: Set<String> {
        switch self {
        case .mixtral: ["llama", "mistral"]
        case .qwen2MoE: ["llama", "mistral", "qwen2"]
        }
    }

    /// The architecture mergekit-moe would write for `config` with inputs of `modelTypes` (all of them, base first),
    /// or an error saying why none fits.
    static func select(for config: MoEConfig, modelTypes: [String]) throws(MergeError) -> MoEArchitecture {
        let file = config.file
        let candidatesIn = mergekitOrder.filter { name in
            guard let a = config.architecture else { return true }
            return name.lowercased().hasPrefix(a.lowercased())
        }
        guard !candidatesIn.isEmpty else {
            throw MergeError(
                .invalidConfig,
                "\(file): no output architecture matches architecture '\(config.architecture ?? "")'; expected a prefix of one of \(mergekitOrder.joined(separator: ", "))."
            )
        }
        let sameType = Set(modelTypes).count == 1
        let type = modelTypes.first ?? ""
        let shared = config.sharedExperts
        let sharedHasPrompts = shared.contains { !$0.positivePrompts.isEmpty || !$0.negativePrompts.isEmpty }
        var reasons: [String] = []
        func supports(_ name: String) -> Bool {
            switch name {
            case "Mixtral":
                if !shared.isEmpty { reasons.append("Mixtral has no shared experts"); return false }
                if !sameType || !["llama", "mistral"].contains(type) {
                    reasons.append(
                        "Mixtral needs every input to be one of llama, mistral (got \(Set(modelTypes).sorted().joined(separator: ", ")))"
                    )
                    return false
                }
                return true
            case "DeepSeek MoE":
                return shared.count <= 1 && !sharedHasPrompts && sameType && ["llama", "mistral"].contains(type)
            case "Qwen MoE":
                if shared.count != 1 { reasons.append("Qwen MoE needs exactly one shared expert"); return false }
                if config.gateMode != .random, shared[0].positivePrompts.isEmpty {
                    reasons.append("Qwen MoE needs positive_prompts on the shared expert unless gate_mode is random")
                    return false
                }
                if !sameType || !["llama", "mistral", "qwen2"].contains(type) {
                    reasons.append(
                        "Qwen MoE needs every input to be one of llama, mistral, qwen2 (got \(Set(modelTypes).sorted().joined(separator: ", ")))"
                    )
                    return false
                }
                return true
            default:
                return sameType && type == "qwen3"
            }
        }
        let candidates = candidatesIn.filter(supports)
        let chosen = candidates.contains("Mixtral") ? "Mixtral" : candidates.first
        guard let chosen else {
            throw MergeError(
                .invalidInputs,
                "\(file): no output architecture fits these experts: \(reasons.joined(separator: "; ")).")
        }
        guard let arch = MoEArchitecture(rawValue: chosen) else {
            throw MergeError(
                .unsupported,
                "\(file): mergekit-moe would write this configuration as \(chosen), which TaskSwitch does not write; it writes \(allCases.map(\.rawValue).joined(separator: " and ")) (set 'architecture' to choose one)."
            )
        }
        return arch
    }

    /// `architectures[0]` of the output's config.json.
    public var className: String {
        switch self {
        case .mixtral: "MixtralForCausalLM"
        case .qwen2MoE: "Qwen2MoeForCausalLM"
        }
    }

    /// The output's config.json: the base's, with the mixture's fields set as mergekit's `_generate_config` does.
    func outputConfig(base: [String: Any], experts: Int, expertsPerToken: Int, dtype: DType?) -> [String: Any] {
        var c = base
        c["architectures"] = [className]
        c["num_experts_per_tok"] = expertsPerToken
        c["sliding_window"] = NSNull()
        switch self {
        case .mixtral:
            c["model_type"] = "mixtral"
            c["num_local_experts"] = experts
        case .qwen2MoE:
            c["model_type"] = "qwen2_moe"
            c["num_experts"] = experts
            c["decoder_sparse_step"] = 1
            c["norm_topk_prob"] = true
            c["use_sliding_window"] = false
            c["shared_expert_intermediate_size"] = base["intermediate_size"]
            c["moe_intermediate_size"] = base["intermediate_size"]
        }
        // transformers 5 writes `dtype`, 4 wrote `torch_dtype`; set the key the base has (5 reads both).
        if let name = dtype?.torchName {
            if c["dtype"] != nil { c["dtype"] = name }
            if c["torch_dtype"] != nil || c["dtype"] == nil { c["torch_dtype"] = name }
        }
        return c
    }
}
