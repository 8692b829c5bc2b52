import Foundation

extension ByteLevelBPETokenizer {
    enum Segment: Equatable {
        case text([Unicode.Scalar])
        case token(Int32)
    }

    /// The text split around added tokens (leftmost, then longest match), honouring `lstrip`, `rstrip` and
    /// `single_word`.
    func splitAdded(_ s: [Unicode.Scalar]) -> [Segment] {
        guard !added.isEmpty else { return [.text(s)] }
        func isWordChar(_ c: Unicode.Scalar) -> Bool {
            c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
        }
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
        case .replace(let pattern, let content):
            return text.replacingOccurrences(of: pattern, with: content, options: .literal)
        case .prepend(let p): return text.isEmpty ? text : p + text
        case .sequence(let steps): return steps.reduce(text) { apply($1, $0) }
        }
    }

    /// The pre-tokenizer: the `Split` steps' pieces, each through the ByteLevel step; for character symbols the
    /// Metaspace words (or the whole segment when there is no pre-tokenizer). `atStart`: the segment begins the
    /// text (Metaspace's `first` scheme marks only that one).
    func preTokenize(_ text: String, atStart: Bool) -> [[UInt8]] {
        if symbols != .bytes {
            guard !text.isEmpty else { return [] }
            guard let m = metaspace else { return [Array(text.utf8)] }
            var s = Array(text.unicodeScalars).map { $0 == " " ? m.replacement : $0 }
            let prepend = m.prepend == .always || (m.prepend == .first && atStart)
            if prepend && s.first != m.replacement { s.insert(m.replacement, at: 0) }
            var words: [[Unicode.Scalar]] = []
            for c in s {
                if words.isEmpty || (m.split && c == m.replacement) { words.append([]) }
                words[words.count - 1].append(c)
            }
            return words.map { Array(String(String.UnicodeScalarView($0)).utf8) }
        }
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
                if let suffix = ["s", "t", "re", "ve", "m", "ll", "d"].first(where: {
                    rest.starts(with: $0.unicodeScalars)
                }) {
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
}
