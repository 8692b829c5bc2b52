import CheckpointIO
import Foundation
import Synchronization

/// Inference of a BERT-family encoder (all-MiniLM-L6-v2 and other `BertModel` checkpoints) in F32, producing the
/// masked mean of the last hidden state per text: the sentence feature sentence-transformers returns for this
/// model before normalization.
///
/// Padding is never computed: the valid tokens of a batch are packed into one `tokens × hidden` matrix, so
/// every linear layer is a single OpenBLAS product over real tokens, and attention runs per sequence over its own
/// tokens only. That is exactly what the reference computes for the unpadded positions (a padded key gets weight
/// `exp(-3.4e38) = 0` there), and padded positions never reach the pooled output.
public final class BertEncoder: Sendable {
    public let config: BertConfig
    let wordEmbeddings: [Float]
    let positionEmbeddings: [Float]
    let tokenTypeEmbeddings: [Float]
    let embeddingNormWeight: [Float]
    let embeddingNormBias: [Float]
    let layers: [Layer]
    /// Activation buffers of finished forward passes, reused by the next ones (see `Workspace`).
    let workspaces = Mutex<[Workspace]>([])

    /// One transformer layer's weights; query, key and value are stacked into one `3H × H` matrix so that a single
    /// product computes all three.
    struct Layer: Sendable {
        var qkvWeight: [Float]
        var qkvBias: [Float]
        var attentionOutWeight: [Float]
        var attentionOutBias: [Float]
        var attentionNormWeight: [Float]
        var attentionNormBias: [Float]
        var intermediateWeight: [Float]
        var intermediateBias: [Float]
        var outputWeight: [Float]
        var outputBias: [Float]
        var outputNormWeight: [Float]
        var outputNormBias: [Float]
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

    /// Loads a Hugging Face folder (`config.json` + safetensors, single or sharded) or a bare safetensors file whose
    /// folder has a `config.json`. Tensor names may carry a `bert.` prefix (as `BertFor…` checkpoints do).
    ///
    /// - Throws: `EvaluationError` naming the file and tensor for a missing config, a missing tensor or a shape
    ///   that disagrees with the config; `.checkpoint` wrapping an invalid safetensors file.
    public convenience init(path: String) throws(EvaluationError) {
        let model: ModelFolder
        do {
            model = try ModelFolder(path: path)
        } catch {
            throw EvaluationError(.checkpoint, error.message, cause: error)
        }
        try self.init(model: model)
    }

    public convenience init(model: ModelFolder) throws(EvaluationError) {
        let configPath = model.directory.appendingPathComponent("config.json").path
        let json: [String: Any]?
        do {
            json = try model.config()
        } catch {
            throw EvaluationError(.invalidConfig, error.message, cause: error)
        }
        guard let json else {
            throw EvaluationError(.invalidConfig, "\(configPath): no config.json next to the weights of \(model.path).")
        }
        let config = try BertConfig(json: json, file: configPath)
        let prefix = model.contains("embeddings.word_embeddings.weight") ? "" : "bert."
        try self.init(config: config, source: model.path) { (name) throws(EvaluationError) -> (shape: [Int], values: [Float])? in
            guard model.contains(prefix + name) else { return nil }
            do throws(CheckpointError) {
                let view = try model.tensor(prefix + name)
                return (view.shape, try view.floats())
            } catch {
                throw EvaluationError(.checkpoint, error.message, cause: error)
            }
        }
    }

