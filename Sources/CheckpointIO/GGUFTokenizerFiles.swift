import Foundation

/// `tokenizer.json` and `tokenizer_config.json` rebuilt from a GGUF file's vocabulary the way `transformers` builds
/// its tokenizer from the same metadata, so both give the same token ids: byte-level BPE (`tokenizer.ggml.model =
/// gpt2`: SmolLM, Llama 3, Qwen2) and SentencePiece BPE (`llama`: Llama 2, Mistral, whose files carry scores and
/// byte-fallback tokens but usually no merges).
///
/// Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added tokens. Byte-level
/// tokens not spelled in the byte alphabet are respelled byte by byte; `tokenizer.ggml.pre` picks the split regex
/// of the Llama 3 family or of Qwen2 (one digit per piece), GPT-2's byte-level split otherwise.
public enum GGUFTokenizerFiles {
    /// File name → contents, or nil with the reason when the vocabulary is of a kind not rebuilt.
    public static func build(_ h: GGUFHeader, file: String) throws(CheckpointError) -> (
        files: [String: Data], skipped: String?
    ) {
        let model = h.value("tokenizer.ggml.model")?.stringValue ?? "(none)"
        guard model == "gpt2" || model == "llama" else {
            return (
                [:],
                "tokenizer.ggml.model is '\(model)'; only byte-level BPE ('gpt2') and SentencePiece BPE ('llama') vocabularies are rebuilt"
            )
        }
        let tokens = try strings(h, "tokenizer.ggml.tokens", file: file)
        let types = h.value("tokenizer.ggml.token_type")?.arrayValue?.map { $0.intValue ?? 1 } ?? []
        func token(_ key: String) -> String? {
            guard let id = h.value("tokenizer.ggml.\(key)")?.intValue, tokens.indices.contains(id) else { return nil }
            return tokens[id]
        }
        // llama.cpp adds BOS to a SentencePiece vocabulary whose file does not say otherwise; transformers follows.
        let addBOS = h.value("tokenizer.ggml.add_bos_token")?.boolValue ?? (model == "llama")
        let addEOS = h.value("tokenizer.ggml.add_eos_token") == .bool(true)
        let built =
            model == "gpt2"
            ? try byteLevel(h, tokens: tokens, types: types, file: file)
            : try sentencePiece(
                h, tokens: tokens, types: types, file: file,
                specials: ["bos", "eos", "unknown"].compactMap {
                    h.value("tokenizer.ggml.\($0)_token_id")?.intValue
                })
        let tokenizer: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": built.added,
            "normalizer": NSNull(), "pre_tokenizer": built.pre,
            "post_processor": postProcessor(
                bos: addBOS ? token("bos_token_id") : nil, eos: addEOS ? token("eos_token_id") : nil, vocab: built.vocab
            ),
            "decoder": built.decoder, "model": built.model,
        ]
        var config: [String: Any] = [
            "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": addBOS, "add_eos_token": addEOS,
        ]
        for (name, key) in [
            ("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
            ("pad_token", "padding_token_id"),
        ] {
            config[name] = token(key) ?? NSNull()
        }
        if let arch = h.value("general.architecture")?.stringValue,
            let n = h.value("\(arch).context_length")?.intValue
        {
            config["model_max_length"] = n
        }
        var files: [String: Data] = [:]
        if let template = h.value("tokenizer.chat_template")?.stringValue {
            config["chat_template"] = template
            files["chat_template.jinja"] = Data(template.utf8)
        }
        do {
            files["tokenizer.json"] = try JSONSerialization.data(withJSONObject: tokenizer, options: [.sortedKeys])
            files["tokenizer_config.json"] =
                try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
                + Data("\n".utf8)
        } catch {
            throw CheckpointError(.io, "\(file): cannot encode the tokenizer files: \(error.localizedDescription).")
        }
        return (files, nil)
    }

    /// The parts of `tokenizer.json` that depend on the kind of vocabulary.
    struct Parts {
        var vocab: [String: Int]
        var model: [String: Any]
        var added: [[String: Any]]
        var pre: [String: Any]
        var decoder: [String: Any]
    }

