import CheckpointIO
import Foundation
import TensorKernels

extension VocabularyAlignment {
    /// The output tokenizer files: tokenizer.json, and the source's tokenizer_config.json (its
    /// `added_tokens_decoder` brought in line), special_tokens_map.json and chat template.
    func outputFiles() throws(MergeError) -> [(name: String, contents: Data)] {
        var files: [(name: String, contents: Data)] = [("tokenizer.json", try output.serialized())]
        let configURL = output.directory.appendingPathComponent("tokenizer_config.json")
        if let data = output.supportFile("tokenizer_config.json") {
            guard var json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
                throw MergeError(.checkpoint, "\(configURL.path): expected a JSON object.")
            }
            if json["added_tokens_decoder"] != nil {
                var decoder: [String: Any] = [:]
                for a in output.added {
                    var e = a.json
                    e["id"] = nil
                    decoder[String(a.id)] = e
                }
                json["added_tokens_decoder"] = decoder
            }
            guard
                let d = try? JSONSerialization.data(
                    withJSONObject: json, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            else {
                throw MergeError(.checkpoint, "\(configURL.path): could not be re-serialised.")
            }
            files.append(("tokenizer_config.json", d + Data("\n".utf8)))
        }
        for name in ["special_tokens_map.json", "chat_template.jinja"] {
            if let d = output.supportFile(name) { files.append((name, d)) }
        }
        return files
    }

    /// Tokenizer files of the source that the rewritten tokenizer.json supersedes and the output must not carry.
    static let staleFiles = [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
        "tokenizer.model",
        "merges.txt", "added_tokens.json", "chat_template.jinja",
    ]

    /// Replaces the tokenizer files `copySupportFiles` brought from the support model by the merged tokenizer's.
    func writeTokenizer(to writer: ModelWriter) throws(MergeError) {
        for name in Self.staleFiles {
            try? FileManager.default.removeItem(at: writer.temporary.appendingPathComponent(name))
        }
        let files = try outputFiles()
        for f in files {
            try checkpoint { () throws(CheckpointError) in try writer.addFile(f.name, contents: f.contents) }
        }
    }

    /// Sets the output config.json's vocabulary size (mergekit's `_update_config_vocab`).
    func updateConfig(_ json: inout [String: Any]) {
        if json["vocab_size"] == nil, var text = json["text_config"] as? [String: Any], text["vocab_size"] != nil {
            text["vocab_size"] = rows
            json["text_config"] = text
        } else {
            json["vocab_size"] = rows
        }
    }
}
