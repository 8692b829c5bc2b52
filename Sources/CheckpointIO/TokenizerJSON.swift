import Foundation

/// The parts of a Hugging Face `tokenizer.json` (the tokenizers library's format) that more than one module reads:
/// the model's type and vocabulary, its BPE merges, and `added_tokens`. The BPE tokenizer of `Evaluation` and the
/// vocabulary merge of `MergeEngine` both read the file through it, so they agree on what a valid file is.
///
/// Errors are `CheckpointError`s (`.invalidJSON`, `.invalidEntry`) naming the file; callers re-code them as their
/// module's error and keep the message.
package struct TokenizerJSON {
    /// One `added_tokens` entry with its flags.
    package struct AddedToken: Sendable, Equatable {
        package var id: Int
        package var content: String
        package var singleWord = false
        package var lstrip = false
        package var rstrip = false
        package var normalized = true
        package var special = false

        package init(
            id: Int, content: String, singleWord: Bool = false, lstrip: Bool = false, rstrip: Bool = false,
            normalized: Bool = true, special: Bool = false
        ) {
            self.id = id
            self.content = content
            self.singleWord = singleWord
            self.lstrip = lstrip
            self.rstrip = rstrip
            self.normalized = normalized
            self.special = special
        }

        /// The entry as the file writes it.
        package var json: [String: Any] {
            [
                "id": id, "content": content, "single_word": singleWord, "lstrip": lstrip, "rstrip": rstrip,
                "normalized": normalized, "special": special,
            ]
        }
    }

    /// The path named in messages.
    package let file: String
    /// The whole file, for the components only one reader interprets (normalizer, pre-tokenizer, post-processor).
    package let root: [String: Any]
    /// The `model` object.
    package let model: [String: Any]
    /// `model.type`; `BPE` when absent, as the tokenizers library assumes for old files.
    package let modelType: String
    /// The model's tokens and ids (without added tokens): `model.vocab` of BPE / WordPiece / WordLevel, or the
    /// position of each piece of a Unigram list. Duplicates of a Unigram piece are kept; the first one is the
    /// tokenizers library's.
    package let vocab: [(token: String, id: Int)]
    package let addedTokens: [AddedToken]

    /// Largest id a tokenizer may use (the tokenizers library's ids are `u32`; every reader here keeps `Int32`).
    package static let maxID = Int(Int32.max) - 1

    package init(data: Data, file: String) throws(CheckpointError) {
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
            let model = root["model"] as? [String: Any]
        else {
            throw CheckpointError(.invalidJSON, "\(file): expected a tokenizers JSON object with a 'model' entry.")
        }
        self.file = file
        self.root = root
        self.model = model
        modelType = model["type"] as? String ?? "BPE"
        var vocab: [(token: String, id: Int)] = []
        if let dict = model["vocab"] as? [String: Any] {
            for (token, id) in dict {
                guard let n = id as? Int, n >= 0, n <= Self.maxID else {
                    throw CheckpointError(
                        .invalidEntry, "\(file): model.vocab['\(token)'] is not a non-negative integer id.")
                }
                vocab.append((token, n))
            }
        } else if let list = model["vocab"] as? [Any] {  // Unigram: [[piece, score], ...], id = position
            for (i, entry) in list.enumerated() {
                guard let pair = entry as? [Any], let piece = pair.first as? String else {
                    throw CheckpointError(.invalidEntry, "\(file): model.vocab[\(i)] is not a [piece, score] pair.")
                }
                vocab.append((piece, i))
            }
        } else {
            throw CheckpointError(
                .invalidEntry,
                "\(file): model.vocab is missing; expected a token -> id mapping or a Unigram piece list.")
        }
        self.vocab = vocab
        var added: [AddedToken] = []
        for (i, entry) in ((root["added_tokens"] as? [Any]) ?? []).enumerated() {
            guard let e = entry as? [String: Any], let id = e["id"] as? Int, id >= 0, id <= Self.maxID,
                let content = e["content"] as? String
            else {
                throw CheckpointError(
                    .invalidEntry, "\(file): added_tokens[\(i)] needs an integer 'id' and a string 'content'.")
            }
            added.append(
                AddedToken(
                    id: id, content: content, singleWord: e["single_word"] as? Bool ?? false,
                    lstrip: e["lstrip"] as? Bool ?? false,
                    rstrip: e["rstrip"] as? Bool ?? false, normalized: e["normalized"] as? Bool ?? true,
                    special: e["special"] as? Bool ?? false))
        }
        addedTokens = added
    }

    /// `model.merges` in rank order, each as its two tokens; written as `"a b"` strings (older files) or
    /// `["a", "b"]` pairs (tokenizers 0.20 on).
    package func merges() throws(CheckpointError) -> [(String, String)] {
        var out: [(String, String)] = []
        for (rank, entry) in ((model["merges"] as? [Any]) ?? []).enumerated() {
            let parts: [String]
            if let s = entry as? String {
                parts = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            } else {
                parts = (entry as? [String]) ?? []
            }
            guard parts.count == 2 else {
                throw CheckpointError(.invalidEntry, "\(file): model.merges[\(rank)] is not a pair of tokens.")
            }
            out.append((parts[0], parts[1]))
        }
        return out
    }
}
