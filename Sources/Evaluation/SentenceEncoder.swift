import CheckpointIO
import Foundation

/// A tokenizer, an encoder and mean pooling: texts in, sentence embeddings out.
public struct SentenceEncoder: Sendable {
    public let tokenizer: any TextTokenizer
    public let encoder: any EncoderModel

    public init(tokenizer: any TextTokenizer, encoder: any EncoderModel) {
        self.tokenizer = tokenizer
        self.encoder = encoder
    }

    /// Loads a Hugging Face folder through `EncoderLoader`: `config.json` picks the family, which reads its
    /// tokenizer files (`vocab.txt` + `tokenizer_config.json` for BERT, `tokenizer.json` for RoBERTa) and weights.
    public init(path: String) throws(EvaluationError) {
        self = try EncoderLoader(path: path).sentenceEncoder()
    }

    public var hiddenSize: Int { encoder.hiddenSize }

    /// Longest sequence the model accepts, special tokens included.
    public var maxSequenceLength: Int { encoder.maxSequenceLength }

    /// Sentence embeddings (`texts.count × hiddenSize`, row-major) in input order.
    ///
    /// Texts are encoded in batches of similar length (sorted by token count, as sentence-transformers does), so
    /// that no batch carries a long tail of short sequences; the result is independent of the order.
    ///
    /// - Parameters:
    ///   - maxLength: truncation, special tokens included; at most `maxSequenceLength`.
    ///   - normalize: scale each row to unit L2 length.
    ///   - progress: called after each batch with the number of texts done.
    public func embed(
        _ texts: [String], maxLength: Int = 128, batchSize: Int = 64, normalize: Bool = false,
        progress: ((Int) -> Void)? = nil
    ) -> [Float] {
        embedBatches(texts, maxLength: maxLength, batchSize: batchSize, normalize: normalize, progress: progress) {
            batch, _, pool in encoder.withHiddenStates(batch, pool)
        }
    }

    /// Sentence embeddings of a mixed batch: text `i` on the weights of group `groups[i]` as `weights` lends
    /// them (see `MixedEncoderModel`), in input order.
    ///
    /// Texts are batched group by group (`batchOrder`): a mixed batch's cost grows with the groups it holds, and a
    /// batch of one group runs as an in-place switch would, so texts sharing a mix go together. Tokens are packed
    /// without padding, so lengths need not be sorted across groups; within a group they are.
    ///
    /// - Precondition: the encoder runs mixed batches (`MixedEncoderModel`; both families do).
    public func embed(
        _ texts: [String], groups: [Int], weights: any GroupWeights, maxLength: Int = 128, batchSize: Int = 64,
        normalize: Bool = false, progress: ((Int) -> Void)? = nil
    ) -> [Float] {
        precondition(groups.count == texts.count, "one group per text")
        guard let mixed = encoder as? any MixedEncoderModel else {
            preconditionFailure("\(type(of: encoder)) does not run mixed batches")
        }
        return embedBatches(
            texts, maxLength: maxLength, batchSize: batchSize, normalize: normalize, groups: groups, progress: progress
        ) {
            batch, rows, pool in mixed.withHiddenStates(batch, groups: rows.map { groups[$0] }, weights: weights, pool)
        }
    }

    /// The features a router reads (`TaskRouter.featureLayers`): with no layers the sentence embedding
    /// (`normalize`: at unit length); else the masked mean-pooled states of each of `layers` (0: the embedding
    /// output), each scaled to unit length, concatenated and scaled by 1/√n (unit rows of `layers.count ·
    /// hiddenSize`), batched as `embed` batches.
    ///
    /// - Throws: `.incompatible` when the encoder does not pool layers or a layer is past its last.
    public func routerFeatures(
        _ texts: [String], layers: [Int], normalize: Bool = true, maxLength: Int = 128, batchSize: Int = 64,
        progress: ((Int) -> Void)? = nil
    ) throws(EvaluationError) -> [Float] {
        guard !layers.isEmpty else {
            return embed(texts, maxLength: maxLength, batchSize: batchSize, normalize: normalize, progress: progress)
        }
        var out = try pooledLayers(
            texts, layers: layers, maxLength: maxLength, batchSize: batchSize, progress: progress)
        Self.scaleLayerFeatures(&out, layers: layers.count, hidden: hiddenSize)
        return out
    }

