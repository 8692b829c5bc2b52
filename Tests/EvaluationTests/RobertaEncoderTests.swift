import CheckpointIO
import Foundation
import TestSupport
import Testing

@testable import Evaluation

/// The second encoder family through `EncoderLoader`: a tiny random RoBERTa and its byte-level BPE vocabulary
/// (`scripts/fixtures/make_roberta_fixture.py`), against transformers' fast tokenizer and `RobertaModel`.
@Suite("RoBERTa encoder and byte-level BPE tokenizer")
struct RobertaEncoderTests {
    struct Reference: Decodable {
        struct Text: Decodable {
            var text: String
            var ids: [Int32]
            var pooled: [Float]
        }
        var max_length: Int
        var texts: [Text]
    }

    static let folder = EvalFixture.url("roberta-tiny")

    static let reference: Reference = {
        do {
            return try JSONDecoder().decode(
                Reference.self, from: Data(contentsOf: folder.appendingPathComponent("reference.json")))
        } catch { fatalError("\(error)") }
    }()

    static let loader: EncoderLoader = {
        do { return try EncoderLoader(path: folder.path) } catch { fatalError("\(error)") }
    }()

    /// The fixture's tokenizer.json with `change` applied, as a tokenizer (or its error).
    static func tokenizer(_ change: (inout [String: Any]) -> Void) throws(EvaluationError) -> ByteLevelBPETokenizer {
        guard let original = FileManager.default.contents(atPath: folder.appendingPathComponent("tokenizer.json").path),
            var json = (try? JSONSerialization.jsonObject(with: original)) as? [String: Any]
        else { fatalError("unreadable roberta-tiny/tokenizer.json") }
        change(&json)
        let data = (try? JSONSerialization.data(withJSONObject: json)) ?? Data()
        return try ByteLevelBPETokenizer(json: data, file: "t/tokenizer.json")
    }