    /// Builds an encoder from tensors supplied by name (unprefixed `BertModel` names), for example a base model
    /// with task switches applied in memory.
    ///
    /// - Parameters:
    ///   - source: names the model in error messages.
    ///   - tensor: returns a tensor's shape and values, or nil when the model has no such tensor.
    public init(
        config: BertConfig, source: String,
        tensor: (String) throws(EvaluationError) -> (shape: [Int], values: [Float])?
    ) throws(EvaluationError) {
        let h = config.hiddenSize
        let inter = config.intermediateSize
        func load(_ name: String, _ shape: [Int]) throws(EvaluationError) -> [Float] {
            guard let t = try tensor(name) else {
                throw EvaluationError(.missingTensor, "\(source): the model has no tensor '\(name)', which a BERT encoder needs.")
            }
            guard t.shape == shape, t.values.count == shape.reduce(1, *) else {
                throw EvaluationError(
                    .shapeMismatch, "\(source): tensor '\(name)' has shape \(t.shape); config.json implies \(shape).")
            }
            return t.values
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
                    qkvWeight: q + k + v, qkvBias: qb + kb + vb,
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

    /// Masked mean-pooled last hidden states, `batch.count × hiddenSize` row-major.
    ///
    /// Token ids must be below the vocabulary size and sequences no longer than `max_position_embeddings`
    /// (the tokenizer's truncation guarantees both for this model's own vocabulary).
    public func embed(_ batch: TokenBatch) -> [Float] {
        let h = config.hiddenSize
        var lengths: [Int] = []
        var starts: [Int] = []
        var tokenIDs: [Int] = []
        var positions: [Int] = []
        for b in 0..<batch.count {
            starts.append(tokenIDs.count)
            var n = 0
            for c in 0..<batch.length where batch.mask[b * batch.length + c] != 0 {
                let id = Int(batch.ids[b * batch.length + c])
                precondition(id >= 0 && id < config.vocabularySize, "token id \(id) outside the vocabulary")
                precondition(c < config.maxPositions, "sequence longer than max_position_embeddings")
                tokenIDs.append(id)
                positions.append(c)
                n += 1
            }
            lengths.append(n)
        }
        var workspace = workspaces.withLock { $0.popLast() } ?? Workspace()
        defer {
            let done = workspace
            workspaces.withLock { if $0.count < Self.keptWorkspaces { $0.append(done) } }
        }
        workspace.reserve(tokens: tokenIDs.count, hidden: h, intermediate: config.intermediateSize)
        forward(tokenIDs: tokenIDs, positions: positions, starts: starts, lengths: lengths, workspace: &workspace)
        var pooled = [Float](repeating: 0, count: batch.count * h)
        workspace.x.withUnsafeBufferPointer { hidden in
            for b in 0..<batch.count where lengths[b] > 0 {
                let inv = 1 / Float(lengths[b])
                for r in starts[b]..<(starts[b] + lengths[b]) {
                    for j in 0..<h { pooled[b * h + j] += hidden[r * h + j] }
                }
                for j in 0..<h { pooled[b * h + j] *= inv }
            }
        }
        return pooled
    }

    /// The last hidden state of packed tokens, left in the first `tokens × hiddenSize` values of `workspace.x`
    /// (reserved for the tokens by the caller); sequence `b` occupies rows `starts[b] ..< starts[b] + lengths[b]`.
    func forward(tokenIDs: [Int], positions: [Int], starts: [Int], lengths: [Int], workspace: inout Workspace) {
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
                        for r in 0..<t {
                            let w = tokenIDs[r] * h
                            let p = positions[r] * h
                            for j in 0..<h {
                                xb[r * h + j] = wordEmbeddings[w + j] + positionEmbeddings[p + j] + tokenTypeEmbeddings[j]
                            }
                        }
                        embeddingNormWeight.withUnsafeBufferPointer { g in
                            embeddingNormBias.withUnsafeBufferPointer { b in
                                EncoderKernels.layerNorm(xb, rows: t, gamma: g, beta: b, eps: eps)
                            }
                        }
                        for layer in layers {
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

    private func runLayer(
        _ layer: Layer, x: UnsafeMutableBufferPointer<Float>, qkv: UnsafeMutableBufferPointer<Float>,
        ctx: UnsafeMutableBufferPointer<Float>, mid: UnsafeMutableBufferPointer<Float>, tokens t: Int, starts: [Int], lengths: [Int], heads: Int,
        headSize d: Int, scale: Float, eps: Float
    ) {
        let h = config.hiddenSize
        let inter = config.intermediateSize
        guard t > 0 else { return }
        let xp = x.baseAddress!
        // Q, K, V for every token in one product; attention adds their bias where it reads them.
        layer.qkvWeight.withUnsafeBufferPointer {
            EncoderKernels.linear(xp, rows: t, inner: h, weight: $0.baseAddress!, out: 3 * h, into: qkv.baseAddress!)
        }
        layer.qkvBias.withUnsafeBufferPointer {
            EncoderKernels.attention(
                qkv: qkv.baseAddress!, bias: $0.baseAddress!, ctx: ctx.baseAddress!, starts: starts, lengths: lengths,
                heads: heads, headSize: d, scale: scale)
        }
        // Attention output added to the residual stream x by the product itself; its bias is added by the
        // LayerNorm, which normalizes x in place.
        layer.attentionOutWeight.withUnsafeBufferPointer {
            EncoderKernels.linear(ctx.baseAddress!, rows: t, inner: h, weight: $0.baseAddress!, out: h, into: xp, accumulate: true)
        }
        layer.attentionNormWeight.withUnsafeBufferPointer { g in
            layer.attentionNormBias.withUnsafeBufferPointer { b in
                layer.attentionOutBias.withUnsafeBufferPointer { EncoderKernels.layerNorm(x, rows: t, gamma: g, beta: b, eps: eps, bias: $0) }
            }
        }
        // Feed-forward: x + GELU(x W1ᵀ + b1) W2ᵀ + b2, LayerNorm; b1 is added by GELU, b2 by the LayerNorm.
        layer.intermediateWeight.withUnsafeBufferPointer {
            EncoderKernels.linear(xp, rows: t, inner: h, weight: $0.baseAddress!, out: inter, into: mid.baseAddress!)
        }
        layer.intermediateBias.withUnsafeBufferPointer { EncoderKernels.gelu(mid, bias: $0) }
        layer.outputWeight.withUnsafeBufferPointer {
            EncoderKernels.linear(mid.baseAddress!, rows: t, inner: inter, weight: $0.baseAddress!, out: h, into: xp, accumulate: true)
        }
        layer.outputNormWeight.withUnsafeBufferPointer { g in
            layer.outputNormBias.withUnsafeBufferPointer { b in
                layer.outputBias.withUnsafeBufferPointer { EncoderKernels.layerNorm(x, rows: t, gamma: g, beta: b, eps: eps, bias: $0) }
            }
        }
    }
}
