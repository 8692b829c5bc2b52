import CheckpointIO
import Foundation
import Synchronization

/// Inference of a BERT-family encoder (all-MiniLM-L6-v2 and other `BertModel` checkpoints, and `RobertaModel`,
/// the same post-LN transformer with positions offset by `config.positionOffset`) in F32: the last hidden state of
/// every real token, which `embed` mean-pools (the sentence feature sentence-transformers returns for MiniLM
/// before normalization).
///
/// Padding is never computed: the valid tokens of a batch are packed into one `tokens × hidden` matrix, so
/// every linear layer is a single OpenBLAS product over real tokens, and attention runs per sequence over its own
/// tokens only. That is exactly what the reference computes for the unpadded positions (a padded key gets weight
/// `exp(-3.4e38) = 0` there), and padded positions never reach the pooled output.
public final class BertEncoder: MixedEncoderModel, LayerPoolingEncoder {
    public let config: BertConfig
    let wordEmbeddings: EncoderWeight
    let positionEmbeddings: EncoderWeight
    let tokenTypeEmbeddings: EncoderWeight
    let embeddingNormWeight: EncoderWeight
    let embeddingNormBias: EncoderWeight
    let layers: [Layer]
    /// Activation buffers of finished forward passes, reused by the next ones (see `Workspace`).
    let workspaces = Mutex<[Workspace]>([])

    /// One transformer layer's weights; query, key and value are stacked into one `3H × H` matrix so that a single
    /// product computes all three.
    struct Layer: Sendable {
        var qkvWeight: EncoderWeight
        var qkvBias: EncoderWeight
        var attentionOutWeight: EncoderWeight
        var attentionOutBias: EncoderWeight
        var attentionNormWeight: EncoderWeight
        var attentionNormBias: EncoderWeight
        var intermediateWeight: EncoderWeight
        var intermediateBias: EncoderWeight
        var outputWeight: EncoderWeight
        var outputBias: EncoderWeight
        var outputNormWeight: EncoderWeight
        var outputNormBias: EncoderWeight
    }

    /// The activation buffers of one forward pass (about 57 MB for 32 texts of 128 tokens). Allocating and
    /// zero-filling them for every batch cost 1.5 % of the encoder's time in page faults, so a pass checks one
    /// out of `workspaces` and returns it; concurrent passes each get their own, and at most `keptWorkspaces` stay
    /// between passes, each as large as the largest batch it served.
    struct Workspace: Sendable {
        /// The residual stream, `tokens × hidden`, into which the sublayers' output products accumulate; the last
        /// hidden state after the last layer.
        var x: [Float] = []
        /// The fused Q, K, V product, `tokens × 3·hidden`.
        var qkv: [Float] = []
        /// Attention context, `tokens × hidden`.
        var ctx: [Float] = []
        /// Feed-forward activations, `tokens × intermediate`.
        var mid: [Float] = []
        /// Mixed batches only: one layer's weights as one group sees them, and the embedding rows it looks up.
        var layerScratch: [Float] = []
        var rowScratch: [Float] = []

        /// Grows the buffers to hold `tokens` rows; never shrinks them.
        mutating func reserve(tokens t: Int, hidden h: Int, intermediate inter: Int) {
            func grow(_ a: inout [Float], _ count: Int) {
                if a.count < count { a = [Float](repeating: 0, count: count) }
            }
            grow(&x, t * h)
            grow(&qkv, t * 3 * h)
            grow(&ctx, t * h)
            grow(&mid, t * inter)
        }
    }

    /// Workspaces kept between passes: one per caller of a typical program (the CLI embeds from one task).
    static let keptWorkspaces = 2

    /// Checks a workspace out of `workspaces` (or makes one) for `body`, and returns it afterwards, keeping at most
    /// `keptWorkspaces`.
    func withWorkspace<R>(_ body: (inout Workspace) throws -> R) rethrows -> R {
        var workspace = workspaces.withLock { $0.popLast() } ?? Workspace()
        defer {
            let done = workspace
            workspaces.withLock { if $0.count < Self.keptWorkspaces { $0.append(done) } }
        }
        return try body(&workspace)
    }

