import CheckpointIO
import Foundation
import TensorKernels

/// mergekit's tokenizer merge (`tokenizer_source: base | union | MODEL`, `tokenizer: {source, tokens,
/// pad_to_multiple_of}`): the output vocabulary, each model's permutation into it, and the rows every model's
/// embedding-like tensor gets before the merge method runs (mergekit's `BuildTokenizer` + `PermutedVocabulary`).
///
/// Built at planning time from the tokenizer files only; the rows are gathered per tensor while merging, so
/// embeddings stay streamed tensor by tensor (one permuted copy per input of that one tensor).
public struct VocabularyAlignment: Sendable {
    /// Output token text by id (`count` = mergekit's `len(tokenizer.get_vocab())`).
    public let tokens: [String]
    /// Rows of every aligned tensor: `tokens.count`, rounded up to `pad_to_multiple_of`.
    public let rows: Int
    /// Per model reference: output id -> row in that model's tensor, or -1 when the model lacks the token.
    let permutations: [String: [Int]]
    /// Per model reference: that model's own token -> id (mergekit's `original_vocabs`, for `model_token` by text).
    let originalVocabs: [String: [String: Int]]
    let settings: [String: TokenEmbeddingSetting]
    /// The config's base model (rows a model lacks come from it when it has them).
    let baseModel: String?
    /// The output tokenizer and the folder its other files (tokenizer_config.json, ...) come from.
    let output: TokenizerVocabulary
    /// Output tensor names that are indexed by token on axis 0.
    public let tensorNames: Set<String>
    /// True when every model already has exactly the output's rows in order: tensors then merge unchanged.
    public let isIdentity: Bool
    let file: String

    /// Tensors mergekit's architecture files mark with `vocabulary_axis: 0` (every listed one uses axis 0).
    public static let vocabularyTensorNames: Set<String> = [
        "model.embed_tokens.weight", "lm_head.weight", "lm_head.bias", "embed_tokens.weight", "transformer.wte.weight",
        "model.language_model.embed_tokens.weight", "model.tok_embeddings.weight", "output.weight", "embed_out.weight",
        "gpt_neox.embed_in.weight", "backbone.embeddings.weight", "shared.weight", "encoder.embed_tokens.weight",
        "decoder.embed_tokens.weight", "embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight",
        "roberta.embeddings.word_embeddings.weight", "distilbert.embeddings.word_embeddings.weight",
        "cls.predictions.bias", "cls.predictions.decoder.weight", "lm_head.decoder.weight", "lm_head.linear.weight",
        "lm_head.linear.bias", "vocab_projector.weight", "vocab_projector.bias", "transformer.embd.wte.weight",
        "transformer.embedding.word_embeddings.weight", "transformer.word_embeddings.weight",
        "transformer.output_layer.weight",
    ]

    static func configVocabSize(_ folder: ModelFolder) -> Int? {
        guard let c = try? folder.config() else { return nil }
        return c["vocab_size"] as? Int ?? (c["text_config"] as? [String: Any])?["vocab_size"] as? Int
    }

    /// True when output tensor `name` is re-indexed into the output vocabulary.
    public func aligns(_ name: String) -> Bool { !isIdentity && tensorNames.contains(name) }

    /// Checks at planning time that every row a permutation reads exists in that model's tensor.
    func check(tensor name: String, model: String, shape: [Int]) throws(MergeError) {
        guard let p = permutations[model], let maxRow = p.max(), maxRow >= 0 else { return }
        guard let rowsIn = shape.first, maxRow < rowsIn else {
            throw MergeError(
                .shapeMismatch,
                "\(file): tensor '\(name)' of model '\(model)' has \(shape.first ?? 0) rows, but its tokenizer addresses row \(maxRow) (vocab_size in its config.json is larger than the embedding)."
            )
        }
    }

    /// One input of a token-indexed tensor: its rows read straight from the mapped file, converted per row.
    struct RowInput {
        let model: String
        let source: TensorSource
        let rows: Int
    }

