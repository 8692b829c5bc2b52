import COpenBLAS
import CheckpointIO
import Foundation

/// The hidden states a llama-family decoder (`LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`) feeds
/// each of its layers, for mergekit-moe's `hidden` gate modes (`get_hidden_states` over `output.hidden_states[:-1]`):
/// per prompt the state of its last token (`hidden`, `hidden_last`) or the mean over its tokens (`hidden_avg`),
/// then the mean over the prompts; one row of `hidden` values per layer.
///
/// The forward pass is the transformers one in float32, one prompt at a time (no padding), one layer's weights in
/// memory at a time: every prompt goes through layer l before layer l + 1 is read. mergekit runs the model in
/// bfloat16 on a padded batch, so its rows differ from these by bf16 rounding, and for `hidden_avg` on prompts of
/// unequal length also by the pad positions it averages in.
struct DecoderHiddenStates {
    enum Reduction { case lastToken, mean }

    struct Shape {
        var layers: Int
        var hidden: Int
        var heads: Int
        var kvHeads: Int
        var headDim: Int
        var intermediate: Int
        var epsilon: Float
        /// Rotary inverse frequencies (headDim / 2), scaling applied.
        var inverseFrequencies: [Float]
        var qkvBias: Bool
    }

    /// The shape of the decoder `config.json` describes; anything this forward pass does not compute is refused.
    static func shape(config c: [String: Any], file: String) throws(MergeError) -> Shape {
        func int(_ key: String) throws(MergeError) -> Int {
            guard let v = c[key] as? Int, v > 0 else {
                throw MergeError(
                    .invalidInputs,
                    "\(file): config.json key '\(key)' is \(c[key] ?? "missing"); expected a positive integer.")
            }
            return v
        }
        let type = c["model_type"] as? String ?? "(none)"
        guard ["llama", "mistral", "qwen2"].contains(type) else {
            throw MergeError(
                .unsupported,
                "\(file): model_type '\(type)'; the hidden-state forward pass runs llama, mistral and qwen2 decoders.")
        }
        let act = c["hidden_act"] as? String ?? "silu"
        guard act == "silu" else {
            throw MergeError(.unsupported, "\(file): hidden_act '\(act)'; the forward pass computes SwiGLU with silu.")
        }
        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        let kvHeads = (c["num_key_value_heads"] as? Int) ?? heads
        let headDim = (c["head_dim"] as? Int) ?? hidden / heads
        guard kvHeads > 0, heads % kvHeads == 0, headDim > 0, headDim % 2 == 0 else {
            throw MergeError(
                .invalidInputs,
                "\(file): \(heads) heads, \(kvHeads) key-value heads, head size \(headDim) do not make an attention.")
        }
        // transformers 5 writes rope_parameters; earlier versions rope_theta and rope_scaling.
        let parameters = c["rope_parameters"] as? [String: Any]
        let scaling = (c["rope_scaling"] as? [String: Any]) ?? parameters
        let theta = (c["rope_theta"] as? Double) ?? (parameters?["rope_theta"] as? Double) ?? 10_000
        var inverse = stride(from: 0, to: headDim, by: 2).map { Float(1 / pow(theta, Double($0) / Double(headDim))) }
        let kind = (scaling?["rope_type"] ?? scaling?["type"]) as? String ?? "default"
        switch kind {
        case "default": break
        case "linear":
            guard let f = scaling?["factor"] as? Double, f > 0 else {
                throw MergeError(.invalidInputs, "\(file): linear rope scaling without a positive 'factor'.")
            }
            inverse = inverse.map { $0 / Float(f) }
        case "llama3":
            guard let f = scaling?["factor"] as? Double, let low = scaling?["low_freq_factor"] as? Double,
                let high = scaling?["high_freq_factor"] as? Double, high > low,
                let original = scaling?["original_max_position_embeddings"] as? Int
            else {
                throw MergeError(
                    .invalidInputs,
                    "\(file): llama3 rope scaling needs factor, low_freq_factor < high_freq_factor and original_max_position_embeddings."
                )
            }
            let divisors = GGUFRopeScaling.llama3Divisors(
                theta: theta, headDim: headDim, factor: f, low: low, high: high, original: original)
            inverse = zip(inverse, divisors).map { Float(Double($0) / $1) }
        default:
            throw MergeError(
                .unsupported,
                "\(file): rope scaling '\(kind)'; the forward pass computes default, linear and llama3 rope.")
        }
        return Shape(
            layers: try int("num_hidden_layers"), hidden: hidden, heads: heads, kvHeads: kvHeads, headDim: headDim,
            intermediate: try int("intermediate_size"),
            epsilon: Float((c["rms_norm_eps"] as? Double) ?? 1e-6), inverseFrequencies: inverse,
            qkvBias: type == "qwen2" || (c["attention_bias"] as? Bool ?? false))
    }

