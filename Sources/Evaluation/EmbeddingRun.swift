import CheckpointIO
import Foundation
import TaskSwitches

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
    ///
    /// With `packs`, `model` is their base and each line's `"task"` names the pack its text runs on (no task, or
    /// `"base"`: the base alone); all texts run in mixed batches, whatever their tasks.
    ///
    /// With `layers` (not with packs) each row is what a router on those base layers reads
    /// (`SentenceEncoder.routerFeatures`: each layer's mean-pooled states at unit length, concatenated, scaled by
    /// 1/√n), `layers.count × hidden` wide, so `tswitch route ROUTER FEATURES` and `route --build` take the file.
    /// `normalize` does not apply: the blocks are always at unit length.
    public static func run(
        model: String, input: String, output: String, maxLength: Int, batchSize: Int, normalize: Bool,
        packs packPaths: [String] = [], layers: [Int] = [], started: (Int) -> Void = { _ in },
        progress: ((Int) -> Void)? = nil
    ) throws -> EmbeddingReport {
        if !layers.isEmpty && !packPaths.isEmpty {
            throw EvaluationError(
                .incompatible,
                "Layer features are the base's (what a router reads); they are not written for switched texts (--pack)."
            )
        }
        let rows = try TextDataset.read(path: input)
        let texts = rows.map(\.text)
        let hidden: Int
        let limit: Int
        let embed: () throws -> [Float]
        if !layers.isEmpty {
            let encoder = try SentenceEncoder(path: model)
            (hidden, limit) = (layers.count * encoder.hiddenSize, encoder.maxSequenceLength)
            embed = {
                try encoder.routerFeatures(
                    texts, layers: layers, maxLength: maxLength, batchSize: batchSize, progress: progress)
            }
        } else if packPaths.isEmpty {
            let encoder = try SentenceEncoder(path: model)
            (hidden, limit) = (encoder.hiddenSize, encoder.maxSequenceLength)
            embed = {
                encoder.embed(
                    texts, maxLength: maxLength, batchSize: batchSize, normalize: normalize, progress: progress)
            }
        } else {
            let switched = try SwitchedEncoder(basePath: model)
            let packs = try packPaths.map { try PackFile.read($0) }
            let index = Dictionary(packs.enumerated().map { ($1.task, $0) }, uniquingKeysWith: { first, _ in first })
            let mixes = try rows.enumerated().map { (i, row) throws(EvaluationError) -> [Double] in
                var w = [Double](repeating: 0, count: packs.count)
                guard let task = row.task, task != "base" else { return w }
                guard let k = index[task] else {
                    throw EvaluationError(
                        .incompatible,
                        "\(input): text \(i + 1) asks for task '\(task)', but no pack given is for it (packs: \(packs.map(\.task).joined(separator: ", ")))."
                    )
                }
                w[k] = 1
                return w
            }
            (hidden, limit) = (switched.config.hiddenSize, switched.config.maxSequenceLength)
            embed = {
                try switched.embed(
                    texts, packs: packs, mixes: mixes, maxLength: maxLength, batchSize: batchSize, normalize: normalize,
                    progress: progress)
            }
        }
        guard maxLength <= limit else {
            throw EvaluationError(
                .incompatible,
                "\(model): a maximum length of \(maxLength) tokens exceeds the model's max_position_embeddings \(limit)."
            )
        }
        started(texts.count)
        let start = Date()
        let values = try embed()
        let seconds = Date().timeIntervalSince(start)
        var metadata = [
            "model": model, "pooling": "mean", "normalized": normalize || !layers.isEmpty ? "true" : "false",
            "max_length": "\(maxLength)",
        ]
        if !layers.isEmpty { metadata["layers"] = layers.map(String.init).joined(separator: ",") }
        let writer = try SafeTensorsWriter(
            path: output,
            tensors: [TensorSpec(name: "embeddings", dtype: .F32, shape: [texts.count, hidden])],
            metadata: metadata)
        try writer.write("embeddings", floats: values)
        try writer.finish()
        return EmbeddingReport(
            output: output, n: texts.count, hidden: hidden, seconds: seconds,
            sentencesPerSecond: seconds > 0 ? Double(texts.count) / seconds : 0)
    }
}