    /// mergekit's `PermutedVocabulary.execute`: writes every input's rows in output order (`rows` x `width`) into
    /// `outputs`; rows a model lacks are filled by the donor rule: the configured source; else the only model that
    /// has the token; else the base when it has it; else the mean over the models that have it (zero when none
    /// has it). Padding rows get the mean of the real rows.
    func align(
        tensor name: String, inputs: [RowInput], width: Int, into outputs: [UnsafeMutableBufferPointer<Float>]
    ) throws(MergeError) {
        let models = inputs.map(\.model)
        let n = tokens.count
        var scratch = [Float](repeating: 0, count: width)
        func readRow(_ m: Int, _ r: Int) -> [Float] {
            scratch.withUnsafeMutableBufferPointer {
                inputs[m].source.read((r * width)..<((r + 1) * width), into: $0.start)
            }
            return scratch
        }
        let perms = models.map { permutations[$0] ?? [Int](repeating: -1, count: n) }

        // Rows that need a default, and the default for each (mergekit's assign_embedding_sources).
        var defaults: [Int: [Float]] = [:]
        for id in 0..<n {
            let token = tokens[id]
            let cfg = settings[token]
            let present = perms.map { $0[id] >= 0 }
            if !(cfg?.force ?? false) && !present.contains(false) { continue }
            var source = cfg?.source
            if cfg == nil {
                let holders = present.indices.filter { present[$0] }
                if holders.count == 1 {
                    source = .model(models[holders[0]])
                } else if holders.isEmpty {
                    source = .zero
                } else if let b = baseModel, let bi = models.firstIndex(of: b), perms[bi][id] >= 0 {
                    source = .model(b)
                } else {
                    // The mean over the models that have the token, summed in model order as mergekit does.
                    var sum = [Float](repeating: 0, count: width)
                    for m in holders { for (k, x) in readRow(m, perms[m][id]).enumerated() { sum[k] += x } }
                    defaults[id] = sum.map { $0 / Float(holders.count) }
                    continue
                }
            }
            let line = cfg?.line ?? 0
            guard let source else {
                throw MergeError(
                    .invalidConfig,
                    "\(file):\(line): token '\(token)' has no 'source', but tensor '\(name)' needs one (a model lacks the token or force is set)."
                )
            }
            switch source {
            case .zero:
                defaults[id] = [Float](repeating: 0, count: width)
            case .model(let m):
                guard let mi = models.firstIndex(of: m) else {
                    throw MergeError(
                        .missingTensor,
                        "\(file):\(line): token '\(token)' takes its row from '\(m)', which is not an input of tensor '\(name)'."
                    )
                }
                guard perms[mi][id] >= 0 else {
                    throw MergeError(
                        .invalidConfig,
                        "\(file):\(line): token '\(token)' takes its row from '\(m)', which does not have the token.")
                }
                defaults[id] = readRow(mi, perms[mi][id])
            case .modelToken(let m, let tokenID, let text):
                guard let mi = models.firstIndex(of: m) else {
                    throw MergeError(
                        .missingTensor,
                        "\(file):\(line): token '\(token)' takes its row from '\(m)', which is not an input of tensor '\(name)'."
                    )
                }
                var src = tokenID ?? -1
                if let text {
                    guard let j = originalVocabs[m]?[text] else {
                        throw MergeError(
                            .invalidConfig,
                            "\(file):\(line): token '\(text)' (source of '\(token)') is not in the vocabulary of '\(m)'."
                        )
                    }
                    src = j
                }
                guard src >= 0, src < inputs[mi].rows else {
                    throw MergeError(
                        .invalidConfig,
                        "\(file):\(line): token id \(src) (source of '\(token)') is out of range for '\(m)' (\(inputs[mi].rows) rows in '\(name)')."
                    )
                }
                defaults[id] = readRow(mi, src)
            }
        }

        for (m, out) in outputs.enumerated() {
            precondition(out.count == rows * width, "aligned buffer has the wrong size")
            let base = out.start
            for id in 0..<n {
                let dst = base + id * width
                let force = settings[tokens[id]]?.force ?? false
                if perms[m][id] >= 0 && !force {
                    let r = perms[m][id]
                    inputs[m].source.read((r * width)..<((r + 1) * width), into: dst)
                } else if let d = defaults[id] {
                    d.withUnsafeBufferPointer { dst.update(from: $0.start, count: width) }
                } else {
                    dst.update(repeating: 0, count: width)
                }
            }
            if rows > n {
                // Padding rows: the mean of the real rows (mergekit, after Hewitt's vocabulary-expansion note).
                var mean = [Float](repeating: 0, count: width)
                for id in 0..<n { for k in 0..<width { mean[k] += base[id * width + k] } }
                for k in 0..<width { mean[k] /= Float(n) }
                for id in n..<rows {
                    mean.withUnsafeBufferPointer { (base + id * width).update(from: $0.start, count: width) }
                }
            }
        }
    }

    /// Merges one token-indexed tensor into `output` (`rows` x `width`): each input's rows gathered into an
    /// output-ordered f32 copy by `align`, then the plan's method on the copies (the whole-tensor path; one
    /// tensor, so memory is (inputs + 1) copies of it).
    func merge(
        _ t: PlannedTensor, plan: MergePlan, views: [TensorView], seed: UInt64,
        into output: UnsafeMutableBufferPointer<Float>
    ) throws(MergeError) {
        let width = t.shape.dropFirst().reduce(1, *)
        let inputs = zip(t.inputs, views).map { inp, view in
            RowInput(
                model: plan.models[inp.model].reference,
                source: TensorSource(bytes: view.bytes, dtype: view.dtype, count: view.info.elementCount),
                rows: view.shape.first ?? 0)
        }
        let buffers = inputs.map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: rows * width) }
        defer { for b in buffers { b.deallocate() } }
        try align(tensor: t.name, inputs: inputs, width: width, into: buffers)
        let mergeInputs = zip(t.inputs, buffers).map { inp, b in
            MergeInput(
                model: plan.models[inp.model].reference, isBase: inp.isBase, values: UnsafeBufferPointer(b),
                parameters: inp.parameters)
        }
        let context = TensorMergeContext(
            tensorName: t.name, shape: t.shape, inputs: mergeInputs, parameters: t.parameters, seed: seed)
        try plan.method.merge(context, into: output)
    }
}
