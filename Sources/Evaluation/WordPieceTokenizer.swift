import Foundation

/// The BERT WordPiece tokenizer, equal to the reference (`transformers`' `BertTokenizer`/`BertTokenizerFast` with
/// the tokenizers library's `BertNormalizer`, `BertPreTokenizer` and `WordPiece` model).
///
/// Steps, in the reference's order: clean the text (drop NUL, U+FFFD and control characters, turn every white
/// space into a space), put spaces around CJK ideographs, strip accents (NFD, then drop non-spacing marks), lower
/// case, split on white space and isolate every punctuation character, then split each word greedily into the
/// longest vocabulary pieces (continuations prefixed `##`). A word longer than `maxInputCharsPerWord` or with an
/// unmatched remainder becomes `[UNK]`.
///
/// Vocabulary look-ups compare UTF-8 bytes, not `String`s: Swift's `String ==` treats canonically equivalent
/// strings as equal, while the reference compares bytes (precomposed Hangul in the vocabulary must not match the
/// decomposed jamo that NFD produces).
public struct WordPieceTokenizer: TextTokenizer {
    /// Token text (UTF-8) to id.
    private let ids: [[UInt8]: Int32]
    /// Id to token text, for debugging and tests.
    public let tokens: [String]
    public let lowercase: Bool
    public let stripAccents: Bool
    public let tokenizeChineseChars: Bool
    public let maxInputCharsPerWord: Int
    public let unkID: Int32
    public let clsID: Int32
    public let sepID: Int32
    public let padID: Int32

    /// Reads `vocab.txt` (one token per line, line number = id) and, when present, `tokenizer_config.json`
    /// (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`) from a model folder.
    ///
    /// - Throws: `EvaluationError` `.invalidVocabulary` when `vocab.txt` is missing or lacks `[UNK]`, `[CLS]`,
    ///   `[SEP]` or `[PAD]`; `.invalidConfig` when `tokenizer_config.json` is not a JSON object.
    public init(folder: URL) throws(EvaluationError) {
        let vocabURL = folder.appendingPathComponent("vocab.txt")
        guard let data = FileManager.default.contents(atPath: vocabURL.path) else {
            throw EvaluationError(
                .invalidVocabulary, "\(vocabURL.path): cannot read the WordPiece vocabulary (vocab.txt).")
        }
        var lowercase = true
        var stripAccents: Bool?
        var chinese = true
        let configURL = folder.appendingPathComponent("tokenizer_config.json")
        if let configData = FileManager.default.contents(atPath: configURL.path) {
            guard let obj = try? JSONSerialization.jsonObject(with: configData), let config = obj as? [String: Any]
            else {
                throw EvaluationError(.invalidConfig, "\(configURL.path): expected a JSON object.")
            }
            if let v = config["do_lower_case"] as? Bool { lowercase = v }
            if let v = config["strip_accents"] as? Bool { stripAccents = v }
            if let v = config["tokenize_chinese_chars"] as? Bool { chinese = v }
        }
        try self.init(
            vocabulary: data, file: vocabURL.path, lowercase: lowercase, stripAccents: stripAccents,
            tokenizeChineseChars: chinese)
    }

    /// Builds a tokenizer from the bytes of a `vocab.txt`.
    ///
    /// - Parameters:
    ///   - stripAccents: nil follows `lowercase`, as the reference does.
    public init(
        vocabulary data: Data, file: String, lowercase: Bool = true, stripAccents: Bool? = nil,
        tokenizeChineseChars: Bool = true, maxInputCharsPerWord: Int = 100
    ) throws(EvaluationError) {
        var ids: [[UInt8]: Int32] = [:]
        var tokens: [String] = []
        let bytes = [UInt8](data)
        var start = 0
        var i = 0
        // Lines end with "\n" (a trailing "\r" is part of a Windows line ending, not of the token).
        while i <= bytes.count {
            if i == bytes.count || bytes[i] == 0x0A {
                if i == bytes.count && start == i { break }
                var end = i
                if end > start && bytes[end - 1] == 0x0D { end -= 1 }
                let token = Array(bytes[start..<end])
                // The first occurrence wins, as in the reference's dictionary build.
                if ids[token] == nil { ids[token] = Int32(tokens.count) }
                tokens.append(String(decoding: token, as: UTF8.self))
                start = i + 1
            }
            i += 1
        }
        func special(_ name: String) throws(EvaluationError) -> Int32 {
            guard let id = ids[Array(name.utf8)] else {
                throw EvaluationError(.invalidVocabulary, "\(file): the vocabulary has no \(name) token.")
            }
            return id
        }
        self.ids = ids
        self.tokens = tokens
        self.lowercase = lowercase
        self.stripAccents = stripAccents ?? lowercase
        self.tokenizeChineseChars = tokenizeChineseChars
        self.maxInputCharsPerWord = maxInputCharsPerWord
        unkID = try special("[UNK]")
        clsID = try special("[CLS]")
        sepID = try special("[SEP]")
        padID = try special("[PAD]")
    }

