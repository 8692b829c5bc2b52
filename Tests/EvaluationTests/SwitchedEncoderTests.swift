import CheckpointIO
import Foundation
import TaskSwitches
import Testing

@testable import Evaluation

/// Packs applied in memory give the fine-tune's embeddings, and Auto-Switch routes to the right pack.
///
/// Two synthetic "fine-tunes" of the real base move the last layer's output bias by ±0.05, alternating in sign
/// (opposite signs in the two); a pack with drop ratio 0 stores such a task vector exactly (sign mask and
/// λ = RMS = 0.05), so the switched encoder must match an encoder loaded from the fine-tune's folder.
@Suite("Switched encoder", .serialized, EvalFixture.needsModel)
struct SwitchedEncoderTests {
    static let tensor = "encoder.layer.5.output.dense.bias"

    /// Writes a copy of the base with ±`delta` (alternating) added to `tensor`, plus the base's support files.
    static func fineTune(delta: Float, into dir: URL) throws {
        try EvalFixture.fineTune(into: dir, changing: [tensor]) { _, i in i % 2 == 0 ? delta : -delta }
    }

    @Test("a pack applied to the base embeds like the fine-tune; Auto-Switch routes each text to its pack")
    func packsAndRouting() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("eval-switch-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let base = try ModelFolder(path: EvalFixture.modelFolder.path)
        var packs: [SwitchPack] = []
        var fineTuned: [SentenceEncoder] = []
        for (task, delta) in [("up", Float(0.05)), ("down", Float(-0.05))] {
            let dir = tmp.appendingPathComponent(task)
            try Self.fineTune(delta: delta, into: dir)
            let ft = try ModelFolder(path: dir.path)
            packs.append(try SwitchPack.build(base: base, fineTuned: ft, dropRatio: 0, task: task))
            fineTuned.append(try SentenceEncoder(path: dir.path))
        }
        let switched = try SwitchedEncoder(basePath: EvalFixture.modelFolder.path)
        let texts = ["a first sentence", "something else entirely", "the third text, with punctuation!"]
        let plain = try SentenceEncoder(path: EvalFixture.modelFolder.path)
        let baseFeatures = plain.embed(texts, maxLength: 48)

        for (i, pack) in packs.enumerated() {
            let got = try switched.embed(texts, packs: [pack], maxLength: 48, batchSize: 2)
            let want = fineTuned[i].embed(texts, maxLength: 48)
            #expect(BertEncoderTests.worstRelativeError(got, want, hidden: 384) < 1e-5)
            #expect(BertEncoderTests.worstRelativeError(got, baseFeatures, hidden: 384) > 1e-3)
        }
        // After switching, the base is restored exactly (same batching: BLAS may sum in another order for another
        // batch shape, so only equal batches are bit-identical on every CPU).
        #expect(
            try switched.embed(texts, packs: [], maxLength: 48, batchSize: 2)
                == plain.embed(texts, maxLength: 48, batchSize: 2))

        // Query set: the base features of the texts themselves, labelled up, down, up; 1-NN routes each back.
        let query = QuerySet(
            features: baseFeatures, count: 3, dimension: 384, labels: [0, 1, 0], tasks: ["up", "down"])
        let router = try AutoSwitchRouter(query: query, k: 1)
        let routed = try switched.embedRouted(
            texts, packs: [packs[1], packs[0]], router: router, mode: .perExample, routeBatch: 1, maxLength: 48,
            batchSize: 2)
        #expect(routed.weights == [[0, 1], [1, 0], [0, 1]])
        for (row, want) in [0, 1, 0].enumerated() {
            let got = Array(routed.features[(row * 384)..<(row * 384 + 384)])
            let ref = fineTuned[want].embed([texts[row]], maxLength: 48)
            #expect(BertEncoderTests.worstRelativeError(got, ref, hidden: 384) < 1e-5)
        }
    }

    @Test("the encoder reading switched weights in place embeds byte for byte like a copy and like `apply`'s model")
    func inPlaceMatchesCopies() async throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("eval-inplace-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let base = try ModelFolder(path: EvalFixture.modelFolder.path)
        let dir = tmp.appendingPathComponent("up")
        try Self.fineTune(delta: 0.05, into: dir)
        let pack = try SwitchPack.build(
            base: base, fineTuned: try ModelFolder(path: dir.path), dropRatio: 0.3, task: "up")
        let switched = try SwitchedEncoder(basePath: EvalFixture.modelFolder.path)
        let texts = ["a first sentence", "something else entirely", "the third text, with punctuation!"]
        let mix: [(pack: SwitchPack, weight: Float)] = [(pack, 0.7)]

        try switched.model.activate(mix)
        let copied = try switched.currentEncoder().embed(texts, maxLength: 48, batchSize: 2)
        switched.model.reset()
        let inPlace = try switched.withEncoder(mix) { $0.embed(texts, maxLength: 48, batchSize: 2) }
        #expect(inPlace.map(\.bitPattern) == copied.map(\.bitPattern))
        let out = tmp.appendingPathComponent("applied").path
        try SwitchApplier.write(base: base, packs: mix, output: out, dtype: .F32)
        let applied = try SentenceEncoder(path: out).embed(texts, maxLength: 48, batchSize: 2)
        #expect(inPlace.map(\.bitPattern) == applied.map(\.bitPattern))
        let plain = try SentenceEncoder(path: EvalFixture.modelFolder.path).embed(texts, maxLength: 48, batchSize: 2)
        #expect(inPlace != plain)

        // Concurrent callers alternating the mix and the base each get their own embeddings.
        let results = try await withThrowingTaskGroup(of: (Bool, [Float]).self) { group in
            for k in 0..<6 {
                group.addTask {
                    let useMix = k % 2 == 0
                    return (
                        useMix,
                        try switched.withEncoder(useMix ? mix : []) { $0.embed(texts, maxLength: 48, batchSize: 2) }
                    )
                }
            }
            var all: [(Bool, [Float])] = []
            for try await r in group { all.append(r) }
            return all
        }
        for (useMix, got) in results { #expect(got.map(\.bitPattern) == (useMix ? inPlace : plain).map(\.bitPattern)) }
    }

    @Test("a query-set task without a pack is refused with a message naming it")
    func missingPack() throws {
        let switched = try SwitchedEncoder(basePath: EvalFixture.modelFolder.path)
        let query = QuerySet(
            features: [Float](repeating: 1, count: 384), count: 1, dimension: 384, labels: [0], tasks: ["x"])
        let router = try AutoSwitchRouter(query: query, k: 1)
        let e = EvalFixture.error {
            _ = try switched.embedRouted(
                ["t"], packs: [], router: router, mode: .perExample, routeBatch: 1, maxLength: 8, batchSize: 1)
        }
        #expect(e?.code == .incompatible)
        #expect(
            e?.message == "The router routes to task 'x', but none of the packs given is for that task (packs: []).")
    }
}
