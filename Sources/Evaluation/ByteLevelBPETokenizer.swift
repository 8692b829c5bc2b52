import CheckpointIO
import Foundation

/// The byte-level BPE tokenizer of RoBERTa and GPT-2, built from a Hugging Face `tokenizer.json` and equal to the
/// tokenizers library (`transformers`' fast tokenizers) for the components it implements.
///
/// Steps, as the file declares them: split out added tokens (`<s>`, `<mask>`, ...) on the raw text; normalize each
/// remaining segment (`normalizer`: NFC/NFD/NFKC/NFKD, Lowercase, Strip, Replace of a string, Prepend, Sequence, or
/// none); pre-tokenize (`Split` steps, as Llama 3 and Qwen2 have, see `SplitPattern`; then `ByteLevel`: an optional
/// prefix space, the GPT-2 split `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, every UTF-8 byte mapped to
/// one printable character); apply the `BPE` model's merges by rank; add the post-processor's special tokens
/// (`RobertaProcessing`, `BertProcessing`, `TemplateProcessing`, `ByteLevel`, Sequence).
///
/// A component type or option this file does not implement is a thrown `.unsupportedTokenizer` naming the file and
/// the type, never a trap: a tokenizer that silently ran a different pipeline would give wrong ids.
///
/// Added tokens are matched on the raw text whether or not they are marked `normalized` (exact for tokenizers
/// without a normalizer, as RoBERTa's and GPT-2's).
public struct ByteLevelBPETokenizer: TextTokenizer {
    /// One normalization step.
    indirect enum Normalizer: Sendable, Equatable {
        case nfc, nfd, nfkc, nfkd, lowercase
        case strip(left: Bool, right: Bool)
        case replace(pattern: String, content: String)
        case prepend(String)
        case sequence([Normalizer])
    }

    /// An `added_tokens` entry as the splitter uses it.
    struct AddedToken: Sendable {
        var content: [Unicode.Scalar]
        var id: Int32
        var singleWord: Bool
        var lstrip: Bool
        var rstrip: Bool
    }

    /// Merge of two adjacent symbols: its rank (lower merges first) and the id of the merged symbol.
    struct Merge: Sendable {
        var rank: Int
        var id: Int32
    }

    let normalizer: Normalizer?
    /// `Split` pre-tokenizer steps before the ByteLevel one (Llama 3, Qwen2), applied in order.
    let splits: [SplitPattern]
    let addPrefixSpace: Bool
    let useRegex: Bool
    /// Token text (UTF-8 of the byte-level characters) to id, the model's vocabulary.
    let vocab: [[UInt8]: Int32]
    /// The id of each byte's byte-level character, nil when the vocabulary lacks it.
    let byteIDs: [Int32?]
    let merges: [UInt64: Merge]
    let unkID: Int32?
    let fuseUnk: Bool
    let ignoreMerges: Bool
    let added: [AddedToken]
    /// Ids the post-processor puts before and after a single sequence.
    let prefixIDs: [Int32]
    let suffixIDs: [Int32]
    public let vocabularySize: Int
    public let padID: Int32

    /// Reads `tokenizer.json` of a model folder.
    ///
    /// - Throws: `EvaluationError` `.invalidTokenizer` when the file is missing, not JSON, or a field is malformed
    ///   (a merge naming a token outside the vocabulary, a post-processor naming an unknown special token);
    ///   `.unsupportedTokenizer` naming the component type or option this tokenizer does not implement.
    public init(folder: URL) throws(EvaluationError) {
        let url = folder.appendingPathComponent("tokenizer.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw EvaluationError(.invalidTokenizer, "\(url.path): cannot read the tokenizer (tokenizer.json).")
        }
        try self.init(json: data, file: url.path)
    }

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
        func unsupported(_ what: String) -> EvaluationError { EvaluationError(.unsupportedTokenizer, "\(file): \(what)") }

