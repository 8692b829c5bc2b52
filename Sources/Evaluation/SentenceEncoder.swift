import CheckpointIO
import Foundation

/// A tokenizer and an encoder from one model folder: texts in, sentence embeddings out.
public struct SentenceEncoder: Sendable {
    public let tokenizer: WordPieceTokenizer
    public let encoder: BertEncoder

    public init(tokenizer: WordPieceTokenizer, encoder: BertEncoder) {
        self.tokenizer = tokenizer
        self.encoder = encoder
    }

    /// Loads `vocab.txt`, `tokenizer_config.json`, `config.json` and the weights of a Hugging Face folder.
    public init(path: String) throws(EvaluationError) {
        let encoder = try BertEncoder(path: path)
        var isDir: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
        let folder = isDir.boolValue ? URL(fileURLWithPath: path, isDirectory: true) : URL(fileURLWithPath: path).deletingLastPathComponent()
        let tokenizer = try WordPieceTokenizer(folder: folder)
        guard tokenizer.vocabularySize <= encoder.config.vocabularySize else {
            throw EvaluationError(
                .incompatible,
                "\(folder.appendingPathComponent("vocab.txt").path): \(tokenizer.vocabularySize) tokens, but the model's vocab_size is \(encoder.config.vocabularySize).")
        }
        self.init(tokenizer: tokenizer, encoder: encoder)
    }

    public var hiddenSize: Int { encoder.config.hiddenSize }

    /// Sentence embeddings (`texts.count × hiddenSize`, row-major) in input order.
    ///
    /// Texts are encoded in batches of similar length (sorted by token count, as sentence-transformers does), so
    /// that no batch carries a long tail of short sequences; the result is independent of the order.
    ///
    /// - Parameters:
    ///   - maxLength: truncation, `[CLS]` and `[SEP]` included; at most `max_position_embeddings`.
    ///   - normalize: scale each row to unit L2 length.
    ///   - progress: called after each batch with the number of texts done.
    public func embed(
        _ texts: [String], maxLength: Int = 128, batchSize: Int = 64, normalize: Bool = false,
        progress: ((Int) -> Void)? = nil
    ) -> [Float] {
        precondition(batchSize > 0)
        let maxLength = min(max(2, maxLength), encoder.config.maxPositions)
        let h = hiddenSize
        let sequences = texts.map { tokenizer.encode($0, maxLength: maxLength) }
        let order = sequences.indices.sorted { (sequences[$0].count, $0) < (sequences[$1].count, $1) }
        var out = [Float](repeating: 0, count: texts.count * h)
        var done = 0
        while done < order.count {
            let rows = Array(order[done..<min(order.count, done + batchSize)])
            let batch = TokenBatch(sequences: rows.map { sequences[$0] }, padID: tokenizer.padID)
            let pooled = encoder.embed(batch)
            for (i, row) in rows.enumerated() {
                var norm: Float = 1
                if normalize {
                    var sq: Float = 0
                    for j in 0..<h { sq += pooled[i * h + j] * pooled[i * h + j] }
                    norm = max(sq.squareRoot(), 1e-12)
                }
                for j in 0..<h { out[row * h + j] = pooled[i * h + j] / norm }
            }
            done += rows.count
            progress?(done)
        }
        return out
    }
}