    /// Builds an encoder from tensors supplied by name (unprefixed `BertModel` names), for example a base model
    /// with task switches applied in memory. Programs load a model with `EncoderLoader`, which owns the config,
    /// the tokenizer and the checkpoint's tensor names, and calls this.
    ///
    /// - Parameters:
    ///   - source: names the model in error messages.
    ///   - tensor: returns a tensor's shape and values, or nil when the model has no such tensor.
    public convenience init(
        config: BertConfig, source: String,
        tensor: (String) throws(EvaluationError) -> (shape: [Int], values: [Float])?
    ) throws(EvaluationError) {
        try self.init(config: config, source: source) { (name) throws(EvaluationError) in
            try tensor(name).map { ($0.shape, EncoderWeight(owning: $0.values)) }
        }
    }

    /// The weights-source seam: tensors owned by the encoder or borrowed from a lender (`EncoderWeight`).
    init(
        config: BertConfig, source: String,
        weight tensor: (String) throws(EvaluationError) -> (shape: [Int], weight: EncoderWeight)?
    ) throws(EvaluationError) {
        let h = config.hiddenSize
        let inter = config.intermediateSize
        func load(_ name: String, _ shape: [Int]) throws(EvaluationError) -> EncoderWeight {
            guard let t = try tensor(name) else {
                throw EvaluationError(
                    .missingTensor, "\(source): the model has no tensor '\(name)', which a BERT encoder needs.")
            }
            guard t.shape == shape, t.weight.count == shape.reduce(1, *) else {
                throw EvaluationError(
                    .shapeMismatch, "\(source): tensor '\(name)' has shape \(t.shape); config.json implies \(shape).")
            }
            return t.weight
        }
        self.config = config
        wordEmbeddings = try load("embeddings.word_embeddings.weight", [config.vocabularySize, h])
        positionEmbeddings = try load("embeddings.position_embeddings.weight", [config.maxPositions, h])
        tokenTypeEmbeddings = try load("embeddings.token_type_embeddings.weight", [config.typeVocabularySize, h])
        embeddingNormWeight = try load("embeddings.LayerNorm.weight", [h])
        embeddingNormBias = try load("embeddings.LayerNorm.bias", [h])
        var layers: [Layer] = []
        for i in 0..<config.layerCount {
            let p = "encoder.layer.\(i)."
            let q = try load(p + "attention.self.query.weight", [h, h])
            let k = try load(p + "attention.self.key.weight", [h, h])
            let v = try load(p + "attention.self.value.weight", [h, h])
            let qb = try load(p + "attention.self.query.bias", [h])
            let kb = try load(p + "attention.self.key.bias", [h])
            let vb = try load(p + "attention.self.value.bias", [h])
            layers.append(
                Layer(
                    qkvWeight: .concatenated([q, k, v]), qkvBias: .concatenated([qb, kb, vb]),
                    attentionOutWeight: try load(p + "attention.output.dense.weight", [h, h]),
                    attentionOutBias: try load(p + "attention.output.dense.bias", [h]),
                    attentionNormWeight: try load(p + "attention.output.LayerNorm.weight", [h]),
                    attentionNormBias: try load(p + "attention.output.LayerNorm.bias", [h]),
                    intermediateWeight: try load(p + "intermediate.dense.weight", [inter, h]),
                    intermediateBias: try load(p + "intermediate.dense.bias", [inter]),
                    outputWeight: try load(p + "output.dense.weight", [h, inter]),
                    outputBias: try load(p + "output.dense.bias", [h]),
                    outputNormWeight: try load(p + "output.LayerNorm.weight", [h]),
                    outputNormBias: try load(p + "output.LayerNorm.bias", [h])))
        }
        self.layers = layers
    }

    /// Names of the tensors the encoder reads (unprefixed), in load order.
    public static func tensorNames(layerCount: Int) -> [String] {
        var names = [
            "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias",
        ]
        for i in 0..<layerCount {
            for s in [
                "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm",
            ] {
                names.append("encoder.layer.\(i).\(s).weight")
                names.append("encoder.layer.\(i).\(s).bias")
            }
        }
        return names
    }

    public var hiddenSize: Int { config.hiddenSize }
    public var layerCount: Int { config.layerCount }
    public var maxSequenceLength: Int { config.maxSequenceLength }
    public var vocabularySize: Int { config.vocabularySize }

    /// Masked mean-pooled last hidden states, `batch.count × hiddenSize` row-major.
    public func embed(_ batch: TokenBatch) -> [Float] {
        withHiddenStates(batch) { MeanPooling().pool($0) }
    }