    @Test("the loader picks the RoBERTa family from config.json and resolves the roberta. prefix and position offset")
    func loaderResolvesFamily() {
        let loader = Self.loader
        #expect(loader.family.modelType == "roberta")
        #expect(loader.weightPrefix == "roberta.")
        #expect(loader.config.positionOffset == 2)
        #expect(loader.config.maxSequenceLength == 128)
        #expect(loader.config.typeVocabularySize == 1)
        #expect(loader.tokenizer is ByteLevelBPETokenizer)
        #expect(
            loader.checkpointName("embeddings.word_embeddings.weight") == "roberta.embeddings.word_embeddings.weight")
    }

    @Test(
        "token ids equal transformers' fast tokenizer exactly (non-ASCII, emoji, whitespace runs, long words, added tokens)"
    )
    func tokenIDParity() {
        let tok = Self.loader.tokenizer
        for t in Self.reference.texts {
            #expect(tok.encode(t.text, maxLength: Self.reference.max_length) == t.ids, "\(t.text.debugDescription)")
        }
    }

    @Test(
        "mean-pooled hidden states are within 1e-4 relative error of transformers' RobertaModel, whatever the batch size"
    )
    func pooledParity() throws {
        let encoder = try SentenceEncoder(path: Self.folder.path)
        let texts = Self.reference.texts.map(\.text)
        let want = Self.reference.texts.flatMap(\.pooled)
        #expect(encoder.hiddenSize == 32 && want.count == texts.count * 32)
        for batch in [1, 5, 64] {
            let got = encoder.embed(texts, maxLength: Self.reference.max_length, batchSize: batch)
            let err = BertEncoderTests.worstRelativeError(got, want, hidden: 32)
            #expect(err < 1e-4, "batch \(batch): worst relative error \(err)")
        }
    }

    @Test("a TemplateProcessing post-processor gives the same ids as the equivalent RobertaProcessing")
    func templateProcessing() throws {
        let template = try Self.tokenizer { json in
            json["post_processor"] = [
                "type": "Sequence",
                "processors": [
                    ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
                    [
                        "type": "TemplateProcessing",
                        "single": [
                            ["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                            ["SpecialToken": ["id": "</s>", "type_id": 0]],
                        ],
                        "pair": [] as [Any],
                        "special_tokens": [
                            "<s>": ["id": "<s>", "ids": [0], "tokens": ["<s>"]],
                            "</s>": ["id": "</s>", "ids": [2], "tokens": ["</s>"]],
                        ],
                    ],
                ],
            ]
        }
        for t in Self.reference.texts {
            #expect(template.encode(t.text, maxLength: Self.reference.max_length) == t.ids)
        }
        let none = try Self.tokenizer { $0["post_processor"] = NSNull() }
        #expect(
            none.encode("Hello, world!", maxLength: 64) == Array(Self.reference.texts[0].ids.dropFirst().dropLast()))
    }

    @Test(
        "an unknown normalizer, pre-tokenizer, model or post-processor type is a thrown error naming the file and the type"
    )
    func unknownComponents() {
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("normalizer", { $0["normalizer"] = ["type": "Precompiled"] }, "normalizer type 'Precompiled'"),
            ("pre-tokenizer", { $0["pre_tokenizer"] = ["type": "Whitespace"] }, "pre-tokenizer type 'Whitespace'"),
            (
                "metaspace with byte level",
                {
                    $0["pre_tokenizer"] = [
                        "type": "Sequence",
                        "pretokenizers": [
                            ["type": "ByteLevel", "add_prefix_space": false],
                            ["type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first"],
                        ],
                    ]
                }, "pre_tokenizer.pretokenizers[1]: Metaspace combined with other pre-tokenizers"
            ),
            (
                "split behavior",
                {
                    $0["pre_tokenizer"] = [
                        "type": "Split", "pattern": ["Regex": "\\s+"], "behavior": "Removed", "invert": false,
                    ]
                }, "pre_tokenizer: Split behavior 'Removed' is not supported"
            ),
            (
                "split after byte level",
                {
                    $0["pre_tokenizer"] = [
                        "type": "Sequence",
                        "pretokenizers": [
                            ["type": "ByteLevel", "add_prefix_space": false],
                            ["type": "Split", "pattern": ["String": " "], "behavior": "Isolated", "invert": false],
                        ],
                    ]
                }, "pre_tokenizer.pretokenizers[1]: a Split pre-tokenizer after the ByteLevel one"
            ),
            ("post-processor", { $0["post_processor"] = ["type": "Fancy"] }, "post-processor type 'Fancy'"),
            (
                "model",
                { j in
                    var m = j["model"] as? [String: Any] ?? [:]
                    m["type"] = "Unigram"
                    j["model"] = m
                }, "model type 'Unigram'"
            ),
        ]
        for (what, change, expected) in cases {
            let e = EvalFixture.error { _ = try Self.tokenizer(change) }
            #expect(e?.code == .unsupportedTokenizer, "\(what)")
            #expect(
                e?.message.hasPrefix("t/tokenizer.json: \(expected)") == true, "\(what): \(e?.message ?? "no error")")
        }
        let merge = EvalFixture.error {
            _ = try Self.tokenizer { j in
                var m = j["model"] as? [String: Any] ?? [:]
                m["merges"] = [["q", "not-a-token"]]
                j["model"] = m
            }
        }
        #expect(merge?.code == .invalidTokenizer)
        #expect(
            merge?.message
                == "t/tokenizer.json: model.merges[0] ('q', 'not-a-token') names a token outside model.vocab.")
    }

    @Test("the GPT-2 split keeps the last space of a run for the next word and isolates contractions")
    func gpt2Split() {
        func split(_ s: String) -> [String] {
            let scalars = Array(s.unicodeScalars)
            return ByteLevelBPETokenizer.gpt2Split(scalars).map { String(String.UnicodeScalarView(scalars[$0])) }
        }
        #expect(split("a   b") == ["a", "  ", " b"])
        #expect(split("\tb  ") == ["\t", "b", "  "])
        #expect(split("it's 42!?") == ["it", "'s", " 42", "!?"])
        #expect(split("x 'll") == ["x", " '", "ll"])
    }

    @Test("a model_type without a family is refused by the loader, naming config.json and the known families")
    func unknownModelType() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(
            at: Self.folder.appendingPathComponent("model.safetensors"),
            to: dir.appendingPathComponent("model.safetensors"))
        try Data(#"{"model_type": "gpt2", "hidden_size": 32}"#.utf8).write(
            to: dir.appendingPathComponent("config.json"))
        let e = EvalFixture.error { _ = try EncoderLoader(path: dir.path) }
        #expect(e?.code == .unsupportedModel)
        #expect(
            e?.message
                == "\(dir.appendingPathComponent("config.json").path): model_type is \"gpt2\"; the encoders run \"bert\", \"roberta\"."
        )
    }
}
