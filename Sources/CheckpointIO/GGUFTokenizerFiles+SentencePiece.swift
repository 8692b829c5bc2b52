import Foundation

/// SentencePiece BPE vocabularies (`tokenizer.ggml.model = llama`) as `transformers`' `LlamaTokenizer` builds them
/// from a GGUF file: BPE with byte fallback over `▁`-spelled pieces, a Metaspace pre-tokenizer that marks the first
/// word, and merges from the file or, as Llama 2 and Mistral files carry none, derived from the token scores.
extension GGUFTokenizerFiles {
    static let maxDerivedTokenBytes = 4096

    static func sentencePiece(
        _ h: GGUFHeader, tokens: [String], types: [Int], file: String, specials: [Int]
    ) throws(CheckpointError) -> Parts {
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            // Swift's String equality is canonical equivalence; Python's dict, which transformers uses, compares
            // code points. Two spellings of one text would become one JSON key: refuse rather than differ.
            if let j = vocab[t], tokens[j].unicodeScalars.elementsEqual(t.unicodeScalars) == false {
                throw CheckpointError(
                    .invalidMetadata,
                    "\(file): tokens \(j) and \(i) of 'tokenizer.ggml.tokens' are the same text in different Unicode forms; their tokenizer.json cannot be written."
                )
            }
            vocab[t] = i
        }
        let merges: [[String]]
        if h.value("tokenizer.ggml.merges") != nil {
            merges = try strings(h, "tokenizer.ggml.merges", file: file).map {
                $0.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            }
        } else {
            guard let values = h.value("tokenizer.ggml.scores")?.arrayValue else {
                throw CheckpointError(
                    .invalidMetadata,
                    "\(file): a 'llama' vocabulary without 'tokenizer.ggml.merges' needs 'tokenizer.ggml.scores' to derive them."
                )
            }
            guard values.count == tokens.count else {
                throw CheckpointError(
                    .invalidMetadata,
                    "\(file): metadata key 'tokenizer.ggml.scores' has \(values.count) entries for \(tokens.count) tokens."
                )
            }
            // Deriving merges tries every cut of every token: quadratic in a token's length, so a hostile file
            // with megabyte tokens is refused (real vocabularies stay under a hundred bytes per token).
            if let long = tokens.firstIndex(where: { $0.utf8.count > maxDerivedTokenBytes }) {
                throw CheckpointError(
                    .invalidMetadata,
                    "\(file): token \(long) of 'tokenizer.ggml.tokens' is \(tokens[long].utf8.count) bytes; merges are derived only for tokens of at most \(maxDerivedTokenBytes) bytes."
                )
            }
            var scores: [Float] = []
            scores.reserveCapacity(values.count)
            for (i, v) in values.enumerated() {
                guard let d = v.doubleValue, d.isFinite else {
                    throw CheckpointError(
                        .invalidMetadata,
                        "\(file): metadata key 'tokenizer.ggml.scores' has a non-finite or non-number element \(i).")
                }
                scores.append(Float(d))
            }
            merges = derivedMerges(tokens: tokens, scores: scores, vocab: vocab)
        }
        // transformers adds the BOS, EOS and unknown tokens as special tokens, then the control (3) ones, then the
        // user-defined (4) ones as plain added tokens; the JSON lists them by id.
        var added: [Int: Bool] = [:]
        for id in specials where tokens.indices.contains(id) { added[id] = true }
        for (i, kind) in types.prefix(tokens.count).enumerated() where kind == 3 || kind == 4 {
            if added[i] == nil { added[i] = kind == 3 }
        }
        let model: [String: Any] = [
            "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
            "end_of_word_suffix": NSNull(), "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        ]
        let decoder: [String: Any] = [
            "type": "Sequence",
            "decoders": [
                ["type": "Replace", "pattern": ["String": "\u{2581}"], "content": " "], ["type": "ByteFallback"],
                ["type": "Fuse"], ["type": "Strip", "content": " ", "start": 1, "stop": 0],
            ],
        ]
        return Parts(
            vocab: vocab, model: model,
            added: added.sorted { $0.key < $1.key }.map { addedToken($0.key, tokens[$0.key], special: $0.value) },
            pre: ["type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false],
            decoder: decoder)
    }

    /// The merges a SentencePiece vocabulary implies (transformers' `generate_merges` with the scores): every split
    /// of a token into two tokens, ranked by the whole token's score, then by the left and right lengths in code
    /// points (all descending); ties keep the vocabulary's order, each token's splits ordered by the pieces' ids.
    static func derivedMerges(tokens: [String], scores: [Float], vocab: [String: Int]) -> [[String]] {
        struct Candidate {
            var left: String
            var right: String
            var score: Float
            var leftLength: Int
            var rightLength: Int
        }
        // Python's dict(zip(tokens, scores)): each text once, in first-seen order, with its last score.
        var lastScore: [String: Float] = [:]
        for (t, s) in zip(tokens, scores) { lastScore[t] = s }
        var seen = Set<String>()
        var candidates: [Candidate] = []
        for t in tokens where seen.insert(t).inserted {
            guard let score = lastScore[t] else { continue }
            let scalars = Array(t.unicodeScalars)
            var local: [(Candidate, Int, Int)] = []
            for cut in scalars.indices.dropFirst() {
                var l = String.UnicodeScalarView()
                l.append(contentsOf: scalars[..<cut])
                var r = String.UnicodeScalarView()
                r.append(contentsOf: scalars[cut...])
                let left = String(l)
                let right = String(r)
                guard let li = vocab[left], let ri = vocab[right] else { continue }
                local.append(
                    (
                        Candidate(
                            left: left, right: right, score: score, leftLength: cut, rightLength: scalars.count - cut),
                        li, ri
                    ))
            }
            local.sort { ($0.1, $0.2) < ($1.1, $1.2) }
            candidates.append(contentsOf: local.map(\.0))
        }
        let order = candidates.indices.sorted { a, b in
            let x = candidates[a]
            let y = candidates[b]
            if x.score != y.score { return x.score > y.score }
            if x.leftLength != y.leftLength { return x.leftLength > y.leftLength }
            if x.rightLength != y.rightLength { return x.rightLength > y.rightLength }
            return a < b
        }
        return order.map { [candidates[$0].left, candidates[$0].right] }
    }
}
