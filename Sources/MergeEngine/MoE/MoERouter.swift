import CheckpointIO
import Foundation

/// Turns prompts into token ids for `cheap_embed`; the caller supplies it (the byte-level BPE tokenizer lives in
/// Evaluation, which MergeEngine does not import).
public struct PromptTokenizer: Sendable {
    public let encode: @Sendable (String) -> [Int32]

    /// - Parameter encode: ids of a text without the post-processor's special tokens, added tokens (`<s>`)
    ///   recognised in the text (transformers' `add_special_tokens=False`).
    public init(encode: @escaping @Sendable (String) -> [Int32]) { self.encode = encode }
}

/// Router rows as mergekit-moe computes them (mergekit/moe/router.py `get_gate_params`): a tensor
/// (layers, gates, hidden), row-major, in float32.
enum MoERouter {
    /// `torch.randn((layers, gates, hidden))` from a generator seeded with `seed`.
    static func random(layers: Int, gates: Int, hidden: Int, seed: UInt64) -> [Float] {
        var g = TorchGenerator(seed: seed)
        return g.randn(layers * gates * hidden)
    }

    /// `torch.rand((layers, gates, hidden)) * 2 * scale - scale` with `scale = sqrt(1 / hidden)`, each step rounded
    /// to float32 as torch rounds it.
    static func uniformRandom(layers: Int, gates: Int, hidden: Int, seed: UInt64) -> [Float] {
        var g = TorchGenerator(seed: seed)
        let scale = Float((1.0 / Double(hidden)).squareRoot())
        return g.rand(layers * gates * hidden).map { $0 * 2 * scale - scale }
    }

    /// `cheap_embed`: for each gate, the sum of the token embeddings of every `bos + prompt` (added tokens
    /// recognised, no other special tokens), normalised; minus the same for the negative prompts; normalised again.
    /// The row is the same for every layer.
    ///
    /// - Throws: `.invalidInputs` when a prompt yields a token id outside the embedding.
    static func cheapEmbed(
        gates: [MoEExpert], layers: Int, embedding: TensorView, tokenizer: PromptTokenizer, bos: String, file: String
    ) throws(MergeError) -> [Float] {
        guard embedding.shape.count == 2, embedding.dtype.isConvertibleFloat else {
            throw MergeError(
                .invalidInputs,
                "\(embedding.file): tensor '\(embedding.name)' is \(embedding.dtype.rawValue) \(embedding.shape); cheap_embed needs a 2-D float embedding."
            )
        }
        let rows = embedding.shape[0]
        let hidden = embedding.shape[1]
        let rowBytes = hidden * embedding.dtype.bitWidth / 8
        let bytes = embedding.bytes
        var row = [Float](repeating: 0, count: hidden)

        /// Σ over prompts of Σ over their tokens, normalised (`get_cheap_embedding`).
        func embedded(_ prompts: [String], _ which: String, _ expert: Int) throws(MergeError) -> [Float] {
            var total = [Float](repeating: 0, count: hidden)
            for p in prompts {
                let ids = tokenizer.encode(bos + p)
                var sum = [Float](repeating: 0, count: hidden)
                for id in ids {
                    guard id >= 0, Int(id) < rows else {
                        throw MergeError(
                            .invalidInputs,
                            "\(file): a \(which) prompt of expert \(expert) gives token id \(id), outside the \(rows) rows of '\(embedding.name)' (\(embedding.file))."
                        )
                    }
                    let start = Int(id) * rowBytes
                    row.withUnsafeMutableBufferPointer { dst in
                        DTypeConversion.toFloat(
                            UnsafeRawBufferPointer(rebasing: bytes[start..<(start + rowBytes)]), dtype: embedding.dtype,
                            into: dst)
                    }
                    for k in 0..<hidden { sum[k] += row[k] }
                }
                for k in 0..<hidden { total[k] += sum[k] }
            }
            return normalized(total)
        }

        var out = [Float]()
        var perGate: [[Float]] = []
        for (i, e) in gates.enumerated() {
            var v = try embedded(e.positivePrompts, "positive", i)
            if !e.negativePrompts.isEmpty {
                let n = try embedded(e.negativePrompts, "negative", i)
                for k in 0..<hidden { v[k] -= n[k] }
            }
            perGate.append(normalized(v))
        }
        out.reserveCapacity(layers * gates.count * hidden)
        for _ in 0..<layers { for g in perGate { out += g } }
        return out
    }

    /// `hidden` / `hidden_avg`: for each gate and layer, the mean over its positive prompts (`bos + prompt`) of the
    /// base's hidden state entering that layer (last token, or mean over tokens), minus the same for the negative
    /// prompts, normalised (`get_hidden_states`, in float32; see `DecoderHiddenStates`).
    static func hiddenStates(
        gates: [MoEExpert], layers: Int, base: ModelFolder, tokenizer: PromptTokenizer, bos: String,
        reduction: DecoderHiddenStates.Reduction, file: String
    ) throws(MergeError) -> [Float] {
        let config = try checkpoint { () throws(CheckpointError) in try base.config() } ?? [:]
        let shape = try DecoderHiddenStates.shape(config: config, file: base.path)
        guard shape.layers == layers else {
            throw MergeError(
                .shapeMismatch, "\(base.path): config.json has \(shape.layers) layers; the MoE has \(layers).")
        }
        // Every prompt of every gate in one pass, so each layer's weights are read once.
        var prompts: [[Int32]] = []
        var groups: [(positive: Range<Int>, negative: Range<Int>)] = []
        for e in gates {
            let p = prompts.count
            prompts += e.positivePrompts.map { tokenizer.encode(bos + $0) }
            let n = prompts.count
            prompts += e.negativePrompts.map { tokenizer.encode(bos + $0) }
            groups.append((p..<n, n..<prompts.count))
        }
        let states = try DecoderHiddenStates.compute(
            base: base, shape: shape, prompts: prompts, reduction: reduction)
        let h = shape.hidden
        func mean(_ rows: ArraySlice<[Float]>) -> [Float] {
            var total = [Float](repeating: 0, count: h)
            for r in rows { for k in 0..<h { total[k] += r[k] } }
            return total.map { $0 / Float(rows.count) }
        }
        var out: [Float] = []
        out.reserveCapacity(layers * gates.count * h)
        for layer in 0..<layers {
            for g in groups {
                var v = mean(states[layer][g.positive])
                if !g.negative.isEmpty {
                    let n = mean(states[layer][g.negative])
                    for k in 0..<h { v[k] -= n[k] }
                }
                out += normalized(v)
            }
        }
        return out
    }

    /// `v / max(‖v‖₂, 1e-8)`.
    static func normalized(_ v: [Float]) -> [Float] {
        var ss: Double = 0
        for x in v { ss += Double(x) * Double(x) }
        let norm = max(Float(ss.squareRoot()), 1e-8)
        return v.map { $0 / norm }
    }

    /// The `bos_token` of a model folder's tokenizer (`tokenizer_config.json`, then `special_tokens_map.json`), a
    /// string or `{content: ...}`; "" when neither names one (mergekit's `tokenizer.bos_token or ""`).
    static func bosToken(folder: URL) -> String {
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent(name).path),
                let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
            else { continue }
            if let s = obj["bos_token"] as? String { return s }
            if let d = obj["bos_token"] as? [String: Any], let s = d["content"] as? String { return s }
        }
        return ""
    }
}
