import CheckpointIO
import Foundation

/// A parameter as written in YAML, before it is resolved for a tensor.
///
/// mergekit's forms: a scalar, a list of numbers (a gradient over layers), or a list of `{filter, value}`
/// conditionals (the first whose filter is a substring of the tensor name wins; no filter or `*` matches all).
public indirect enum ParameterSetting: Sendable, Equatable {
    case value(ParameterValue)
    case gradient([ParameterValue])
    case conditional([Conditional])

    public struct Conditional: Sendable, Equatable {
        public let filter: String?
        public let value: ParameterSetting
    }

    /// The value for a tensor at relative depth `t` in [0, 1], or nil when no conditional matches (the next,
    /// lower-precedence scope is then consulted, as in mergekit).
    public func evaluate(tensorName: String, t: Double) -> ParameterValue? {
        switch self {
        case .value(let v):
            return v
        case .gradient(let values):
            guard !values.isEmpty else { return nil }
            // Booleans pick a discrete entry; numbers interpolate linearly (mergekit's evaluate_setting).
            if values.contains(where: { if case .bool = $0 { true } else { false } }) {
                return values[Int(t * Double(values.count - 1))]
            }
            let scaled = t * Double(values.count - 1)
            let i0 = Int(scaled)
            let i1 = min(values.count - 1, i0 + 1)
            let frac = scaled - Double(i0)
            return .number((1 - frac) * values[i0].number + frac * values[i1].number)
        case .conditional(let conds):
            for c in conds where c.filter == nil || c.filter == "*" || tensorName.contains(c.filter ?? "") {
                return c.value.evaluate(tensorName: tensorName, t: t)
            }
            return nil
        }
    }
}

/// Parameters at one level of the config, with the YAML line of each key for error messages.
public struct ParameterBlock: Sendable, Equatable {
    public var settings: [String: ParameterSetting] = [:]
    public var lines: [String: Int] = [:]
    public init() {}
}

/// One input model of a `models:` list or a slice's `sources:`.
public struct SourceDefinition: Sendable, Equatable {
    public var model: String
    public var layerRange: Range<Int>?
    public var parameters = ParameterBlock()
    public var line: Int
}

/// One output slice: sources with equal layer counts, merged layer by layer.
public struct SliceDefinition: Sendable, Equatable {
    public var sources: [SourceDefinition]
    public var baseModel: String?
    public var parameters = ParameterBlock()
    public var line: Int
}

/// One merge (one YAML document) in mergekit's format.
public struct MergeConfig: Sendable, Equatable {
    public var mergeMethod: String
    public var mergeMethodLine: Int
    public var baseModel: String?
    /// `models:` entries; nil when the config uses `slices:`.
    public var models: [SourceDefinition]?
    public var slices: [SliceDefinition]?
    public var parameters = ParameterBlock()
    /// Compute dtype as mergekit names it; TaskSwitch always computes in f32 (see docs/merge.md).
    public var dtype: DType?
    /// Storage dtype of the output.
    public var outDType: DType?
    /// `tokenizer_source` or `tokenizer.source`: `base`, `union` or a model; nil copies the base's tokenizer files
    /// and leaves embeddings unaligned (mergekit's default).
    public var tokenizerSource: String?
    /// `tokenizer.tokens`: per-token embedding sources, in YAML order (also added to the output vocabulary).
    public var tokenizerTokens: [TokenEmbeddingSetting] = []
    /// `tokenizer.pad_to_multiple_of`.
    public var padToMultipleOf: Int?
    /// Line of `tokenizer_source` / `tokenizer`, for messages.
    public var tokenizerLine = 0
    public var chatTemplate: String?
    /// `name:` of an intermediate in a multi-document file.
    public var name: String?
    /// The document's YAML text, for the model card.
    public var yaml: String
    /// The file the config came from, for messages.
    public var file: String

    /// Every model the merge reads (base first), without duplicates.
    public var referencedModels: [String] {
        var out: [String] = []
        if let baseModel { out.append(baseModel) }
        for m in models ?? [] where !out.contains(m.model) { out.append(m.model) }
        for s in slices ?? [] {
            if let b = s.baseModel, !out.contains(b) { out.append(b) }
            for src in s.sources where !out.contains(src.model) { out.append(src.model) }
        }
        return out
    }
}
