import Foundation
import Testing

@testable import CheckpointIO

@Suite("tokenizer.json reader")
struct TokenizerJSONTests {
    static func read(_ text: String) throws(CheckpointError) -> TokenizerJSON {
        try TokenizerJSON(data: Data(text.utf8), file: "m/tokenizer.json")
    }

    static func error(_ text: String) -> CheckpointError? {
        do {
            _ = try read(text)
            return nil
        } catch {
            return error
        }
    }

    @Test("merges read in both forms the tokenizers library writes, vocabulary and added-token flags kept")
    func bothMergeForms() throws {
        let old = try Self.read(
            #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},"#
                + #" "added_tokens": [{"id": 3, "content": "<s>", "lstrip": true, "special": true, "normalized": false}]}"#
        )
        let new = try Self.read(#"{"model": {"vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}}"#)
        #expect(try old.merges().map { [$0.0, $0.1] } == [["a", "b"]])
        #expect(try new.merges().map { [$0.0, $0.1] } == [["a", "b"]])
        #expect(new.modelType == "BPE")
        #expect(Dictionary(uniqueKeysWithValues: old.vocab.map { ($0.token, $0.id) }) == ["a": 0, "b": 1, "ab": 2])
        #expect(
            old.addedTokens == [
                TokenizerJSON.AddedToken(id: 3, content: "<s>", lstrip: true, normalized: false, special: true)
            ])
    }

    @Test("a Unigram piece list gives ids by position, duplicates kept in order")
    func unigram() throws {
        let t = try Self.read(#"{"model": {"type": "Unigram", "vocab": [["x", -1.0], ["y", -2.0], ["x", -3.0]]}}"#)
        #expect(t.vocab.map(\.token) == ["x", "y", "x"] && t.vocab.map(\.id) == [0, 1, 2])
    }

    @Test("malformed files are refused with a message naming the file and the entry")
    func malformed() {
        #expect(
            Self.error("[1]")?.message == "m/tokenizer.json: expected a tokenizers JSON object with a 'model' entry.")
        #expect(
            Self.error(#"{"model": {"vocab": {"a": -1}}}"#)?.message
                == "m/tokenizer.json: model.vocab['a'] is not a non-negative integer id.")
        #expect(Self.error(#"{"model": {"vocab": {"a": 0}}, "added_tokens": [{"id": "x"}]}"#)?.code == .invalidEntry)
        #expect(Self.error(#"{"model": {"type": "BPE"}}"#)?.code == .invalidEntry)
        let badMerge = try? Self.read(#"{"model": {"vocab": {"a": 0}, "merges": ["a b c"]}}"#).merges()
        #expect(badMerge == nil)
    }
}