    /// Per layer (the input of each) and prompt, `reduction` over the prompt's tokens' hidden states:
    /// `[layer][prompt]` rows of `hidden` values.
    static func compute(
        base: ModelFolder, shape s: Shape, prompts: [[Int32]], reduction: Reduction
    ) throws(MergeError) -> [[[Float]]] {
        func load(_ name: String, _ count: Int) throws(MergeError) -> [Float] {
            let view = try checkpoint { () throws(CheckpointError) in try base.tensor(name) }
            defer { view.release() }
            guard view.elementCount == count else {
                throw MergeError(
                    .shapeMismatch,
                    "\(base.path): tensor '\(name)' has shape \(view.shape); expected \(count) elements for this config."
                )
            }
            return try checkpoint { () throws(CheckpointError) in try view.floats() }
        }
        let h = s.hidden
        let embedding = try checkpoint { () throws(CheckpointError) in try base.tensor("model.embed_tokens.weight") }
        defer { embedding.release() }
        guard embedding.shape.count == 2, embedding.shape[1] == h else {
            throw MergeError(
                .shapeMismatch,
                "\(base.path): tensor 'model.embed_tokens.weight' has shape \(embedding.shape); expected [vocab, \(h)]."
            )
        }
        let rowBytes = h * embedding.dtype.bitWidth / 8
        var states: [[Float]] = []
        for (i, ids) in prompts.enumerated() {
            guard !ids.isEmpty else {
                throw MergeError(.invalidInputs, "prompt \(i) has no tokens; a hidden state needs at least one.")
            }
            var x = [Float](repeating: 0, count: ids.count * h)
            for (t, id) in ids.enumerated() {
                guard id >= 0, Int(id) < embedding.shape[0] else {
                    throw MergeError(
                        .invalidInputs,
                        "prompt \(i) gives token id \(id), outside the \(embedding.shape[0]) rows of 'model.embed_tokens.weight' (\(base.path))."
                    )
                }
                let start = Int(id) * rowBytes
                x.withUnsafeMutableBufferPointer { dst in
                    DTypeConversion.toFloat(
                        UnsafeRawBufferPointer(rebasing: embedding.bytes[start..<(start + rowBytes)]),
                        dtype: embedding.dtype, into: UnsafeMutableBufferPointer(rebasing: dst[(t * h)..<((t + 1) * h)])
                    )
                }
            }
            states.append(x)
        }
        var out: [[[Float]]] = [reduce(states, prompts: prompts, hidden: h, reduction)]
        let q = s.heads * s.headDim
        let kv = s.kvHeads * s.headDim
        for layer in 0..<(s.layers - 1) {
            let p = "model.layers.\(layer)."
            let inNorm = try load(p + "input_layernorm.weight", h)
            let wq = try load(p + "self_attn.q_proj.weight", q * h)
            let wk = try load(p + "self_attn.k_proj.weight", kv * h)
            let wv = try load(p + "self_attn.v_proj.weight", kv * h)
            let wo = try load(p + "self_attn.o_proj.weight", h * q)
            let bq = s.qkvBias ? try load(p + "self_attn.q_proj.bias", q) : nil
            let bk = s.qkvBias ? try load(p + "self_attn.k_proj.bias", kv) : nil
            let bv = s.qkvBias ? try load(p + "self_attn.v_proj.bias", kv) : nil
            let postNorm = try load(p + "post_attention_layernorm.weight", h)
            let wg = try load(p + "mlp.gate_proj.weight", s.intermediate * h)
            let wu = try load(p + "mlp.up_proj.weight", s.intermediate * h)
            let wd = try load(p + "mlp.down_proj.weight", h * s.intermediate)
            for i in states.indices {
                let n = prompts[i].count
                var normed = rmsNorm(states[i], weight: inNorm, rows: n, width: h, epsilon: s.epsilon)
                var qs = linear(normed, wq, bq, rows: n, input: h, output: q)
                var ks = linear(normed, wk, bk, rows: n, input: h, output: kv)
                let vs = linear(normed, wv, bv, rows: n, input: h, output: kv)
                rotate(&qs, rows: n, heads: s.heads, headDim: s.headDim, inverse: s.inverseFrequencies)
                rotate(&ks, rows: n, heads: s.kvHeads, headDim: s.headDim, inverse: s.inverseFrequencies)
                let attended = attention(qs, ks, vs, rows: n, shape: s)
                let o = linear(attended, wo, nil, rows: n, input: q, output: h)
                for k in states[i].indices { states[i][k] += o[k] }
                normed = rmsNorm(states[i], weight: postNorm, rows: n, width: h, epsilon: s.epsilon)
                var gate = linear(normed, wg, nil, rows: n, input: h, output: s.intermediate)
                let up = linear(normed, wu, nil, rows: n, input: h, output: s.intermediate)
                for k in gate.indices { gate[k] = gate[k] / (1 + exp(-gate[k])) * up[k] }
                let down = linear(gate, wd, nil, rows: n, input: s.intermediate, output: h)
                for k in states[i].indices { states[i][k] += down[k] }
            }
            out.append(reduce(states, prompts: prompts, hidden: h, reduction))
        }
        return out
    }