    /// The last hidden states of `batch`'s real tokens, handed to `body` (see `EncoderModel`).
    ///
    /// Token ids must be below the vocabulary size and sequences no longer than `maxSequenceLength`
    /// (the tokenizer's truncation guarantees both for this model's own vocabulary).
    public func withHiddenStates<R>(_ batch: TokenBatch, _ body: (HiddenStates) throws -> R) rethrows -> R {
        let h = config.hiddenSize
        let (tokenIDs, positions, starts, lengths) = packTokens(batch, order: Array(0..<batch.count))
        return try withWorkspace { workspace in
            workspace.reserve(tokens: tokenIDs.count, hidden: h, intermediate: config.intermediateSize)
            forward(tokenIDs: tokenIDs, positions: positions, starts: starts, lengths: lengths, workspace: &workspace)
            return try workspace.x.withUnsafeBufferPointer { hidden in
                let rows = UnsafeBufferPointer(rebasing: hidden[0..<(tokenIDs.count * h)])
                return try body(HiddenStates(values: rows, starts: starts, lengths: lengths, hiddenSize: h))
            }
        }
    }

    /// Masked mean-pooled hidden states of `layers` (0: the embedding output, `layerCount`: the last layer, what
    /// `embed` pools), per sequence the layers' rows one after another: `batch.count × (layers.count · hiddenSize)`.
    public func poolLayers(_ batch: TokenBatch, layers wanted: [Int]) -> [Float] {
        precondition(wanted.allSatisfy { (0...config.layerCount).contains($0) }, "layers checked by the caller")
        let h = config.hiddenSize
        let width = wanted.count * h
        let (tokenIDs, positions, starts, lengths) = packTokens(batch, order: Array(0..<batch.count))
        var out = [Float](repeating: 0, count: batch.count * width)
        withWorkspace { workspace in
            workspace.reserve(tokens: tokenIDs.count, hidden: h, intermediate: config.intermediateSize)
            forward(tokenIDs: tokenIDs, positions: positions, starts: starts, lengths: lengths, workspace: &workspace) {
                index, x in
                for (slot, l) in wanted.enumerated() where l == index {
                    let states = HiddenStates(
                        values: UnsafeBufferPointer(x), starts: starts, lengths: lengths, hiddenSize: h)
                    let pooled = MeanPooling().pool(states)
                    for b in 0..<batch.count {
                        out.replaceSubrange(
                            (b * width + slot * h)..<(b * width + slot * h + h), with: pooled[(b * h)..<(b * h + h)])
                    }
                }
            }
        }
        return out
    }

    /// The real tokens of `batch` packed into rows, sequences in `order`: token ids, position ids, and per
    /// sequence of the batch (in batch order) its first row and length.
    func packTokens(_ batch: TokenBatch, order: [Int]) -> (ids: [Int], positions: [Int], starts: [Int], lengths: [Int])
    {
        let offset = config.positionOffset
        var lengths = [Int](repeating: 0, count: batch.count)
        var starts = [Int](repeating: 0, count: batch.count)
        var tokenIDs: [Int] = []
        var positions: [Int] = []
        for b in order {
            starts[b] = tokenIDs.count
            var n = 0
            var position = offset
            for c in 0..<batch.length where batch.mask[b * batch.length + c] != 0 {
                let id = Int(batch.ids[b * batch.length + c])
                precondition(id >= 0 && id < config.vocabularySize, "token id \(id) outside the vocabulary")
                tokenIDs.append(id)
                if let padding = config.positionPaddingID, id == padding {
                    positions.append(padding)
                } else {
                    precondition(position < config.maxPositions, "sequence longer than max_position_embeddings")
                    positions.append(position)
                    position += 1
                }
                n += 1
            }
            lengths[b] = n
        }
        return (tokenIDs, positions, starts, lengths)
    }

