import CheckpointIO
import Foundation
import TaskSwitches
import TensorKernels
import Testing

@testable import Evaluation

/// Mixed-task batches on the real model and the shipped packs: every text on its own mix in one pass must embed
/// like that text alone on the model switched in place to its mix.
@Suite("Mixed batches", .serialized, EvalFixture.needsModel)
struct MixedBatchTests {
    static let tasks = [
        "code-lang", "deb-section", "fortune", "lang-id", "man-section", "unicode-cat", "wn-noun", "wn-verb",
    ]

    /// The 8 T-Switch packs, then the 8 random-mask packs.
    static func shippedPacks() throws -> [SwitchPack] {
        let dir = EvalFixture.repository.appendingPathComponent("packs")
        return try tasks.map { try PackFile.read(dir.appendingPathComponent("\($0).tsw").path) }
            + tasks.map { try PackFile.read(dir.appendingPathComponent("random-mask/\($0).tsw").path) }
    }

    /// Three test texts of each task, interleaved.
    static func texts() throws -> [String] {
        let perTask = try tasks.map { t in
            Array(
                try EvalFixture.texts(EvalFixture.repository.appendingPathComponent("data/tasks/\(t)/test.jsonl"))
                    .prefix(3))
        }
        return (0..<3).flatMap { i in perTask.map { $0[i] } }
    }

    /// Random mixes: the base alone, one pack of either kind, or soft weights over two to four packs (both kinds
    /// together, a negative weight among them).
    static func randomMixes(count: Int, packs: Int, seed: UInt64) -> [[Double]] {
        var g = SplitMix64(seed: seed)
        return (0..<count).map { i in
            var w = [Double](repeating: 0, count: packs)
            switch i % 4 {
            case 0: break
            case 1: w[Int(g.next() % UInt64(packs))] = 1
            default:
                for _ in 0..<(2 + Int(g.next() % 3)) { w[Int(g.next() % UInt64(packs))] += g.nextUnit() * 1.5 - 0.25 }
            }
            return w
        }
    }

    /// The stated bound: a mixed batch runs the same switched weights (bit for bit) through products over fewer
    /// rows; OpenBLAS may block those differently from a batch of one text, so f32 sums may round differently.
    /// 1e-5 relative per embedding (seen on this machine: 0, every embedding bit for bit equal).
    static let bound = 1e-5

    @Test("random mixes of the 16 shipped packs in one batch equal each text embedded alone on its mix")
    func equalsAlone() throws {
        let packs = try Self.shippedPacks()
        let texts = try Self.texts()
        let mixes = Self.randomMixes(count: texts.count, packs: packs.count, seed: 7)
        let switched = try SwitchedEncoder(basePath: EvalFixture.modelFolder.path)
        let h = switched.config.hiddenSize
        let before = switched.model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
        let got = try switched.embed(texts, packs: packs, mixes: mixes, maxLength: 64, batchSize: 16)
        #expect(switched.model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == before)
        var worst = 0.0
        for (i, text) in texts.enumerated() {
            let mix = mixes[i].enumerated().filter { $0.element != 0 }.map { (packs[$0.offset], Float($0.element)) }
            let alone = try switched.withEncoder(mix) { $0.embed([text], maxLength: 64) }
            let e = BertEncoderTests.worstRelativeError(Array(got[(i * h)..<((i + 1) * h)]), alone, hidden: h)
            #expect(e < Self.bound, "text \(i) mix \(mixes[i])")
            worst = max(worst, e)
        }
        // The mixes matter: a switched text differs from the base by far more than the bound.
        let base = try switched.embed(texts, packs: [], maxLength: 64, batchSize: 16)
        let moved = (0..<texts.count).filter { i in
            BertEncoderTests.worstRelativeError(
                Array(got[(i * h)..<((i + 1) * h)]), Array(base[(i * h)..<((i + 1) * h)]), hidden: h) > 1e-3
        }
        #expect(moved.count >= texts.count / 2)
        print("mixed batch vs alone: worst relative error \(worst) over \(texts.count) texts")
    }

