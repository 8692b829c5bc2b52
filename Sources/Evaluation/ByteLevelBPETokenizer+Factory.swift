import CheckpointIO
import Foundation

extension ByteLevelBPETokenizer {
    /// Builds a tokenizer from the bytes of a `tokenizer.json`; `file` names it in messages.
    public init(json data: Data, file: String) throws(EvaluationError) {
        let parsed: TokenizerJSON
        do {
            parsed = try TokenizerJSON(data: data, file: file)
        } catch {
            throw EvaluationError(.invalidTokenizer, error.message, cause: error)
        }
        let root = parsed.root
        let model = parsed.model
        func invalid(_ what: String) -> EvaluationError { EvaluationError(.invalidTokenizer, "\(file): \(what)") }
        func unsupported(_ what: String) -> EvaluationError {
            EvaluationError(.unsupportedTokenizer, "\(file): \(what)")
        }

        // Model.
        guard parsed.modelType == "BPE" else {
            throw unsupported("model type '\(parsed.modelType)' is not supported; this tokenizer implements 'BPE'.")
        }
        guard model["vocab"] is [String: Any] else {
            throw invalid("model.vocab of a BPE model is not a token -> id mapping.")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = model[key], !(v is NSNull), (v as? String) != "" {
                throw unsupported("BPE option '\(key)' = \(v) is not supported (byte-level BPE leaves it empty).")
            }
        }
        if let d = model["dropout"] as? NSNumber, d.doubleValue > 0 {
            throw unsupported("BPE dropout \(d) is not supported (it makes tokenization random).")
        }
        let byteFallback = model["byte_fallback"] as? Bool == true
        var vocab: [[UInt8]: Int32] = [:]
        var maxID: Int32 = -1
        for (token, id) in parsed.vocab {
            vocab[Array(token.utf8)] = Int32(id)
            maxID = max(maxID, Int32(id))
        }
        var merges: [UInt64: Merge] = [:]
        let pairs: [(String, String)]
        do {
            pairs = try parsed.merges()
        } catch {
            throw EvaluationError(.invalidTokenizer, error.message, cause: error)
        }
        for (rank, (left, right)) in pairs.enumerated() {
            guard let a = vocab[Array(left.utf8)], let b = vocab[Array(right.utf8)],
                let m = vocab[Array((left + right).utf8)]
            else {
                throw invalid("model.merges[\(rank)] ('\(left)', '\(right)') names a token outside model.vocab.")
            }
            let key = Self.pairKey(a, b)
            if merges[key] == nil { merges[key] = Merge(rank: rank, id: m) }
        }
        if let unk = model["unk_token"] as? String {
            guard let id = vocab[Array(unk.utf8)] else {
                throw invalid("model.unk_token '\(unk)' is not in model.vocab.")
            }
            unkID = id
        } else {
            unkID = nil
        }
        fuseUnk = model["fuse_unk"] as? Bool ?? false
        ignoreMerges = model["ignore_merges"] as? Bool ?? false

        // Added tokens (an empty one would match everywhere; the tokenizers library ignores it too).
        var added: [AddedToken] = []
        var addedIDs: [String: Int32] = [:]
        for e in parsed.addedTokens where !e.content.isEmpty {
            added.append(
                AddedToken(
                    content: Array(e.content.unicodeScalars), id: Int32(e.id), singleWord: e.singleWord,
                    lstrip: e.lstrip,
                    rstrip: e.rstrip))
            addedIDs[e.content] = Int32(e.id)
            maxID = max(maxID, Int32(e.id))
        }
        // Longest first, so that the leftmost match found first at a position is the longest.
        added.sort { $0.content.count > $1.content.count }

        // Normalizer.
        func normalizer(_ value: Any, _ path: String) throws(EvaluationError) -> Normalizer? {
            if value is NSNull { return nil }
            guard let n = value as? [String: Any], let type = n["type"] as? String else {
                throw invalid("\(path) is not an object with a 'type'.")
            }
            switch type {
            case "NFC": return .nfc
            case "NFD": return .nfd
            case "NFKC": return .nfkc
            case "NFKD": return .nfkd
            case "Lowercase": return .lowercase
            case "Strip":
                return .strip(left: n["strip_left"] as? Bool ?? true, right: n["strip_right"] as? Bool ?? true)
            case "Prepend":
                guard let s = n["prepend"] as? String else { throw invalid("\(path).prepend is not a string.") }
                return .prepend(s)
            case "Replace":
                guard let pattern = n["pattern"] as? [String: Any], let content = n["content"] as? String else {
                    throw invalid("\(path) needs a 'pattern' object and a 'content' string.")
                }
                guard let s = pattern["String"] as? String, !s.isEmpty else {
                    throw unsupported(
                        "\(path): a Replace pattern other than a non-empty String (\(pattern.keys.sorted())) is not supported."
                    )
                }
                return .replace(pattern: s, content: content)
            case "Sequence":
                guard let list = n["normalizers"] as? [Any] else { throw invalid("\(path).normalizers is not a list.") }
                var steps: [Normalizer] = []
                for (i, item) in list.enumerated() {
                    if let step = try normalizer(item, "\(path).normalizers[\(i)]") { steps.append(step) }
                }
                return .sequence(steps)
            default:
                throw unsupported("normalizer type '\(type)' (\(path)) is not supported.")
            }
        }
        self.normalizer = try normalizer(root["normalizer"] ?? NSNull(), "normalizer")

        // Pre-tokenizer: one ByteLevel, alone or in a Sequence after `Split` steps (Llama 3's and Qwen2's); or, for
        // SentencePiece-style vocabularies, one Metaspace or none.
        var byteLevel: [String: Any]?
        var metaspace: Metaspace?
        var splits: [SplitPattern] = []
        func preTokenizer(_ value: Any, _ path: String) throws(EvaluationError) {
            guard let p = value as? [String: Any], let type = p["type"] as? String else {
                throw invalid("\(path) is not an object with a 'type'.")
            }
            switch type {
            case "ByteLevel":
                guard byteLevel == nil else {
                    throw unsupported("\(path): a second ByteLevel pre-tokenizer is not supported.")
                }
                byteLevel = p
            case "Metaspace":
                guard metaspace == nil, byteLevel == nil, splits.isEmpty else {
                    throw unsupported("\(path): Metaspace combined with other pre-tokenizers is not supported.")
                }
                guard let r = p["replacement"] as? String, r.unicodeScalars.count == 1,
                    let scalar = r.unicodeScalars.first
                else { throw invalid("\(path).replacement is not one character.") }
                let scheme: Metaspace.Prepend
                switch p["prepend_scheme"] as? String {
                case "always": scheme = .always
                case "first": scheme = .first
                case "never": scheme = .never
                case nil: scheme = (p["add_prefix_space"] as? Bool ?? true) ? .always : .never
                case let other?: throw unsupported("\(path).prepend_scheme '\(other)' is not supported.")
                }
                metaspace = Metaspace(replacement: scalar, prepend: scheme, split: p["split"] as? Bool ?? true)
            case "Split":
                guard byteLevel == nil else {
                    throw unsupported("\(path): a Split pre-tokenizer after the ByteLevel one is not supported.")
                }
                splits.append(try SplitPattern(p, path: path, file: file))
            case "Sequence":
                guard let list = p["pretokenizers"] as? [Any] else {
                    throw invalid("\(path).pretokenizers is not a list.")
                }
                for (i, item) in list.enumerated() { try preTokenizer(item, "\(path).pretokenizers[\(i)]") }
            default:
                throw unsupported(
                    "pre-tokenizer type '\(type)' (\(path)) is not supported; this tokenizer implements ByteLevel, Split and Metaspace."
                )
            }
        }
        if let pre = root["pre_tokenizer"], !(pre is NSNull) { try preTokenizer(pre, "pre_tokenizer") }
        if let byteLevel {
            guard !byteFallback else {
                throw unsupported("BPE option 'byte_fallback' with a ByteLevel pre-tokenizer is not supported.")
            }
            symbols = .bytes
            addPrefixSpace = byteLevel["add_prefix_space"] as? Bool ?? true
            useRegex = byteLevel["use_regex"] as? Bool ?? true
        } else {
            // SentencePiece-style: characters as symbols, words from Metaspace or from the normalizer's `▁`.
            guard splits.isEmpty else {
                throw unsupported(
                    "pre_tokenizer has Split steps but no ByteLevel step; that pipeline is not supported.")
            }
            guard byteFallback || metaspace != nil || self.normalizer != nil else {
                throw unsupported(
                    "no ByteLevel pre-tokenizer, no Metaspace, no byte fallback: neither a byte-level nor a SentencePiece-style BPE."
                )
            }
            symbols = .characters(byteFallback: byteFallback)
            addPrefixSpace = false
            useRegex = false
        }
        self.metaspace = metaspace
        self.splits = splits

        // Post-processor.
        func special(_ value: Any?, _ path: String) throws(EvaluationError) -> Int32 {
            guard let pair = value as? [Any], pair.count == 2, pair[0] is String, let id = pair[1] as? Int, id >= 0,
                id < Int(Int32.max)
            else { throw invalid("\(path) is not a [token, id] pair.") }
            maxID = max(maxID, Int32(id))
            return Int32(id)
        }
        func postProcessor(_ value: Any, _ path: String) throws(EvaluationError) -> (prefix: [Int32], suffix: [Int32]) {
            if value is NSNull { return ([], []) }
            guard let p = value as? [String: Any], let type = p["type"] as? String else {
                throw invalid("\(path) is not an object with a 'type'.")
            }
            switch type {
            case "RobertaProcessing", "BertProcessing":
                return ([try special(p["cls"], "\(path).cls")], [try special(p["sep"], "\(path).sep")])
            case "ByteLevel":
                return ([], [])  // offsets only
            case "TemplateProcessing":
                guard let single = p["single"] as? [Any] else { throw invalid("\(path).single is not a list.") }
                let specials = p["special_tokens"] as? [String: Any] ?? [:]
                var before: [Int32] = []
                var after: [Int32] = []
                var sawSequence = false
                for (i, piece) in single.enumerated() {
                    guard let obj = piece as? [String: Any] else {
                        throw invalid("\(path).single[\(i)] is not an object.")
                    }
                    if let s = obj["Sequence"] as? [String: Any] {
                        guard s["id"] as? String == "A", !sawSequence else {
                            throw unsupported(
                                "\(path).single[\(i)]: only one sequence 'A' is supported in a single template.")
                        }
                        sawSequence = true
                    } else if let s = obj["SpecialToken"] as? [String: Any], let name = s["id"] as? String {
                        guard let entry = specials[name] as? [String: Any], let ids = entry["ids"] as? [Int],
                            ids.allSatisfy({ $0 >= 0 && $0 < Int(Int32.max) })
                        else {
                            throw invalid(
                                "\(path).single[\(i)] names special token '\(name)', which special_tokens does not define with 'ids'."
                            )
                        }
                        for id in ids { maxID = max(maxID, Int32(id)) }
                        if sawSequence { after += ids.map { Int32($0) } } else { before += ids.map { Int32($0) } }
                    } else {
                        throw unsupported("\(path).single[\(i)]: template piece \(obj.keys.sorted()) is not supported.")
                    }
                }
                guard sawSequence else { throw invalid("\(path).single has no sequence 'A'.") }
                return (before, after)
            case "Sequence":
                guard let list = p["processors"] as? [Any] else { throw invalid("\(path).processors is not a list.") }
                var prefix: [Int32] = []
                var suffix: [Int32] = []
                for (i, item) in list.enumerated() {
                    let (b, a) = try postProcessor(item, "\(path).processors[\(i)]")
                    prefix = b + prefix
                    suffix += a
                }
                return (prefix, suffix)
            default:
                throw unsupported("post-processor type '\(type)' (\(path)) is not supported.")
            }
        }
        (prefixIDs, suffixIDs) = try postProcessor(root["post_processor"] ?? NSNull(), "post_processor")

        var padID: Int32 = 0
        if let padding = root["padding"] as? [String: Any], let id = padding["pad_id"] as? Int, id >= 0,
            id < Int(Int32.max)
        {
            padID = Int32(id)
        } else if let id = addedIDs["<pad>"] ?? vocab[Array("<pad>".utf8)] {
            padID = id
        }
        self.padID = padID
        self.vocab = vocab
        self.merges = merges
        self.added = added
        byteIDs = Self.byteCharacters.map { vocab[Array(String($0).utf8)] }
        byteFallbackIDs = (0..<256).map { vocab[Array(String(format: "<0x%02X>", $0).utf8)] }
        vocabularySize = Int(maxID) + 1
    }
}
