import Foundation
import Testing

@testable import Evaluation

/// SentencePiece-style BPE (character symbols, `<0xXX>` byte fallback, `▁` word marks) against the tokenizers
/// library on three spellings of one vocabulary (scripts/fixtures/spm_tokenizer.py): Metaspace marking the first
/// word (what transformers builds from a GGUF `llama` vocabulary), Llama 2's original Prepend + Replace normalizer,
/// and Metaspace marking every segment with split words.
@Suite("SentencePiece-style BPE tokenizer")
struct SentencePieceTokenizerTests {
    static let root = EvalFixture.root.appendingPathComponent("spm")

    @Test(
        "ids equal the tokenizers library's on every text, for each pipeline",
        arguments: ["metaspace", "legacy", "split"])
    func ids(variant: String) throws {
        let data = try Data(contentsOf: Self.root.appendingPathComponent("expected.json"))
        let all = try #require(try JSONSerialization.jsonObject(with: data) as? [String: [String: [Int]]])
        let expected = try #require(all[variant])
        #expect(expected.count >= 10)
        let t = try ByteLevelBPETokenizer(folder: Self.root.appendingPathComponent(variant))
        #expect(t.symbols == .characters(byteFallback: true))
        for (text, ids) in expected {
            #expect(t.tokenIDs(text).map(Int.init) == ids, "\(variant): \(text.debugDescription)")
        }
    }

    @Test("characters outside the vocabulary fall back to their UTF-8 bytes' tokens")
    func byteFallback() throws {
        let t = try ByteLevelBPETokenizer(folder: Self.root.appendingPathComponent("metaspace"))
        // ☃ is U+2603, E2 98 83: three byte tokens after the word mark.
        let ids = t.tokenIDs("☃")
        #expect(ids.suffix(3) == [0xE2, 0x98, 0x83].map { Int32(3 + $0) })
    }
}
