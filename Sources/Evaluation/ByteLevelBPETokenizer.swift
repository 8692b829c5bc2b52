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
/// The same BPE also runs SentencePiece-style vocabularies (Llama 2, Mistral, TinyLlama, and what `tswitch convert`
/// writes for a GGUF `llama` vocabulary): no ByteLevel step, a word's characters as the initial symbols with
/// `<0xXX>` byte fallback for characters outside the vocabulary, words marked by a `Metaspace` pre-tokenizer
/// (`▁` for spaces, prepended to the first word or to every segment) or by the older normalizer
/// `Prepend("▁") + Replace(" ", "▁")`.
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

    /// How a word becomes its initial symbols.
    enum Symbols: Sendable, Equatable {
        /// Its UTF-8 bytes as GPT-2's byte-level characters.
        case bytes
        /// Its characters, those outside the vocabulary as their UTF-8 bytes' `<0xXX>` tokens when `byteFallback`.
        case characters(byteFallback: Bool)
    }

    /// The `Metaspace` pre-tokenizer: spaces become `replacement`, which also marks the start of a word.
    struct Metaspace: Sendable, Equatable {
        enum Prepend: Sendable { case always, first, never }
        var replacement: Unicode.Scalar
        var prepend: Prepend
        /// Split into words, each starting at a replacement (`MergedWithNext`).
        var split: Bool
    }

    let normalizer: Normalizer?
    let symbols: Symbols
    let metaspace: Metaspace?
    /// The id of each byte's `<0xXX>` token (character symbols with byte fallback).
    let byteFallbackIDs: [Int32?]
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
        segments: for (index, segment) in splitAdded(Array(text.unicodeScalars)).enumerated() {
            switch segment {
            case .token(let id): out.append(id)
            case .text(let scalars):
                let normalized = normalize(String(String.UnicodeScalarView(scalars)))
                for word in preTokenize(normalized, atStart: index == 0) {
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

    static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

    /// BPE of one pre-tokenized word: its bytes as byte-level symbols, then the lowest-ranked adjacent pair merged
    /// (leftmost first among equal ranks) until no pair has a merge, as the tokenizers library's `merge_all` does.
    func bpe(_ word: [UInt8]) -> [Int32] {
        if ignoreMerges {
            let key = self.symbols == .bytes ? Array(String(word.map { Self.byteCharacters[Int($0)] }).utf8) : word
            if let id = vocab[key] { return [id] }
        }
        var symbols = initialSymbols(word)
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

    /// A word's symbols before any merge (`word` is its UTF-8).
    func initialSymbols(_ word: [UInt8]) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.count)
        switch self.symbols {
        case .bytes:
            for b in word {
                if let id = byteIDs[Int(b)] {
                    symbols.append(id)
                } else if let unk = unkID {
                    symbols.append(unk)
                }
            }
        case .characters(let byteFallback):
            for c in String(decoding: word, as: UTF8.self).unicodeScalars {
                var utf8: [UInt8] = []
                UTF8.encode(c) { utf8.append($0) }
                if let id = vocab[utf8] {
                    symbols.append(id)
                } else if byteFallback, case let ids = utf8.compactMap({ byteFallbackIDs[Int($0)] }),
                    ids.count == utf8.count
                {
                    symbols += ids
                } else if let unk = unkID {
                    symbols.append(unk)
                }
            }
        }
        return symbols
    }

    /// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 on.
    static let byteCharacters: [Character] = {
        var table = [Character](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Character(Unicode.Scalar(UInt8(b)))
            } else {
                guard let scalar = Unicode.Scalar(next) else { preconditionFailure("U+\(next) is not a scalar") }
                table[b] = Character(scalar)
                next += 1
            }
        }
        return table
    }()
}
