import CheckpointIO
import Foundation
import Yams

extension MergeConfigParser {
    /// A model reference: a string (`org/name`, a path, or `model+lora`, which `MergePlan` merges first) or
    /// `{model: ...}`.
    static func modelReference(_ node: Node, file: String) throws(MergeError) -> String {
        try string(node, file: file, key: "model")
    }

    static func source(_ node: Node, file: String, inSlice: Bool) throws(MergeError) -> SourceDefinition {
        var def = SourceDefinition(model: "", line: line(node))
        var haveModel = false
        for (key, keyNode, value) in try mapping(node, file: file, what: inSlice ? "a slice source" : "a model entry") {
            switch key {
            case "model":
                def.model = try modelReference(value, file: file)
                haveModel = true
            case "parameters":
                def.parameters = try parameterBlock(value, file: file)
            case "layer_range" where inSlice:
                guard case .sequence(let seq) = value, seq.count == 2, let a = seq[0].int, let b = seq[1].int, a >= 0,
                    b >= a
                else {
                    throw fail(
                        .invalidConfig, file, value, "'layer_range' must be [start, end) with 0 <= start <= end.")
                }
                def.layerRange = a..<b
            default:
                let allowed = inSlice ? "model, layer_range, parameters" : "model, parameters"
                throw fail(.unknownKey, file, keyNode, "unknown key '\(key)'; expected one of \(allowed).")
            }
        }
        guard haveModel else { throw fail(.missingParameter, file, node, "the entry has no 'model'.") }
        if inSlice, def.layerRange == nil {
            throw fail(.missingParameter, file, node, "the slice source '\(def.model)' has no 'layer_range'.")
        }
        return def
    }

    static func slice(_ node: Node, file: String) throws(MergeError) -> SliceDefinition {
        var def = SliceDefinition(sources: [], line: line(node))
        var haveSources = false
        for (key, keyNode, value) in try mapping(node, file: file, what: "a slice") {
            switch key {
            case "sources":
                guard case .sequence(let seq) = value, !seq.isEmpty else {
                    throw fail(.invalidConfig, file, value, "'sources' must be a non-empty list.")
                }
                guard seq.count <= Limits.maxModels else {
                    throw fail(
                        .limitExceeded, file, value,
                        "'sources' lists \(seq.count) entries; at most \(Limits.maxModels) are allowed.")
                }
                for s in seq { def.sources.append(try source(s, file: file, inSlice: true)) }
                haveSources = true
            case "base_model":
                def.baseModel = try modelReference(value, file: file)
            case "parameters":
                def.parameters = try parameterBlock(value, file: file)
            default:
                throw fail(
                    .unknownKey, file, keyNode, "unknown key '\(key)'; expected one of sources, base_model, parameters."
                )
            }
        }
        guard haveSources else { throw fail(.missingParameter, file, node, "the slice has no 'sources'.") }
        let lengths = Set(def.sources.compactMap { $0.layerRange?.count })
        guard lengths.count == 1 else {
            throw fail(
                .invalidConfig, file, node,
                "all sources of a slice must have the same number of layers; got \(lengths.sorted()).")
        }
        return def
    }
}