    public var vocabularySize: Int { tokens.count }

    // MARK: - Normalization and pre-tokenization

    /// The normalized text split into words and single punctuation characters (the reference's "basic" tokens).
    public func basicTokens(_ text: String) -> [[Unicode.Scalar]] {
        var cleaned = String.UnicodeScalarView()
        for s in text.unicodeScalars {
            if s.value == 0 || s.value == 0xFFFD || Self.isControl(s) { continue }
            if Self.isWhitespace(s) {
                cleaned.append(" ")
            } else if tokenizeChineseChars && Self.isChineseChar(s) {
                cleaned.append(" ")
                cleaned.append(s)
                cleaned.append(" ")
            } else {
                cleaned.append(s)
            }
        }
        var normalized = String(cleaned)
        if stripAccents {
            let decomposed = normalized.decomposedStringWithCanonicalMapping
            var kept = String.UnicodeScalarView()
            for s in decomposed.unicodeScalars where !Self.isNonspacingMark(s) { kept.append(s) }
            normalized = String(kept)
        }
        if lowercase { normalized = normalized.lowercased() }

        var words: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        for s in normalized.unicodeScalars {
            if Self.isWhitespace(s) {
                if !current.isEmpty { words.append(current) }
                current = []
            } else if Self.isPunctuation(s) {
                if !current.isEmpty { words.append(current) }
                current = []
                words.append([s])
            } else {
                current.append(s)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    /// Greedy longest-match-first WordPiece split of one word.
    public func wordPieces(_ word: [Unicode.Scalar]) -> [Int32] {
        if word.count > maxInputCharsPerWord { return [unkID] }
        // UTF-8 bytes of the word and the byte offset where each scalar starts (plus the end).
        var bytes: [UInt8] = []
        var offsets: [Int] = []
        offsets.reserveCapacity(word.count + 1)
        for s in word {
            offsets.append(bytes.count)
            UTF8.encode(s) { bytes.append($0) }
        }
        offsets.append(bytes.count)
        var out: [Int32] = []
        var start = 0
        var key: [UInt8] = []
        key.reserveCapacity(bytes.count + 2)
        while start < word.count {
            var end = word.count
            var found: Int32?
            while start < end {
                key.removeAll(keepingCapacity: true)
                if start > 0 { key.append(contentsOf: [0x23, 0x23]) }
                key.append(contentsOf: bytes[offsets[start]..<offsets[end]])
                if let id = ids[key] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let id = found else { return [unkID] }
            out.append(id)
            start = end
        }
        return out
    }

    /// Token ids of a text without special tokens.
    public func tokenIDs(_ text: String) -> [Int32] {
        basicTokens(text).flatMap(wordPieces)
    }

    /// `[CLS] pieces [SEP]`, the pieces truncated so that the whole is at most `maxLength` ids.
    public func encode(_ text: String, maxLength: Int = 512) -> [Int32] {
        precondition(maxLength >= 2, "maxLength must leave room for [CLS] and [SEP]")
        let pieces = tokenIDs(text)
        return [clsID] + pieces.prefix(maxLength - 2) + [sepID]
    }

    // MARK: - Character classes (as the reference defines them)

    /// The Unicode version of the reference's general-category tables.
    ///
    /// The tokenizers library classifies control, punctuation and non-spacing-mark characters with tables from
    /// Unicode 8.0: a mark, punctuation or format character assigned later is an ordinary letter to it (measured
    /// against transformers: U+08E3 and U+1171D, Unicode 8.0 marks, are stripped; U+08D3 and U+1DF6, 9.0 and
    /// later, are not; likewise U+2E42 against U+2E43 for punctuation and U+061C against U+08E2 for format).
    static let categoryVersion = Unicode.Version(major: 8, minor: 0)

    /// The general category as the reference's tables see it (nil for characters they do not know).
    static func referenceCategory(_ s: Unicode.Scalar) -> Unicode.GeneralCategory? {
        guard let age = s.properties.age,
            age.major < categoryVersion.major
                || (age.major == categoryVersion.major && age.minor <= categoryVersion.minor)
        else { return nil }
        return unicode8Changes[s.value] ?? s.properties.generalCategory
    }

    /// Characters whose general category changed after Unicode 8.0, with their 8.0 category (found by sweeping
    /// every BMP code point against the reference; see `scripts/fixtures/eval_tokenizer.py`).
    static let unicode8Changes: [UInt32: Unicode.GeneralCategory] = [
        0x166D: .otherPunctuation,  // CANADIAN SYLLABICS CHI SIGN: So since 12.0
        0x1734: .nonspacingMark,  // HANUNOO SIGN PAMUDPOD: Mc since 14.0
        0x1885: .otherLetter,  // MONGOLIAN LETTER ALI GALI BALUDA: Mn since 9.0
        0x1886: .otherLetter,  // MONGOLIAN LETTER ALI GALI THREE BALUDA: Mn since 9.0
        0xA9BD: .spacingMark,  // JAVANESE CONSONANT SIGN KERET: Mn since 12.0
    ]

    static func isNonspacingMark(_ s: Unicode.Scalar) -> Bool { referenceCategory(s) == .nonspacingMark }

    /// Characters the cleaning step drops: control, format and private-use ("Cc", "Cf", "Co") except tab, newline
    /// and carriage return. Unassigned code points ("Cn") are kept, as the reference keeps them (they end as
    /// `[UNK]`); this was measured against transformers on U+0378 and U+1FA7F.
    static func isControl(_ s: Unicode.Scalar) -> Bool {
        switch s {
        case "\t", "\n", "\r": return false
        default:
            switch referenceCategory(s) {
            case .control, .format, .privateUse, .surrogate: return true
            default: return false
            }
        }
    }

    /// Tab, newline, carriage return, and every scalar with the Unicode White_Space property.
    static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        switch s {
        case "\t", "\n", "\r", " ": return true
        default: return s.properties.isWhitespace
        }
    }

    /// All non-alphanumeric ASCII (so `$`, `+`, `^`, `` ` `` count) and every "P*" category.
    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) {
            return true
        }
        switch referenceCategory(s) {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
            .finalPunctuation, .otherPunctuation:
            return true
        default: return false
        }
    }

    /// The CJK Unified Ideographs blocks the reference isolates (not Hangul, Hiragana or Katakana).
    static func isChineseChar(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
            0x2B820...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default: return false
        }
    }
}

/// Token ids of several texts padded to a common length, with the attention mask (1 for tokens, 0 for padding).
public struct TokenBatch: Sendable, Equatable {
    /// Row-major `count × length`.
    public let ids: [Int32]
    public let mask: [Int32]
    public let count: Int
    public let length: Int
    /// Unpadded length of each sequence.
    public let lengths: [Int]

    public init(sequences: [[Int32]], padID: Int32) {
        count = sequences.count
        length = sequences.map(\.count).max() ?? 0
        lengths = sequences.map(\.count)
        var ids = [Int32](repeating: padID, count: count * length)
        var mask = [Int32](repeating: 0, count: count * length)
        for (r, seq) in sequences.enumerated() {
            for (c, id) in seq.enumerated() {
                ids[r * length + c] = id
                mask[r * length + c] = 1
            }
        }
        self.ids = ids
        self.mask = mask
    }
}
