import CheckpointIO
import Foundation
import TestSupport
import Testing

@testable import Evaluation

@Suite("BERT encoder", EvalFixture.needsModel)
struct BertEncoderTests {
    static let encoder: SentenceEncoder = {
        do { return try SentenceEncoder(path: EvalFixture.modelFolder.path) } catch { fatalError("\(error)") }
    }()

    /// The loader's encoder of `encoder`, as the concrete type (whose workspaces the tests inspect).
    static let bert: BertEncoder = {
        guard let bert = encoder.encoder as? BertEncoder else {
            fatalError("the MiniLM folder did not load a BertEncoder")
        }
        return bert
    }()

    /// Largest per-row relative L2 error of `got` against `want` (`rows × hidden`).
    static func worstRelativeError(_ got: [Float], _ want: [Float], hidden: Int) -> Double {
        PretrainedModel.worstRelativeError(got, want, hidden: hidden)
    }

    @Test("normalized embeddings of 520 texts are within 1e-4 relative error of sentence-transformers")
    func sentenceTransformersParity() throws {
        let texts = try EvalFixture.texts(EvalFixture.url("embeddings_texts.jsonl"))
        let file = try SafeTensorsFile(path: EvalFixture.url("embeddings_st.safetensors").path)
        let want = try file.tensor("embeddings").floats()
        #expect(texts.count == 520 && want.count == 520 * 384)
        let got = Self.encoder.embed(texts, maxLength: 256, batchSize: 32, normalize: true)
        let err = Self.worstRelativeError(got, want, hidden: 384)
        #expect(err < 1e-4, "worst relative error \(err)")
    }

    @Test("unnormalized mean-pooled states match transformers' BertModel, whatever the batch size")
    func pooledParity() throws {
        let texts = try EvalFixture.texts(EvalFixture.url("embeddings_texts.jsonl"))
        let file = try SafeTensorsFile(path: EvalFixture.url("embeddings_st.safetensors").path)
        let want = try file.tensor("pooled").floats()
        let sample = Array(stride(from: 0, to: texts.count, by: 7))
        let wantSample = sample.flatMap { want[($0 * 384)..<($0 * 384 + 384)] }
        for batch in [1, 5, 64] {
            let got = Self.encoder.embed(sample.map { texts[$0] }, maxLength: 256, batchSize: batch)
            let err = Self.worstRelativeError(got, Array(wantSample), hidden: 384)
            #expect(err < 1e-4, "batch \(batch): worst relative error \(err)")
        }
    }

    @Test("padding in a batch does not change an embedding")
    func paddingInvariance() {
        let tok = EvalFixture.tokenizer
        let short = tok.encode("a short text")
        let long = tok.encode("a considerably longer text that pads the short one in the same batch")
        let alone = Self.bert.embed(TokenBatch(sequences: [short], padID: tok.padID))
        let together = Self.bert.embed(TokenBatch(sequences: [long, short], padID: tok.padID))
        #expect(Self.worstRelativeError(Array(together[384...]), alone, hidden: 384) < 1e-6)
    }

    @Test(
        "batches run concurrently, or after a larger batch in a reused workspace, give the serial embeddings bit for bit"
    )
    func workspaceReuse() async {
        let tok = EvalFixture.tokenizer
        let encoder = Self.bert
        let texts = [
            "a short text", "a considerably longer text that pads the short one in the same batch",
            "sixteen words of filler so that this batch is the largest one of the four batches here today",
            "x",
        ]
        let batches = (0..<4).map { i in
            TokenBatch(sequences: (0...i).map { tok.encode(texts[($0 + i) % texts.count]) }, padID: tok.padID)
        }
        let serial = batches.reversed().map { encoder.embed($0) }.reversed() as [[Float]]
        let concurrent = await withTaskGroup(of: (Int, [Float]).self) { group in
            for round in 0..<3 {
                for (i, batch) in batches.enumerated() { group.addTask { (i + 4 * round, encoder.embed(batch)) } }
            }
            var results: [(Int, [Float])] = []
            for await r in group { results.append(r) }
            return results
        }
        for (i, got) in concurrent { #expect(got == serial[i % 4], "batch \(i % 4)") }
        #expect(encoder.workspaces.withLock { $0.count } <= BertEncoder.keptWorkspaces)
    }

    @Test("the loader reads all-MiniLM-L6-v2 as the bert family: unprefixed tensors, WordPiece, positions from 0")
    func loaderReadsMiniLM() throws {
        let loader = try EncoderLoader(path: EvalFixture.modelFolder.path)
        #expect(loader.family.modelType == "bert")
        #expect(loader.weightPrefix == "")
        #expect(loader.tokenizer is WordPieceTokenizer)
        #expect(loader.config.positionOffset == 0 && loader.config.positionPaddingID == nil)
        #expect(loader.config.maxSequenceLength == loader.config.maxPositions)
        #expect(loader.tensorNames == BertEncoder.tensorNames(layerCount: 6))
    }

    @Test("a config.json with another activation is refused with a message naming the file")
    func unsupportedActivation() {
        let e = EvalFixture.error {
            _ = try BertConfig(
                json: [
                    "model_type": "bert", "hidden_act": "relu", "hidden_size": 8, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 8,
                    "type_vocab_size": 1, "vocab_size": 10,
                ],
                file: "m/config.json")
        }
        #expect(e?.code == .unsupportedModel)
        #expect(
            e?.message == "m/config.json: hidden_act is \"relu\"; this encoder implements the exact (erf) \"gelu\".")
    }

    @Test("a tensor whose shape disagrees with the config is refused, naming the tensor")
    func shapeMismatch() {
        let config = BertConfig(
            hiddenSize: 4, layerCount: 1, headCount: 2, intermediateSize: 8, layerNormEps: 1e-12, maxPositions: 8,
            typeVocabularySize: 1, vocabularySize: 10)
        let e = EvalFixture.error {
            _ = try BertEncoder(config: config, source: "tiny") { name in
                let shape: [Int] = name == "embeddings.word_embeddings.weight" ? [9, 4] : [1]
                return (shape, [Float](repeating: 0, count: shape.reduce(1, *)))
            }
        }
        #expect(e?.code == .shapeMismatch)
        #expect(
            e?.message
                == "tiny: tensor 'embeddings.word_embeddings.weight' has shape [9, 4]; config.json implies [10, 4].")
    }
}
