import CheckpointIO
import Foundation

/// A model's tokenizer as mergekit's vocabulary merge sees it: `tokenizer.json` (Hugging Face `tokenizers` format)
/// read into token -> id (`model.vocab` of BPE / WordPiece / WordLevel, the piece list of Unigram, then
/// `added_tokens`), plus the embedding rows the model uses (`vocab_size` of config.json).
struct TokenizerVocabulary: Sendable {
    /// One `added_tokens` entry, flags kept so that a union carries them over unchanged.
    typealias AddedToken = TokenizerJSON.AddedToken

    /// The folder the files come from and the tokenizer.json path, for messages.
    let directory: URL
    let file: String
    /// The raw tokenizer.json, rewritten when this vocabulary is the output's.
    let data: Data
    let modelType: String
    /// Token -> id of the tokenizer model (without added tokens).
    var modelVocab: [String: Int]
    var added: [AddedToken]
    /// Rows of the model's embedding the tokenizer may address (config.json `vocab_size`, else the token count).
    let vocabSize: Int
    /// A GGUF model's support files, made from its metadata (nil: read them from `directory`).
    var generated: [String: Data]? = nil

    /// The source's support file `name` (tokenizer_config.json, ...), nil when it has none.
    func supportFile(_ name: String) -> Data? {
        if let generated { return generated[name] }
        return try? Data(contentsOf: directory.appendingPathComponent(name))
    }

    /// mergekit's `get_vocab()`: model tokens, then added tokens (which win).
    var vocab: [String: Int] {
        var v = modelVocab
        for a in added { v[a.content] = a.id }
        return v
    }

    /// Reads `tokenizer.json` of `folder`; nil when the folder has no tokenizer file at all (mergekit then assumes
    /// the base's tokenizer).
    static func read(_ folder: ModelFolder, reference: String) throws(MergeError) -> TokenizerVocabulary? {
        let dir = folder.directory
        if folder.gguf != nil {
            // A GGUF model's tokenizer files are made from its metadata; what lies beside the file is not its own.
            guard let data = folder.generatedFiles["tokenizer.json"] else { return nil }
            return try parse(
                folder, data: data, file: "\(folder.path) (tokenizer.json from its metadata)", directory: dir,
                generated: folder.generatedFiles)
        }
        let url = dir.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            let others = ["tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json"]
            if let f = others.first(where: {
                FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path)
            }) {
                throw MergeError(
                    .checkpoint,
                    "\(dir.path): model '\(reference)' has \(f) but no tokenizer.json; vocabulary merging reads the Hugging Face tokenizers format only."
                )
            }
            return nil
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw MergeError(.checkpoint, "\(url.path): cannot read the tokenizer: \(error.localizedDescription).")
        }
        return try parse(folder, data: data, file: url.path, directory: dir, generated: nil)
    }

    private static func parse(
        _ folder: ModelFolder, data: Data, file: String, directory dir: URL, generated: [String: Data]?
    ) throws(MergeError) -> TokenizerVocabulary {
        let json: TokenizerJSON
        do {
            json = try TokenizerJSON(data: data, file: file)
        } catch {
            throw MergeError(.checkpoint, error.message, cause: error)
        }
        let type = json.modelType
        var modelVocab: [String: Int] = [:]
        for (token, id) in json.vocab where modelVocab[token] == nil { modelVocab[token] = id }
        let added = json.addedTokens
        var size: Int?
        if let c = try? folder.config() {
            size = c["vocab_size"] as? Int ?? (c["text_config"] as? [String: Any])?["vocab_size"] as? Int
        }
        var count = modelVocab
        for a in added { count[a.content] = a.id }
        return TokenizerVocabulary(
            directory: dir, file: file, data: data, modelType: type, modelVocab: modelVocab, added: added,
            vocabSize: size ?? count.count, generated: generated)
    }

    /// mergekit's `get_stripped_tokenizer`: drops tokens with id >= vocab_size (and BPE merges that use them).
    func stripped() throws(MergeError) -> TokenizerVocabulary {
        guard vocab.values.contains(where: { $0 >= vocabSize }) else { return self }
        guard modelType == "BPE" else {
            throw MergeError(
                .checkpoint,
                "\(file): the tokenizer has ids beyond vocab_size \(vocabSize) and is \(modelType); only BPE tokenizers can be stripped for a vocabulary merge (as in mergekit)."
            )
        }
        var s = self
        s.modelVocab = modelVocab.filter { $0.value < vocabSize }
        s.added = added.filter { $0.id < vocabSize }
        return s
    }

    /// The tokenizer.json text of this vocabulary: the original file with `model.vocab` / `added_tokens` replaced by
    /// the current ones (BPE merges naming a removed token dropped).
    func serialized() throws(MergeError) -> Data {
        guard var json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
            var model = json["model"] as? [String: Any]
        else { throw MergeError(.checkpoint, "\(file): the tokenizer is not a JSON object.") }
        // The vocabulary is written by hand in id order: sorting 10⁵ keys through JSONSerialization's
        // locale-aware comparison takes seconds, and id order is how the tokenizers library writes it.
        let placeholder = "@@taskswitch-vocabulary@@"
        let handWritten = model["vocab"] is [String: Any]
        if handWritten { model["vocab"] = placeholder }
        if modelType == "BPE", let merges = model["merges"] as? [Any] {
            let known = Set(modelVocab.keys)
            model["merges"] = merges.filter { m in
                let parts: [String]
                if let s = m as? String {
                    parts = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                } else {
                    parts = (m as? [String]) ?? []
                }
                return parts.allSatisfy { known.contains($0) }
            }
        }
        json["model"] = model
        json["added_tokens"] = added.sorted { $0.id < $1.id }.map(\.json)
        guard
            let out = try? JSONSerialization.data(
                withJSONObject: json, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]),
            var text = String(data: out, encoding: .utf8)
        else {
            throw MergeError(.checkpoint, "\(file): the merged tokenizer could not be serialised.")
        }
        if handWritten, let range = text.range(of: jsonQuoted(placeholder)) {
            let entries = modelVocab.sorted { $0.value < $1.value }.map { "\(jsonQuoted($0.key)): \($0.value)" }
            text.replaceSubrange(range, with: "{\n" + entries.joined(separator: ",\n") + "\n}")
        }
        return Data((text + "\n").utf8)
    }

    /// The Rust `AddedVocabulary.add_tokens` rule, token by token: an existing token keeps its id (and is
    /// registered as added if it was a model token); a new one gets max(model vocab size, largest added id + 1).
    mutating func add(_ tokens: [AddedToken]) {
        var contents = Set(added.map(\.content))
        var maxAdded = added.map(\.id).max()
        let n = modelVocab.count
        for token in tokens where contents.insert(token.content).inserted {
            var t = token
            if let id = modelVocab[token.content] {
                t.id = id
            } else {
                t.id = maxAdded.map { $0 >= n || n == 0 ? $0 + 1 : n } ?? n
            }
            maxAdded = max(maxAdded ?? t.id, t.id)
            added.append(t)
        }
    }
}