    @Test(
        "tile-fused batches (groups of one text and of many, the base, both kinds, negative weights) equal each text alone and the per-group layout"
    )
    func tileFusedEqualsAlone() throws {
        let packs = try Self.shippedPacks()
        let short = try Self.texts()
        // Sixteen long texts (64 tokens each, over `wholeTensorRows` rows together) share one mix, so one group
        // takes the whole-tensor path while the one-text groups take the tiles.
        let long = short.prefix(16).map { [$0, $0, $0, $0].joined(separator: " ") }
        let texts = short + long
        var shared = [Double](repeating: 0, count: packs.count)
        shared[3] = 0.8
        shared[8 + 5] = -0.4
        shared[1] = 0.3
        let mixes =
            Self.randomMixes(count: short.count, packs: packs.count, seed: 11)
            + Array(repeating: shared, count: long.count)
        #expect(long.count * 64 >= BertEncoder.wholeTensorRows)
        let switched = try SwitchedEncoder(basePath: EvalFixture.modelFolder.path)
        let h = switched.config.hiddenSize
        let fused = try switched.embed(texts, packs: packs, mixes: mixes, maxLength: 64, batchSize: texts.count)
        let layer = try switched.embed(
            texts, packs: packs, mixes: mixes, maxLength: 64, batchSize: texts.count, batching: .mixedLayer)
        var worst = 0.0
        var identical = 0
        for (i, text) in texts.enumerated() {
            let mix = mixes[i].enumerated().filter { $0.element != 0 }.map { (packs[$0.offset], Float($0.element)) }
            let alone = try switched.withEncoder(mix) { $0.embed([text], maxLength: 64) }
            let row = Array(fused[(i * h)..<((i + 1) * h)])
            let e = BertEncoderTests.worstRelativeError(row, alone, hidden: h)
            #expect(e < Self.bound, "text \(i) mix \(mixes[i])")
            #expect(
                BertEncoderTests.worstRelativeError(row, Array(layer[(i * h)..<((i + 1) * h)]), hidden: h)
                    < Self.bound, "text \(i) against the per-group layout")
            worst = max(worst, e)
            if row == alone { identical += 1 }
        }
        // The mixes matter: most switched texts move far past the bound from the base.
        let base = try switched.embed(texts, packs: [], maxLength: 64, batchSize: texts.count)
        let moved = (0..<texts.count).filter { i in
            BertEncoderTests.worstRelativeError(
                Array(fused[(i * h)..<((i + 1) * h)]), Array(base[(i * h)..<((i + 1) * h)]), hidden: h) > 1e-3
        }
        #expect(moved.count >= texts.count / 2)
        print("tile-fused vs alone: worst relative error \(worst), \(identical) of \(texts.count) bit-identical")
    }

    @Test("routing per example in mixed batches gives the regrouping's features and weights")
    func routedMatchesRegrouping() throws {
        let packs = Array(try Self.shippedPacks().prefix(8))
        let texts = try Self.texts()
        let switched = try SwitchedEncoder(basePath: EvalFixture.modelFolder.path)
        let query = try QuerySet(
            path: EvalFixture.repository.appendingPathComponent("packs/queries.safetensors").path, requireLabels: true)
        let router = try AutoSwitchRouter(query: query, k: 10)
        let mixed = try switched.embedRouted(
            texts, packs: packs, router: router, mode: .perExample, routeBatch: 1, maxLength: 64, batchSize: 16)
        let regrouped = try switched.embedRouted(
            texts, packs: packs, router: router, mode: .perExample, routeBatch: 1, maxLength: 64, batchSize: 16,
            batching: .regroup)
        #expect(mixed.weights == regrouped.weights)
        #expect(Set(mixed.weights).count > 3)
        #expect(BertEncoderTests.worstRelativeError(mixed.features, regrouped.features, hidden: 384) < Self.bound)
    }

    @Test("concurrent callers of mixed batches and of in-place switching each get their own results")
    func concurrentCallers() async throws {
        let packs = try Self.shippedPacks()
        let texts = Array(try Self.texts().prefix(12))
        let switched = try SwitchedEncoder(basePath: EvalFixture.modelFolder.path)
        let mixes = (0..<3).map { Self.randomMixes(count: texts.count, packs: packs.count, seed: UInt64(20 + $0)) }
        let serial = try mixes.map { try switched.embed(texts, packs: packs, mixes: $0, maxLength: 48, batchSize: 8) }
        let one = try switched.embed(texts, packs: [packs[2]], maxLength: 48, batchSize: 8)
        let results = try await withThrowingTaskGroup(of: (Int, [Float]).self) { group in
            for call in 0..<8 {
                group.addTask {
                    if call % 4 == 3 {
                        return (-1, try switched.embed(texts, packs: [packs[2]], maxLength: 48, batchSize: 8))
                    }
                    let k = call % 4
                    return (k, try switched.embed(texts, packs: packs, mixes: mixes[k], maxLength: 48, batchSize: 8))
                }
            }
            var all: [(Int, [Float])] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(results.count == 8)
        for (k, got) in results { #expect(got == (k < 0 ? one : serial[k]), "call kind \(k)") }
    }

    @Test("an LDA router routes each text to one pack (or the base) and the mixed batch embeds it on that pack")
    func ldaRouterPerExample() throws {
        let packs = Array(try Self.shippedPacks().prefix(8))
        let switched = try SwitchedEncoder(basePath: EvalFixture.modelFolder.path)
        // Fitted on 60 train texts per task (never the test texts it then routes).
        let plain = try SentenceEncoder(path: EvalFixture.modelFolder.path)
        var parts: [(task: String, features: QuerySet)] = []
        for t in Self.tasks {
            let texts = Array(
                try EvalFixture.texts(EvalFixture.repository.appendingPathComponent("data/tasks/\(t)/train.jsonl"))
                    .prefix(60))
            // Unit-length features: what LDA routers are fitted on (`wantsUnitFeatures`, as `route --build` does).
            let f = plain.embed(texts, maxLength: 64, normalize: true)
            parts.append((t, QuerySet(features: f, count: texts.count, dimension: 384, labels: nil, tasks: [])))
        }
        let router = try LDARouter.fit(try QuerySet.combine(parts), baseFingerprint: switched.model.fingerprint)
        let texts = try Self.texts()
        let routed = try switched.embedRouted(
            texts, packs: packs, router: router, mode: .perExample, routeBatch: 1, maxLength: 64, batchSize: 16)
        let base = plain.embed(texts, maxLength: 64, normalize: true)
        let routes = try router.route(
            QuerySet(features: base, count: texts.count, dimension: 384, labels: nil, tasks: []))
        var right = 0
        for (i, text) in texts.enumerated() {
            let w = routed.weights[i]
            #expect(w.filter { $0 != 0 }.count <= 1 && w.allSatisfy { $0 == 0 || $0 == 1 })
            let task = routes[i].map { router.tasks[$0] }
            #expect(task == w.firstIndex(of: 1).map { packs[$0].task }, "text \(i)")
            if task == Self.tasks[i % Self.tasks.count] { right += 1 }
            let mix = w.enumerated().filter { $0.element != 0 }.map { (packs[$0.offset], Float(1)) }
            let alone = try switched.withEncoder(mix) { $0.embed([text], maxLength: 64) }
            #expect(
                BertEncoderTests.worstRelativeError(
                    Array(routed.features[(i * 384)..<((i + 1) * 384)]), alone, hidden: 384) < Self.bound)
        }
        // Texts are interleaved by task (i mod 8): most go to their own task.
        #expect(right >= texts.count * 2 / 3)
    }
}
