import CheckpointIO
import Foundation

/// `tswitch embed --json`: what was written and how fast.
public struct EmbeddingReport: Codable, Sendable, Equatable {
    public var output: String
    public var n: Int
    public var hidden: Int
    public var seconds: Double
    public var sentencesPerSecond: Double

    enum CodingKeys: String, CodingKey {
        case output, n, hidden, seconds
        case sentencesPerSecond = "sentences_per_second"
    }
}

/// Sentence embeddings of a JSONL file of texts, written as one F32 tensor `embeddings` [N, hidden] in input order.
public enum EmbeddingRun {
    /// - Parameter progress: texts done so far, after each batch.
    /// - Throws: `EvaluationError` `.incompatible` when `maxLength` exceeds the model's `max_position_embeddings`;
    ///   loading and writing errors.
    public static func run(
        model: String, input: String, output: String, maxLength: Int, batchSize: Int, normalize: Bool,
        started: (Int) -> Void = { _ in }, progress: ((Int) -> Void)? = nil
    ) throws -> EmbeddingReport {
        let encoder = try SentenceEncoder(path: model)
        guard maxLength <= encoder.maxSequenceLength else {
            throw EvaluationError(
                .incompatible,
                "\(model): a maximum length of \(maxLength) tokens exceeds the model's max_position_embeddings \(encoder.maxSequenceLength).")
        }
        let texts = try TextDataset.read(path: input).map(\.text)
        started(texts.count)
        let start = Date()
        let values = encoder.embed(
            texts, maxLength: maxLength, batchSize: batchSize, normalize: normalize, progress: progress)
        let seconds = Date().timeIntervalSince(start)
        let writer = try SafeTensorsWriter(
            path: output,
            tensors: [TensorSpec(name: "embeddings", dtype: .F32, shape: [texts.count, encoder.hiddenSize])],
            metadata: [
                "model": model, "pooling": "mean", "normalized": normalize ? "true" : "false",
                "max_length": "\(maxLength)",
            ])
        try writer.write("embeddings", floats: values)
        try writer.finish()
        return EmbeddingReport(
            output: output, n: texts.count, hidden: encoder.hiddenSize, seconds: seconds,
            sentencesPerSecond: seconds > 0 ? Double(texts.count) / seconds : 0)
    }
}
