import MergeEngine

/// A mergekit YAML configuration (any bytes, decoded as UTF-8 with replacement): the merge and the mergekit-moe
/// parsers return configs or throw a `MergeError`; they never crash, recurse without bound or expand aliases
/// without bound.
func fuzzYAML(_ bytes: UnsafeRawBufferPointer) {
    let text = String(decoding: bytes, as: UTF8.self)
    if let moe = try? MoEConfigParser.parse(text, file: "fuzz.yml") {
        precondition(!moe.experts.isEmpty && moe.expertsPerToken >= 1, "accepted a config without experts")
        precondition(moe.expertsPerToken <= moe.experts.count, "accepted more experts per token than experts")
        precondition(moe.gateMode != .hidden, "accepted gate_mode hidden, which no router here computes")
    }
    guard let configs = try? MergeConfigParser.parse(text, file: "fuzz.yml") else { return }
    for c in configs {
        precondition(!c.mergeMethod.isEmpty, "accepted a config without a merge method")
        precondition((c.models == nil) != (c.slices == nil), "accepted both or neither of models and slices")
        // Resolving every parameter for a tensor name walks the whole parsed tree.
        for block in [c.parameters] + (c.models ?? []).map(\.parameters) {
            for s in block.settings.values { _ = s.evaluate(tensorName: "model.layers.0.mlp.weight", t: 0.5) }
        }
    }
}
