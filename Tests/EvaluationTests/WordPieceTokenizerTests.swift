import CheckpointIO
import Foundation
import Testing

@testable import Evaluation

@Suite("WordPiece tokenizer", EvalFixture.needsModel)
struct WordPieceTokenizerTests {
    @Test("token ids equal transformers' tokenizer on every text of the eight tasks")
    func taskTexts() throws {
        let file = try SafeTensorsFile(path: EvalFixture.url("tokenizer_tasks.safetensors").path)
        let ids = EvalFixture.integers(try file.tensor("ids"))
        let offsets = EvalFixture.integers(try file.tensor("offsets"))
        let files = try #require(file.metadata["files"]).split(separator: ",").map(String.init)
        let counts = try #require(file.metadata["counts"]).split(separator: ",").compactMap { Int($0) }
        #expect(files.count == 16 && counts.count == 16)
        let tok = EvalFixture.tokenizer
        var row = 0
        var mismatches: [String] = []
        for (name, count) in zip(files, counts) {
            let texts = try EvalFixture.texts(EvalFixture.repository.appendingPathComponent("data/tasks/\(name)"))
            #expect(texts.count == count, "\(name) changed since the fixture was made")
            for text in texts {
                let expected = ids[offsets[row]..<offsets[row + 1]].map { Int32($0) }
                let got = tok.encode(text, maxLength: 100_000)
                if got != expected && mismatches.count < 5 { mismatches.append("\(name): \(text)") }
                row += 1
            }
        }
        #expect(row == offsets.count - 1)
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    @Test("token ids equal the reference on adversarial strings, with and without truncation")
    func adversarial() throws {
        let cases = try #require(
            JSONSerialization.jsonObject(with: Data(contentsOf: EvalFixture.url("tokenizer_adversarial.json")))
                as? [[String: Any]])
        #expect(cases.count > 300)
        let tok = EvalFixture.tokenizer
        for c in cases {
            let text = try #require(c["text"] as? String)
            let ids = try #require(c["ids"] as? [Int]).map { Int32($0) }
            let ids8 = try #require(c["ids8"] as? [Int]).map { Int32($0) }
            #expect(tok.encode(text) == ids, "text \(text.unicodeScalars.map { String($0.value, radix: 16) })")
            #expect(tok.encode(text, maxLength: 8) == ids8, "truncated: \(text)")
        }
    }

    @Test("every BMP code point between two letters tokenizes as the reference does (Unicode tables, marks, case)")
    func codePointSweep() throws {
        let file = try SafeTensorsFile(path: EvalFixture.url("tokenizer_sweep.safetensors").path)
        let ids = EvalFixture.integers(try file.tensor("ids"))
        let offsets = EvalFixture.integers(try file.tensor("offsets"))
        let view = try file.tensor("codepoints")
        let codepoints = (0..<view.elementCount).map {
            UInt32(littleEndian: view.bytes.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))
        }
        #expect(codepoints.count > 18_000)
        let tok = EvalFixture.tokenizer
        var wrong: [String] = []
        for (i, cp) in codepoints.enumerated() {
            guard let scalar = Unicode.Scalar(cp) else { continue }
            let expected = ids[offsets[i]..<offsets[i + 1]].map { Int32($0) }
            let got = tok.tokenIDs("a" + String(Character(scalar)) + "b")
            if got != expected { wrong.append(String(cp, radix: 16)) }
        }
        #expect(wrong.isEmpty, "\(wrong.count) code points differ: \(wrong.prefix(40))")
    }

    @Test("a word over 100 characters is [UNK], one of exactly 100 is split into pieces")
    func longWords() {
        let tok = EvalFixture.tokenizer
        #expect(tok.tokenIDs(String(repeating: "a", count: 101)) == [tok.unkID])
        let hundred = tok.tokenIDs(String(repeating: "a", count: 100))
        #expect(hundred.count > 1 && !hundred.contains(tok.unkID))
    }

    @Test("batches are padded with [PAD] to the longest sequence and masked")
    func batchPadding() {
        let tok = EvalFixture.tokenizer
        let batch = tok.encodeBatch(["a", "hello world again"], maxLength: 64)
        #expect(batch.count == 2)
        #expect(batch.lengths == [3, 5])
        #expect(batch.length == 5)
        #expect(Array(batch.ids[0..<5]) == [tok.clsID, tok.tokenIDs("a")[0], tok.sepID, tok.padID, tok.padID])
        #expect(Array(batch.mask[0..<5]) == [1, 1, 1, 0, 0])
        #expect(Array(batch.mask[5..<10]) == [1, 1, 1, 1, 1])
    }

    @Test("a vocabulary without [UNK] is refused with a message naming the file")
    func missingSpecialToken() {
        let e = EvalFixture.error {
            _ = try WordPieceTokenizer(vocabulary: Data("[PAD]\n[CLS]\n[SEP]\nhello\n".utf8), file: "v.txt")
        }
        #expect(e?.code == .invalidVocabulary)
        #expect(e?.message == "v.txt: the vocabulary has no [UNK] token.")
    }

    @Test("vocabulary matching compares bytes: precomposed Hangul does not match decomposed jamo")
    func byteComparison() throws {
        let tok = try WordPieceTokenizer(
            vocabulary: Data("[PAD]\n[UNK]\n[CLS]\n[SEP]\n\u{AC00}\n".utf8), file: "v.txt")
        // NFD turns U+AC00 into two jamo, which the byte-compared vocabulary does not contain.
        #expect(tok.tokenIDs("\u{AC00}") == [tok.unkID])
        let raw = try WordPieceTokenizer(
            vocabulary: Data("[PAD]\n[UNK]\n[CLS]\n[SEP]\n\u{AC00}\n".utf8), file: "v.txt", lowercase: false)
        #expect(raw.tokenIDs("\u{AC00}") == [4])
    }
}