    /// mergekit's `hidden_states[:, :, -1, :]` or `.sum(dim=2) / seq_len`, per prompt.
    static func reduce(_ states: [[Float]], prompts: [[Int32]], hidden h: Int, _ r: Reduction) -> [[Float]] {
        zip(states, prompts).map { x, ids in
            let n = ids.count
            switch r {
            case .lastToken: return Array(x[((n - 1) * h)..<(n * h)])
            case .mean:
                var sum = [Float](repeating: 0, count: h)
                for t in 0..<n { for k in 0..<h { sum[k] += x[t * h + k] } }
                return sum.map { $0 / Float(n) }
            }
        }
    }

    /// `weight * x / sqrt(mean(x²) + ε)` per row (LlamaRMSNorm, in float32).
    static func rmsNorm(_ x: [Float], weight: [Float], rows: Int, width: Int, epsilon: Float) -> [Float] {
        var out = x
        for r in 0..<rows {
            var ss: Float = 0
            for k in 0..<width { ss += x[r * width + k] * x[r * width + k] }
            let scale = 1 / (ss / Float(width) + epsilon).squareRoot()
            for k in 0..<width { out[r * width + k] = weight[k] * (x[r * width + k] * scale) }
        }
        return out
    }

    /// `x · Wᵀ + b` for W stored [output, input] row-major.
    static func linear(_ x: [Float], _ w: [Float], _ b: [Float]?, rows: Int, input: Int, output: Int) -> [Float] {
        var y = [Float](repeating: 0, count: rows * output)
        cblas_sgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(output), Int32(input), 1, x, Int32(input), w,
            Int32(input), 0, &y, Int32(output))
        if let b { for r in 0..<rows { for k in 0..<output { y[r * output + k] += b[k] } } }
        return y
    }

    /// Rotary embedding in transformers' layout (`rotate_half`: dimension i pairs with i + headDim/2), position t.
    static func rotate(_ x: inout [Float], rows: Int, heads: Int, headDim d: Int, inverse: [Float]) {
        let half = d / 2
        for t in 0..<rows {
            for i in 0..<half {
                let angle = Float(t) * inverse[i]
                let c = cos(angle)
                let s = sin(angle)
                for hd in 0..<heads {
                    let base = t * heads * d + hd * d
                    let a = x[base + i]
                    let b = x[base + i + half]
                    x[base + i] = a * c - b * s
                    x[base + i + half] = b * c + a * s
                }
            }
        }
    }

    /// Causal softmax attention, each query head on its key-value group.
    static func attention(_ q: [Float], _ k: [Float], _ v: [Float], rows n: Int, shape s: Shape) -> [Float] {
        let d = s.headDim
        let group = s.heads / s.kvHeads
        let scale = 1 / Float(d).squareRoot()
        var out = [Float](repeating: 0, count: n * s.heads * d)
        var scores = [Float](repeating: 0, count: n)
        for head in 0..<s.heads {
            let kvHead = head / group
            for t in 0..<n {
                var top = -Float.infinity
                for u in 0...t {
                    var dot: Float = 0
                    for j in 0..<d { dot += q[(t * s.heads + head) * d + j] * k[(u * s.kvHeads + kvHead) * d + j] }
                    scores[u] = dot * scale
                    top = max(top, scores[u])
                }
                var total: Float = 0
                for u in 0...t {
                    scores[u] = exp(scores[u] - top)
                    total += scores[u]
                }
                for u in 0...t {
                    let p = scores[u] / total
                    for j in 0..<d { out[(t * s.heads + head) * d + j] += p * v[(u * s.kvHeads + kvHead) * d + j] }
                }
            }
        }
        return out
    }
}
