import Foundation

/// The tokenizers library's `Split` pre-tokenizer with behaviour `Isolated`: every match of the pattern becomes a
/// piece of its own, and so does each stretch of text between matches (Llama 3 and Qwen2 split digits, words and
/// punctuation this way before the ByteLevel step).
///
/// Regex patterns run on ICU (`NSRegularExpression`), whose syntax covers what these tokenizers use (`\p{L}`,
/// `\p{N}{1,3}`, `(?i:...)`, `(?!\S)`); the library runs Oniguruma. The two agree on the fixtures' texts (ASCII,
/// accents, CJK, emoji, digits, newlines, tabs and runs of spaces); rarer whitespace classes are not checked.
struct SplitPattern: @unchecked Sendable {
    // NSRegularExpression is immutable and documented as safe to use from several threads.
    let regex: NSRegularExpression

    /// Reads a `{"type": "Split", "pattern": {"Regex" | "String": ...}, "behavior": "Isolated", "invert": false}`.
    init(_ json: [String: Any], path: String, file: String) throws(EvaluationError) {
        func unsupported(_ what: String) -> EvaluationError {
            EvaluationError(.unsupportedTokenizer, "\(file): \(what)")
        }
        guard let pattern = json["pattern"] as? [String: Any] else {
            throw EvaluationError(.invalidTokenizer, "\(file): \(path).pattern is not an object.")
        }
        let source: String
        if let r = pattern["Regex"] as? String {
            source = r
        } else if let literal = pattern["String"] as? String, !literal.isEmpty {
            source = NSRegularExpression.escapedPattern(for: literal)
        } else {
            throw unsupported("\(path).pattern must be a Regex or a non-empty String (\(pattern.keys.sorted())).")
        }
        let behavior = json["behavior"] as? String ?? ""
        guard behavior == "Isolated" else {
            throw unsupported(
                "\(path): Split behavior '\(behavior)' is not supported; this tokenizer implements Isolated.")
        }
        guard json["invert"] as? Bool != true else { throw unsupported("\(path): an inverted Split is not supported.") }
        do {
            regex = try NSRegularExpression(pattern: source)
        } catch {
            throw unsupported(
                "\(path): the Split pattern '\(source)' does not compile as a regular expression: \(error).")
        }
    }

    /// The pieces of `text`: matches and the text between them, in order, none empty.
    func pieces(_ text: String) -> [String] {
        var out: [String] = []
        var last = text.startIndex
        for m in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            guard let r = Range(m.range, in: text), !r.isEmpty else { continue }
            if last < r.lowerBound { out.append(String(text[last..<r.lowerBound])) }
            out.append(String(text[r]))
            last = r.upperBound
        }
        if last < text.endIndex { out.append(String(text[last...])) }
        return out
    }
}