    /// The sentence embeddings of `texts` (as `embed` makes them, not normalized) and the features of a router on
    /// `layers` (non-empty; as `routerFeatures` makes them), from one forward pass: the last layer is pooled
    /// alongside the router's layers. What a server answers a text routed to no task with, and what it routes on.
    ///
    /// - Throws: as `routerFeatures`.
    public func embeddingAndRouterFeatures(
        _ texts: [String], layers: [Int], maxLength: Int = 128, batchSize: Int = 64
    ) throws(EvaluationError) -> (embedding: [Float], routing: [Float]) {
        precondition(!layers.isEmpty, "a router on the final embedding reads the embedding itself")
        let h = hiddenSize
        // A router layer past the last, or an encoder that pools no layers, is refused by `pooledLayers`.
        let last = (encoder as? any LayerPoolingEncoder)?.layerCount ?? layers.max() ?? 0
        let wanted = layers.contains(last) ? layers : layers + [last]
        let slot = wanted.firstIndex(of: last) ?? wanted.count - 1
        var pooled = try pooledLayers(texts, layers: wanted, maxLength: maxLength, batchSize: batchSize)
        var embedding = [Float](repeating: 0, count: texts.count * h)
        let width = wanted.count * h
        for t in texts.indices {
            embedding.replaceSubrange(
                (t * h)..<((t + 1) * h), with: pooled[(t * width + slot * h)..<(t * width + slot * h + h)])
        }
        if wanted.count > layers.count {
            // Drop the last layer's block, pooled only for the embedding.
            var kept = [Float]()
            kept.reserveCapacity(texts.count * layers.count * h)
            for t in texts.indices { kept += pooled[(t * width)..<(t * width + layers.count * h)] }
            pooled = kept
        }
        Self.scaleLayerFeatures(&pooled, layers: layers.count, hidden: h)
        return (embedding, pooled)
    }

    /// Raw masked mean-pooled states of `layers`, per text the layers' blocks one after another.
    private func pooledLayers(
        _ texts: [String], layers: [Int], maxLength: Int, batchSize: Int, progress: ((Int) -> Void)? = nil
    ) throws(EvaluationError) -> [Float] {
        guard let pooling = encoder as? any LayerPoolingEncoder else {
            throw EvaluationError(
                .incompatible,
                "The router reads layers \(layers), but the \(type(of: encoder)) encoder does not pool layers.")
        }
        if let bad = layers.first(where: { !(0...pooling.layerCount).contains($0) }) {
            throw EvaluationError(
                .incompatible,
                "The router reads layer \(bad), but the model has layers 0 (embeddings) to \(pooling.layerCount).")
        }
        return embedBatches(
            texts, maxLength: maxLength, batchSize: batchSize, normalize: false, width: layers.count * hiddenSize,
            progress: progress
        ) { batch, _, _ in pooling.poolLayers(batch, layers: layers) }
    }

    /// Each layer's block at unit length, then the row scaled by 1/√n: unit rows.
    private static func scaleLayerFeatures(_ out: inout [Float], layers: Int, hidden: Int) {
        MeanPooling.normalizeRows(&out, width: hidden)
        let scale = 1 / Float(layers).squareRoot()
        for i in out.indices { out[i] *= scale }
    }

    /// The order texts are batched in: by token count (`lengths`), or with `groups` by group and then by token
    /// count; ties by position, so the order is the same on every run.
    static func batchOrder(lengths: [Int], groups: [Int]? = nil) -> [Int] {
        guard let groups else { return lengths.indices.sorted { (lengths[$0], $0) < (lengths[$1], $1) } }
        precondition(groups.count == lengths.count, "one group per text")
        return lengths.indices.sorted { (groups[$0], lengths[$0], $0) < (groups[$1], lengths[$1], $1) }
    }

    /// Tokenizes, orders (`batchOrder`), batches and pools; `run` runs one batch (with the texts' positions in
    /// `texts`) and returns `width` values per text (`hiddenSize` by default).
    private func embedBatches(
        _ texts: [String], maxLength: Int, batchSize: Int, normalize: Bool, width: Int? = nil, groups: [Int]? = nil,
        progress: ((Int) -> Void)?, run: (TokenBatch, [Int], (HiddenStates) -> [Float]) -> [Float]
    ) -> [Float] {
        precondition(batchSize > 0)
        let maxLength = min(max(2, maxLength), encoder.maxSequenceLength)
        let pooling = MeanPooling(normalize: normalize)
        let h = width ?? hiddenSize
        let sequences = texts.map { tokenizer.encode($0, maxLength: maxLength) }
        let order = Self.batchOrder(lengths: sequences.map(\.count), groups: groups)
        var out = [Float](repeating: 0, count: texts.count * h)
        var done = 0
        while done < order.count {
            let rows = Array(order[done..<min(order.count, done + batchSize)])
            let batch = TokenBatch(sequences: rows.map { sequences[$0] }, padID: tokenizer.padID)
            let pooled = run(batch, rows) { pooling.pool($0) }
            for (i, row) in rows.enumerated() {
                out.replaceSubrange((row * h)..<((row + 1) * h), with: pooled[(i * h)..<((i + 1) * h)])
            }
            done += rows.count
            progress?(done)
        }
        return out
    }
}
