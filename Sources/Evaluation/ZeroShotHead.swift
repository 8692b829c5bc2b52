import Foundation

/// CLIP's zero-shot head protocol on text: row c of a task's head is the L2-normalized base-model embedding of
/// class c's description (`descriptions` in the task's `labels.json`, put into a template), the bias is 0, and the
/// logits are `logitScale · cos(feature, row)`. The head is frozen while the encoder is fine-tuned (the paper's
/// protocol, and task arithmetic's, TIES', EMR's, TALL masks').
public enum ZeroShotHead {
    /// CLIP's logit scale (exp of its learned temperature, clamped at 100).
    public static let defaultLogitScale: Float = 100
    /// The template that puts the description in unchanged.
    public static let defaultTemplate = "{}"
    /// The placeholder a template's description goes into.
    public static let placeholder = "{}"
    /// Truncation of the descriptions: sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2.
    public static let maxLength = 256

    /// The class names and descriptions of a task's `labels.json`.
    public struct Classes: Sendable, Equatable {
        public let labels: [String]
        public let descriptions: [String]
    }

    /// Reads `labels` and `descriptions` (one non-empty phrase per class) from a `labels.json`.
    ///
    /// - Throws: `EvaluationError` `.io` when the file cannot be read, `.invalidData` naming the file when it is not
    ///   an object with a `labels` and a `descriptions` list of strings (or a description is empty),
    ///   `.incompatible` naming the file when the two lists differ in length.
    public static func readClasses(labelsPath path: String) throws(EvaluationError) -> Classes {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EvaluationError(.io, "\(path): cannot read the file.")
        }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw EvaluationError(.invalidData, "\(path): expected a JSON object with \"labels\" and \"descriptions\".")
        }
        guard let labels = obj["labels"] as? [String], !labels.isEmpty else {
            throw EvaluationError(.invalidData, "\(path): expected a non-empty \"labels\" list of strings.")
        }
        guard let raw = obj["descriptions"] else {
            throw EvaluationError(
                .invalidData,
                "\(path): no \"descriptions\" list; a zero-shot head needs one short phrase per class (\(labels.count) classes)."
            )
        }
        guard let descriptions = raw as? [String] else {
            throw EvaluationError(.invalidData, "\(path): \"descriptions\" must be a list of strings.")
        }
        guard descriptions.count == labels.count else {
            throw EvaluationError(
                .incompatible,
                "\(path): \(descriptions.count) descriptions for \(labels.count) labels; expected one per class.")
        }
        if let i = descriptions.firstIndex(where: { $0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) {
            throw EvaluationError(.invalidData, "\(path): description \(i) (class '\(labels[i])') is empty.")
        }
        return Classes(labels: labels, descriptions: descriptions)
    }

    /// Each description put into `template` (every `{}` replaced by it).
    public static func prompts(_ descriptions: [String], template: String = defaultTemplate) -> [String] {
        precondition(template.contains(placeholder), "a template holds the placeholder {}")
        return descriptions.map { template.replacingOccurrences(of: placeholder, with: $0) }
    }

    /// The zero-shot head of `classes`: rows are the normalized embeddings of the prompts, bias 0.
    public static func make(
        encoder: SentenceEncoder, classes: Classes, template: String = defaultTemplate,
        logitScale: Float = defaultLogitScale
    ) -> LinearHead {
        let rows = encoder.embed(
            prompts(classes.descriptions, template: template), maxLength: maxLength, normalize: true)
        return LinearHead(
            weight: rows, bias: [Float](repeating: 0, count: classes.labels.count), classes: classes.labels.count,
            hidden: encoder.hiddenSize, labels: classes.labels, logitScale: logitScale)
    }
}