    /// The last hidden state of packed tokens, left in the first `tokens × hiddenSize` values of `workspace.x`
    /// (reserved for the tokens by the caller); sequence `b` occupies rows `starts[b] ..< starts[b] + lengths[b]`.
    ///
    /// - Parameter tap: called with the index and the hidden states after the embedding LayerNorm (0) and after
    ///   each layer (1 … layerCount), when given.
    func forward(
        tokenIDs: [Int], positions: [Int], starts: [Int], lengths: [Int], workspace: inout Workspace,
        tap: ((Int, UnsafeMutableBufferPointer<Float>) -> Void)? = nil
    ) {
        let h = config.hiddenSize
        let t = tokenIDs.count
        let heads = config.headCount
        let d = config.headSize
        let eps = config.layerNormEps
        let scale = 1 / Float(d).squareRoot()
        guard t > 0 else { return }

        workspace.x.withUnsafeMutableBufferPointer { xAll in
            workspace.qkv.withUnsafeMutableBufferPointer { qAll in
                workspace.ctx.withUnsafeMutableBufferPointer { cAll in
                    workspace.mid.withUnsafeMutableBufferPointer { mAll in
                        let xb = UnsafeMutableBufferPointer(rebasing: xAll[0..<(t * h)])
                        // Embeddings: word + position + token type 0, then LayerNorm.
                        wordEmbeddings.withUnsafeBufferPointer { word in
                            positionEmbeddings.withUnsafeBufferPointer { position in
                                tokenTypeEmbeddings.withUnsafeBufferPointer { tokenType in
                                    for r in 0..<t {
                                        let w = tokenIDs[r] * h
                                        let p = positions[r] * h
                                        for j in 0..<h { xb[r * h + j] = word[w + j] + position[p + j] + tokenType[j] }
                                    }
                                }
                            }
                        }
                        embeddingNormWeight.withUnsafeBufferPointer { g in
                            embeddingNormBias.withUnsafeBufferPointer { b in
                                EncoderKernels.layerNorm(xb, rows: t, gamma: g, beta: b, eps: eps)
                            }
                        }
                        tap?(0, xb)
                        for (index, layer) in layers.enumerated() {
                            defer { tap?(index + 1, xb) }
                            runLayer(
                                layer, x: xb, qkv: UnsafeMutableBufferPointer(rebasing: qAll[0..<(t * 3 * h)]),
                                ctx: UnsafeMutableBufferPointer(rebasing: cAll[0..<(t * h)]),
                                mid: UnsafeMutableBufferPointer(rebasing: mAll[0..<(t * config.intermediateSize)]),
                                tokens: t, starts: starts, lengths: lengths, heads: heads, headSize: d, scale: scale,
                                eps: eps)
                        }
                    }
                }
            }
        }
    }

    func runLayer(
        _ layer: Layer, x: UnsafeMutableBufferPointer<Float>, qkv: UnsafeMutableBufferPointer<Float>,
        ctx: UnsafeMutableBufferPointer<Float>, mid: UnsafeMutableBufferPointer<Float>, tokens t: Int, starts: [Int],
        lengths: [Int], heads: Int,
        headSize d: Int, scale: Float, eps: Float
    ) {
        let h = config.hiddenSize
        let inter = config.intermediateSize
        guard t > 0 else { return }
        let xp = x.start
        // Q, K, V for every token in one product; attention adds their bias where it reads them.
        layer.qkvWeight.withUnsafeBufferPointer {
            EncoderKernels.linear(xp, rows: t, inner: h, weight: $0.start, out: 3 * h, into: qkv.start)
        }
        layer.qkvBias.withUnsafeBufferPointer {
            EncoderKernels.attention(
                qkv: qkv.start, bias: $0.start, ctx: ctx.start, starts: starts, lengths: lengths,
                heads: heads, headSize: d, scale: scale)
        }
        // Attention output added to the residual stream x by the product itself; its bias is added by the
        // LayerNorm, which normalizes x in place.
        layer.attentionOutWeight.withUnsafeBufferPointer {
            EncoderKernels.linear(ctx.start, rows: t, inner: h, weight: $0.start, out: h, into: xp, accumulate: true)
        }
        layer.attentionNormWeight.withUnsafeBufferPointer { g in
            layer.attentionNormBias.withUnsafeBufferPointer { b in
                layer.attentionOutBias.withUnsafeBufferPointer {
                    EncoderKernels.layerNorm(x, rows: t, gamma: g, beta: b, eps: eps, bias: $0)
                }
            }
        }
        // Feed-forward: x + GELU(x W1ᵀ + b1) W2ᵀ + b2, LayerNorm; b1 is added by GELU, b2 by the LayerNorm.
        layer.intermediateWeight.withUnsafeBufferPointer {
            EncoderKernels.linear(xp, rows: t, inner: h, weight: $0.start, out: inter, into: mid.start)
        }
        layer.intermediateBias.withUnsafeBufferPointer { EncoderKernels.gelu(mid, bias: $0) }
        layer.outputWeight.withUnsafeBufferPointer {
            EncoderKernels.linear(
                mid.start, rows: t, inner: inter, weight: $0.start, out: h, into: xp, accumulate: true)
        }
        layer.outputNormWeight.withUnsafeBufferPointer { g in
            layer.outputNormBias.withUnsafeBufferPointer { b in
                layer.outputBias.withUnsafeBufferPointer {
                    EncoderKernels.layerNorm(x, rows: t, gamma: g, beta: b, eps: eps, bias: $0)
                }
            }
        }
    }
}