    static func byteLevel(_ h: GGUFHeader, tokens: [String], types: [Int], file: String) throws(CheckpointError)
        -> Parts
    {
        guard h.value("tokenizer.ggml.merges")?.arrayValue != nil else {
            throw CheckpointError(
                .invalidMetadata,
                "\(file): a 'gpt2' vocabulary needs 'tokenizer.ggml.tokens' and 'tokenizer.ggml.merges' string arrays.")
        }
        let alphabet = Set(byteAlphabet)
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            vocab[t.unicodeScalars.allSatisfy { alphabet.contains($0) } ? t : respell(t)] = i
        }
        let merges = try strings(h, "tokenizer.ggml.merges", file: file).map {
            $0.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        }
        var added: [[String: Any]] = []
        for (i, t) in tokens.enumerated() where i < types.count && (types[i] == 3 || types[i] == 4) {
            // A control token outside the byte alphabet is a llama.cpp mislabel (transformers skips it too).
            if types[i] == 3, !t.unicodeScalars.allSatisfy({ alphabet.contains($0) }) { continue }
            added.append(addedToken(i, t, special: types[i] == 3))
        }
        var pre: [String: Any] = [
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
        ]
        if let p = h.value("tokenizer.ggml.pre")?.stringValue, let split = splits[p] {
            pre = [
                "type": "Sequence",
                "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": split], "behavior": "Isolated", "invert": false],
                    ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
                ],
            ]
        }
        let model: [String: Any] = [
            "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        ]
        return Parts(
            vocab: vocab, model: model, added: added, pre: pre,
            decoder: ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true])
    }

    /// `[BOS] $A [EOS]` (and the pair form) with the tokens the file asks to add.
    static func postProcessor(bos: String?, eos: String?, vocab: [String: Int]) -> [String: Any] {
        var specials: [String: Any] = [:]
        func special(_ t: String?, typeID: Int) -> [[String: Any]] {
            guard let t, let id = vocab[t] else { return [] }
            specials[t] = ["id": t, "ids": [id], "tokens": [t]]
            return [["SpecialToken": ["id": t, "type_id": typeID]]]
        }
        let single: [[String: Any]] =
            special(bos, typeID: 0) + [["Sequence": ["id": "A", "type_id": 0]]] + special(eos, typeID: 0)
        let pair: [[String: Any]] =
            single + special(bos, typeID: 1) + [["Sequence": ["id": "B", "type_id": 1]]] + special(eos, typeID: 1)
        return ["type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials]
    }

    static func addedToken(_ id: Int, _ content: String, special: Bool) -> [String: Any] {
        [
            "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special,
        ]
    }

    /// A metadata string array, element by element.
    static func strings(_ h: GGUFHeader, _ key: String, file: String) throws(CheckpointError) -> [String] {
        guard let values = h.value(key)?.arrayValue else {
            throw CheckpointError(.invalidMetadata, "\(file): metadata key '\(key)' is missing or not an array.")
        }
        var out: [String] = []
        out.reserveCapacity(values.count)
        for (i, v) in values.enumerated() {
            guard let s = v.stringValue else {
                throw CheckpointError(.invalidMetadata, "\(file): metadata key '\(key)' has a non-string element \(i).")
            }
            out.append(s)
        }
        return out
    }

    /// GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the others for U+0100 onwards.
    static let byteAlphabet: [Unicode.Scalar] = {
        let kept = Set(Array(33...126) + Array(161...172) + Array(174...255))
        var next = 256
        return (0..<256).map { b in
            if kept.contains(b) { return Unicode.Scalar(UInt8(b)) }
            defer { next += 1 }
            guard let scalar = Unicode.Scalar(UInt32(next)) else { preconditionFailure("U+\(next) is not a scalar") }
            return scalar
        }
    }()

    static func respell(_ token: String) -> String {
        var s = String.UnicodeScalarView()
        for b in token.utf8 { s.append(byteAlphabet[Int(b)]) }
        return String(s)
    }

    /// `tokenizer.ggml.pre` values whose vocabularies were learned on llama.cpp's Llama 3 split.
    static let llama3Family: Set<String> = [
        "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano",
        "dbrx",
        "smaug-bpe",
    ]
    static let llama3Split =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    /// `tokenizer.ggml.pre` values of Qwen2's vocabulary and its descendants (as transformers' GGUF converter
    /// lists them).
    static let qwen2Family: Set<String> = ["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"]
    /// Qwen2's split (`tokenization_qwen2.PRETOKENIZE_REGEX`): Llama 3's with one digit per piece.
    static let qwen2Split =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    /// `tokenizer.ggml.pre` → split regex.
    static let splits: [String: String] = Dictionary(
        uniqueKeysWithValues: llama3Family.map { ($0, llama3Split) } + qwen2Family.map { ($0, qwen2Split) })
}
