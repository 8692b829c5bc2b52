import CheckpointIO
import Foundation
import Testing

@testable import Evaluation

/// The features of layer-feature routers (`LDARouter.layers`) against transformers' hidden states
/// (scripts/fixtures/eval_layers.py: layers 0, 3 and 6 of all-MiniLM-L6-v2 at max length 48).
@Suite("router features", EvalFixture.needsModel)
struct RouterFeaturesTests {
    /// The reference texts and their pooled states [texts, 3, 384].
    static func reference() throws -> (texts: [String], pooled: [Float]) {
        let file = try SafeTensorsFile(path: EvalFixture.url("layers_pooled.safetensors").path)
        let texts = try JSONDecoder().decode([String].self, from: Data((file.metadata["texts"] ?? "[]").utf8))
        #expect(file.metadata["layers"] == "0,3,6" && file.metadata["max_length"] == "48")
        return (texts, try file.tensor("pooled").floats())
    }

    @Test("layers 0, 3 and 6 pooled, each at unit length, scaled by 1/√3, match transformers within 1e-4, any batch")
    func layersMatchTransformers() throws {
        let (texts, pooled) = try Self.reference()
        #expect(texts.count == 24 && pooled.count == 24 * 3 * 384)
        // The reference's router features, made here from transformers' raw pooled states.
        var want = pooled
        MeanPooling.normalizeRows(&want, width: 384)
        want = want.map { $0 / Float(3).squareRoot() }
        for batch in [1, 7, 64] {
            let got = try BertEncoderTests.encoder.routerFeatures(
                texts, layers: [0, 3, 6], maxLength: 48, batchSize: batch)
            let err = BertEncoderTests.worstRelativeError(got, want, hidden: 384)
            #expect(err < 1e-4, "batch \(batch): worst relative error \(err)")
        }
        // One layer only: that layer's block alone, at unit length (no 1/√n beyond 1).
        let three = try BertEncoderTests.encoder.routerFeatures(texts, layers: [3], maxLength: 48, batchSize: 8)
        var want3: [Float] = []
        for t in 0..<24 { want3 += pooled[(t * 3 + 1) * 384..<((t * 3 + 2) * 384)] }
        MeanPooling.normalizeRows(&want3, width: 384)
        #expect(BertEncoderTests.worstRelativeError(three, want3, hidden: 384) < 1e-4)
    }

    @Test("no layers is the unit sentence embedding, and the last layer's block equals it")
    func noLayersIsTheEmbedding() throws {
        let (texts, _) = try Self.reference()
        let e = BertEncoderTests.encoder
        let plain = e.embed(texts, maxLength: 48, batchSize: 16, normalize: true)
        #expect(try e.routerFeatures(texts, layers: [], maxLength: 48, batchSize: 16) == plain)
        let last = try e.routerFeatures(texts, layers: [6], maxLength: 48, batchSize: 16)
        #expect(BertEncoderTests.worstRelativeError(last, plain, hidden: 384) < 1e-6)
    }

    @Test(
        "one pass gives the sentence embedding and the router's layer features, as embed and routerFeatures make them",
        arguments: [[0, 3], [3, 6], [6]])
    func embeddingAndRouterFeaturesInOnePass(layers: [Int]) throws {
        let (texts, pooled) = try Self.reference()
        let e = BertEncoderTests.encoder
        let (embedding, routing) = try e.embeddingAndRouterFeatures(texts, layers: layers, maxLength: 48, batchSize: 7)
        #expect(routing == (try e.routerFeatures(texts, layers: layers, maxLength: 48, batchSize: 7)))
        #expect(embedding == e.embed(texts, maxLength: 48, batchSize: 7))
        // Against transformers: the last layer's pooled states (slot 2 of the reference's layers 0, 3, 6).
        var want: [Float] = []
        for t in 0..<24 { want += pooled[(t * 3 + 2) * 384..<((t * 3 + 3) * 384)] }
        #expect(BertEncoderTests.worstRelativeError(embedding, want, hidden: 384) < 1e-4)
    }

    @Test("a layer past the model's last is refused, naming it and the model's range")
    func layerPastTheLast() {
        let err = EvalFixture.error {
            _ = try BertEncoderTests.encoder.routerFeatures(["a text"], layers: [3, 7], maxLength: 48, batchSize: 1)
        }
        #expect(err?.code == .incompatible)
        #expect(err?.message.contains("layer 7") == true && err?.message.contains("0 (embeddings) to 6") == true)
    }
}