        // Model.
        guard parsed.modelType == "BPE" else {
            throw unsupported("model type '\(parsed.modelType)' is not supported; this tokenizer implements 'BPE'.")
        }
        guard model["vocab"] is [String: Any] else { throw invalid("model.vocab of a BPE model is not a token -> id mapping.") }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = model[key], !(v is NSNull), (v as? String) != "" {
                throw unsupported("BPE option '\(key)' = \(v) is not supported (byte-level BPE leaves it empty).")
            }
        }
        if let d = model["dropout"] as? NSNumber, d.doubleValue > 0 {
            throw unsupported("BPE dropout \(d) is not supported (it makes tokenization random).")
        }
        if model["byte_fallback"] as? Bool == true {
            throw unsupported("BPE option 'byte_fallback' is not supported.")
        }
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
            guard let id = vocab[Array(unk.utf8)] else { throw invalid("model.unk_token '\(unk)' is not in model.vocab.") }
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
            added.append(AddedToken(
                content: Array(e.content.unicodeScalars), id: Int32(e.id), singleWord: e.singleWord, lstrip: e.lstrip,
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
                    throw unsupported("\(path): a Replace pattern other than a non-empty String (\(pattern.keys.sorted())) is not supported.")
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

        // Pre-tokenizer: one ByteLevel, alone or in a Sequence after `Split` steps (Llama 3's and Qwen2's).
        var byteLevel: [String: Any]?
        var splits: [SplitPattern] = []
        func preTokenizer(_ value: Any, _ path: String) throws(EvaluationError) {
            guard let p = value as? [String: Any], let type = p["type"] as? String else {
                throw invalid("\(path) is not an object with a 'type'.")
            }
            switch type {
            case "ByteLevel":
                guard byteLevel == nil else { throw unsupported("\(path): a second ByteLevel pre-tokenizer is not supported.") }
                byteLevel = p
            case "Split":
                guard byteLevel == nil else {
                    throw unsupported("\(path): a Split pre-tokenizer after the ByteLevel one is not supported.")
                }
                splits.append(try SplitPattern(p, path: path, file: file))
            case "Sequence":
                guard let list = p["pretokenizers"] as? [Any] else { throw invalid("\(path).pretokenizers is not a list.") }
                for (i, item) in list.enumerated() { try preTokenizer(item, "\(path).pretokenizers[\(i)]") }
            default:
                throw unsupported("pre-tokenizer type '\(type)' (\(path)) is not supported; this tokenizer implements ByteLevel and Split.")
            }
        }
        guard let pre = root["pre_tokenizer"], !(pre is NSNull) else {
            throw unsupported("no pre_tokenizer; a byte-level BPE tokenizer needs the ByteLevel pre-tokenizer.")
        }
        try preTokenizer(pre, "pre_tokenizer")
        guard let byteLevel else {
            throw unsupported("pre_tokenizer has no ByteLevel step; a byte-level BPE tokenizer needs one.")
        }
        self.splits = splits
        addPrefixSpace = byteLevel["add_prefix_space"] as? Bool ?? true
        useRegex = byteLevel["use_regex"] as? Bool ?? true

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
                    guard let obj = piece as? [String: Any] else { throw invalid("\(path).single[\(i)] is not an object.") }
                    if let s = obj["Sequence"] as? [String: Any] {
                        guard s["id"] as? String == "A", !sawSequence else {
                            throw unsupported("\(path).single[\(i)]: only one sequence 'A' is supported in a single template.")
                        }
                        sawSequence = true
                    } else if let s = obj["SpecialToken"] as? [String: Any], let name = s["id"] as? String {
                        guard let entry = specials[name] as? [String: Any], let ids = entry["ids"] as? [Int],
                            ids.allSatisfy({ $0 >= 0 && $0 < Int(Int32.max) })
                        else {
                            throw invalid("\(path).single[\(i)] names special token '\(name)', which special_tokens does not define with 'ids'.")
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
        if let padding = root["padding"] as? [String: Any], let id = padding["pad_id"] as? Int, id >= 0, id < Int(Int32.max) {
            padID = Int32(id)
        } else if let id = addedIDs["<pad>"] ?? vocab[Array("<pad>".utf8)] {
            padID = id
        }
        self.padID = padID
        self.vocab = vocab
        self.merges = merges
        self.added = added
        byteIDs = Self.byteCharacters.map { vocab[Array(String($0).utf8)] }
        vocabularySize = Int(maxID) + 1
    }

    // MARK: - Encoding

    /// `prefix pieces suffix` (the post-processor's special tokens), the pieces truncated so that the whole is at
    /// most `maxLength` ids.
    public func encode(_ text: String, maxLength: Int = 512) -> [Int32] {
        let specials = prefixIDs.count + suffixIDs.count
        precondition(maxLength >= specials, "maxLength must leave room for the special tokens")
        return prefixIDs + tokenIDs(text, limit: maxLength - specials).prefix(maxLength - specials) + suffixIDs
    }

    /// Token ids of a text without the post-processor's special tokens.
    ///
    /// - Parameter limit: the caller keeps only the first `limit` ids, so words after them are not split (each
    ///   word's pieces depend on that word alone, so the kept ids are the same).
    public func tokenIDs(_ text: String, limit: Int = .max) -> [Int32] {
        var out: [Int32] = []
        // Fusing unknown tokens can shorten what came before, so it needs every id.
        let limit = fuseUnk ? Int.max : limit
        segments: for segment in splitAdded(Array(text.unicodeScalars)) {
            switch segment {
            case .token(let id): out.append(id)
            case .text(let scalars):
                let normalized = normalize(String(String.UnicodeScalarView(scalars)))
                for word in preTokenize(normalized) {
                    if out.count >= limit { break segments }
                    out += bpe(word)
                }
            }
            if out.count >= limit { break }
        }
        if fuseUnk, let unk = unkID {
            var fused: [Int32] = []
            for id in out where !(id == unk && fused.last == unk) { fused.append(id) }
            out = fused
        }
        return out
    }

    enum Segment: Equatable {
        case text([Unicode.Scalar])
        case token(Int32)
    }

    /// The text split around added tokens (leftmost, then longest match), honouring `lstrip`, `rstrip` and
    /// `single_word`.
    func splitAdded(_ s: [Unicode.Scalar]) -> [Segment] {
        guard !added.isEmpty else { return [.text(s)] }
        func isWordChar(_ c: Unicode.Scalar) -> Bool { c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil }
        var segments: [Segment] = []
        var textStart = 0
        var i = 0
        while i < s.count {
            var matched: (token: AddedToken, end: Int)?
            for token in added where i + token.content.count <= s.count {
                let end = i + token.content.count
                guard s[i..<end].elementsEqual(token.content) else { continue }
                if token.singleWord {
                    if i > 0 && isWordChar(s[i - 1]) { continue }
                    if end < s.count && isWordChar(s[end]) { continue }
                }
                matched = (token, end)
                break
            }
            guard let (token, end) = matched else {
                i += 1
                continue
            }
            var start = i
            if token.lstrip { while start > textStart && s[start - 1].properties.isWhitespace { start -= 1 } }
            var stop = end
            if token.rstrip { while stop < s.count && s[stop].properties.isWhitespace { stop += 1 } }
            if start > textStart { segments.append(.text(Array(s[textStart..<start]))) }
            segments.append(.token(token.id))
            textStart = stop
            i = stop
        }
        if textStart < s.count { segments.append(.text(Array(s[textStart...]))) }
        return segments
    }

    func normalize(_ text: String) -> String {
        guard let normalizer else { return text }
        return Self.apply(normalizer, text)
    }

    static func apply(_ n: Normalizer, _ text: String) -> String {
        switch n {
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        case .lowercase: return text.lowercased()
        case .strip(let left, let right):
            var s = Array(text.unicodeScalars)
            if left { s = Array(s.drop(while: { $0.properties.isWhitespace })) }
            if right { while let last = s.last, last.properties.isWhitespace { s.removeLast() } }
            return String(String.UnicodeScalarView(s))
        case .replace(let pattern, let content): return text.replacingOccurrences(of: pattern, with: content, options: .literal)
        case .prepend(let p): return text.isEmpty ? text : p + text
        case .sequence(let steps): return steps.reduce(text) { apply($1, $0) }
        }
    }

    /// The pre-tokenizer: the `Split` steps' pieces, each through the ByteLevel step.
    func preTokenize(_ text: String) -> [[UInt8]] {
        guard !splits.isEmpty else { return byteLevelWords(text) }
        var pieces = [text]
        for split in splits { pieces = pieces.flatMap(split.pieces) }
        return pieces.flatMap(byteLevelWords)
    }

    /// The ByteLevel pre-tokenizer: words as UTF-8 bytes.
    func byteLevelWords(_ text: String) -> [[UInt8]] {
        var s = Array(text.unicodeScalars)
        if s.isEmpty { return [] }
        if addPrefixSpace && s.first != " " { s.insert(" ", at: 0) }
        let pieces = useRegex ? Self.gpt2Split(s) : [0..<s.count]
        return pieces.map { range in
            var bytes: [UInt8] = []
            for c in s[range] { UTF8.encode(c) { bytes.append($0) } }
            return bytes
        }
    }

    enum CharClass { case letter, number, space, other }

    static func charClass(_ c: Unicode.Scalar) -> CharClass {
        if c.properties.isWhitespace { return .space }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// The GPT-2 pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, matched by
    /// hand (alternatives in order, as the regex engine tries them): the ranges of the matches, which cover `s`.
    static func gpt2Split(_ s: [Unicode.Scalar]) -> [Range<Int>] {
        let classes = s.map(charClass)
        var out: [Range<Int>] = []
        var i = 0
        func run(from j: Int, _ cls: CharClass) -> Int {
            var k = j
            while k < s.count && classes[k] == cls { k += 1 }
            return k
        }
        while i < s.count {
            // Contractions.
            if s[i] == "'" && i + 1 < s.count {
                let rest = s[(i + 1)...]
                if let suffix = ["s", "t", "re", "ve", "m", "ll", "d"].first(where: { rest.starts(with: $0.unicodeScalars) }) {
                    let end = i + 1 + suffix.unicodeScalars.count
                    out.append(i..<end)
                    i = end
                    continue
                }
            }
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`.
            let j = s[i] == " " && i + 1 < s.count && classes[i + 1] != .space ? i + 1 : i
            if classes[j] != .space {
                let end = run(from: j, classes[j])
                out.append(i..<end)
                i = end
                continue
            }
            // `\s+(?!\S)`, else `\s+`.
            let end = run(from: i, .space)
            if end < s.count && end - i > 1 {
                out.append(i..<(end - 1))
                i = end - 1
            } else {
                out.append(i..<end)
                i = end
            }
        }
        return out
    }

    static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

    /// BPE of one pre-tokenized word: its bytes as byte-level symbols, then the lowest-ranked adjacent pair merged
    /// (leftmost first among equal ranks) until no pair has a merge, as the tokenizers library's `merge_all` does.
    func bpe(_ word: [UInt8]) -> [Int32] {
        if ignoreMerges {
            let chars = String(word.map { Self.byteCharacters[Int($0)] })
            if let id = vocab[Array(chars.utf8)] { return [id] }
        }
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.count)
        for b in word {
            if let id = byteIDs[Int(b)] {
                symbols.append(id)
            } else if let unk = unkID {
                symbols.append(unk)
            }
        }
        while symbols.count > 1 {
            var best: (rank: Int, at: Int, id: Int32)?
            for k in 0..<(symbols.count - 1) {
                if let m = merges[Self.pairKey(symbols[k], symbols[k + 1])], m.rank < (best?.rank ?? Int.max) {
                    best = (m.rank, k, m.id)
                }
            }
            guard let best else { break }
            symbols[best.at] = best.id
            symbols.remove(at: best.at + 1)
        }
        return symbols
    }

    /// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 on.
    static let byteCharacters: [Character] = {
        var table = [Character](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Character(Unicode.Scalar(UInt32(b))!)
            } else {
                table[b] = Character(Unicode.Scalar(next)!)
                next += 1
            }
        }
        return table
    }()
}
