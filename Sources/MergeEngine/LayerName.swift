/// Finds and rewrites the layer index in a tensor name (`model.layers.12.mlp.up_proj.weight`), which slices and
/// gradients need. A layer index is the first all-digit dot component after `layers`, `layer`, `h`, `blocks` or
/// `block` (Llama, BERT, GPT-2, and most Hugging Face architectures).
public struct LayerName: Sendable, Hashable {
    /// Components before the index, the index, components after.
    public let prefix: String
    public let index: Int
    public let suffix: String

    static let containers: Set<Substring> = ["layers", "layer", "h", "blocks", "block"]

    public init?(_ name: String) {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        for i in 1..<max(1, parts.count) where Self.containers.contains(parts[i - 1]) {
            if let n = Int(parts[i]), n >= 0, parts[i].allSatisfy(\.isNumber) {
                prefix = parts[..<i].joined(separator: ".")
                index = n
                suffix = parts[(i + 1)...].joined(separator: ".")
                return
            }
        }
        return nil
    }

    /// The same name with another layer index.
    public func with(index: Int) -> String {
        suffix.isEmpty ? "\(prefix).\(index)" : "\(prefix).\(index).\(suffix)"
    }

    /// Whether a non-layer tensor comes before the layers (embeddings) or after (final norm, head), as
    /// mergekit's architecture files place them.
    public static func isPreLayer(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.contains("embed") || lower.contains("wte") || lower.contains("wpe")
    }
}
