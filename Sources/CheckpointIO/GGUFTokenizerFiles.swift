import Foundation

/// `tokenizer.json` and `tokenizer_config.json` rebuilt from a GGUF file's byte-level BPE vocabulary
/// (`tokenizer.ggml.model = gpt2`: SmolLM, Llama 3, GPT-2-style files), the way `transformers` builds its
/// tokenizer from the same metadata, so both give the same token ids.
///
/// Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added tokens; tokens not
/// spelled in the byte alphabet are respelled byte by byte; `tokenizer.ggml.pre` picks the split regex of the
/// Llama 3 family or of Qwen2 (one digit per piece), GPT-2's byte-level split otherwise. SentencePiece vocabularies (`llama`) are not
/// rebuilt yet.
public enum GGUFTokenizerFiles {
    /// File name → contents, or nil with the reason when the vocabulary is of a kind not rebuilt.
    public static func build(_ h: GGUFHeader, file: String) throws(CheckpointError) -> (
        files: [String: Data], skipped: String?
    ) {
        let model = h.value("tokenizer.ggml.model")?.stringValue ?? "(none)"
        guard model == "gpt2" else {
            return ([:], "tokenizer.ggml.model is '\(model)'; only byte-level BPE ('gpt2') vocabularies are rebuilt")
        }
        guard let tokenValues = h.value("tokenizer.ggml.tokens")?.arrayValue,
            let mergeValues = h.value("tokenizer.ggml.merges")?.arrayValue
        else {
            throw CheckpointError(
                .invalidMetadata,
                "\(file): a 'gpt2' vocabulary needs 'tokenizer.ggml.tokens' and 'tokenizer.ggml.merges' string arrays.")
        }
        var tokens: [String] = []
        tokens.reserveCapacity(tokenValues.count)
        for (i, v) in tokenValues.enumerated() {
            guard let s = v.stringValue else {
                throw CheckpointError(
                    .invalidMetadata, "\(file): metadata key 'tokenizer.ggml.tokens' has a non-string element \(i).")
            }
            tokens.append(s)
        }
        let types = h.value("tokenizer.ggml.token_type")?.arrayValue?.map { $0.intValue ?? 1 } ?? []
        let alphabet = Set(byteAlphabet)
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            vocab[t.unicodeScalars.allSatisfy { alphabet.contains($0) } ? t : respell(t)] = i
        }
        var merges: [[String]] = []
        merges.reserveCapacity(mergeValues.count)
        for (i, m) in mergeValues.enumerated() {
            guard let s = m.stringValue else {
                throw CheckpointError(
                    .invalidMetadata, "\(file): metadata key 'tokenizer.ggml.merges' has a non-string element \(i).")
            }
            merges.append(s.split(separator: " ", omittingEmptySubsequences: false).map(String.init))
        }
        var added: [[String: Any]] = []
        for (i, t) in tokens.enumerated() where i < types.count && (types[i] == 3 || types[i] == 4) {
            // llama.cpp mislabel
            if types[i] == 3, !t.unicodeScalars.allSatisfy({ alphabet.contains($0) }) { continue }
            added.append([
                "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false,
                "special": types[i] == 3,
            ])
        }
        func token(_ key: String) -> String? {
            guard let id = h.value("tokenizer.ggml.\(key)")?.intValue, tokens.indices.contains(id) else { return nil }
            return tokens[id]
        }
        let addBOS = h.value("tokenizer.ggml.add_bos_token") == .bool(true)
        var single: [[String: Any]] = [["Sequence": ["id": "A", "type_id": 0]]]
        var pair: [[String: Any]] = [
            ["Sequence": ["id": "A", "type_id": 0]], ["Sequence": ["id": "B", "type_id": 1]],
        ]
        var specials: [String: Any] = [:]
        if addBOS, let bos = token("bos_token_id"), let id = vocab[bos] {
            single.insert(["SpecialToken": ["id": bos, "type_id": 0]], at: 0)
            pair.insert(["SpecialToken": ["id": bos, "type_id": 0]], at: 0)
            pair.insert(["SpecialToken": ["id": bos, "type_id": 1]], at: 2)
            specials[bos] = ["id": bos, "ids": [id], "tokens": [bos]]
        }
        let byteLevel: [String: Any] = [
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
        ]
        var pre: [String: Any] = byteLevel
        if let p = h.value("tokenizer.ggml.pre")?.stringValue, let split = splits[p] {
            pre = [
                "type": "Sequence",
                "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": split], "behavior": "Isolated", "invert": false],
                    ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
                ],
            ]
        }
        let tokenizer: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": pre,
            "post_processor": [
                "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials,
            ],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            ] as [String: Any],
        ]
        var config: [String: Any] = [
            "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": addBOS,
            "add_eos_token": h.value("tokenizer.ggml.add_eos_token") == .bool(true),
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
