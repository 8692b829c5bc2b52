import CheckpointIO
import Foundation
import TestSupport
import Testing

@testable import TaskSwitches

/// Auto-Switch routing against scikit-learn's `KNeighborsClassifier` on real MiniLM features
/// (`scripts/fixtures/switch_route_features.py --fixture`).
struct RouterTests {
    struct Reference: Decodable {
        let k: Int
        let shares: [String: [[Double]]]
    }

    static func load() throws -> (QuerySet, QuerySet, Reference) {
        let q = try QuerySet(path: Fixture.url("route/queries.safetensors").path, requireLabels: true)
        let t = try QuerySet(path: Fixture.url("route/test.safetensors").path, requireLabels: false)
        let r = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Fixture.url("route/reference.json")))
        return (q, t, r)
    }

    @Test("neighbour shares match scikit-learn's predict_proba", arguments: AutoSwitchRouter.Distance.allCases)
    func matchesSklearn(_ distance: AutoSwitchRouter.Distance) throws {
        let (q, t, ref) = try Self.load()
        #expect(q.tasks == ["wn-noun", "wn-verb", "fortune"])
        let router = try AutoSwitchRouter(query: q, k: ref.k, distance: distance)
        let shares = try router.shares(t)
        let expected = try #require(ref.shares[distance.rawValue])
        #expect(shares.count == expected.count)
        for (a, b) in zip(shares, expected) {
            for (x, y) in zip(a, b) { #expect(abs(x - y) < 1e-9) }
        }
    }

    @Test("batch modes give one weight set per batch; hard mode is one-hot")
    func modes() throws {
        let (q, t, _) = try Self.load()
        let router = try AutoSwitchRouter(query: q, k: 5, distance: .cosine)
        let per = try router.weights(t, mode: .perExample)
        let soft = try router.weights(t, mode: .softBatchMean, batchSize: 10)
        let hard = try router.weights(t, mode: .hardBatchMean, batchSize: 10)
        for b in 0..<3 {
            let rows = (b * 10)..<(b * 10 + 10)
            for j in 0..<3 {
                let mean = rows.reduce(0.0) { $0 + per[$1][j] } / 10
                for r in rows { #expect(abs(soft[r][j] - mean) < 1e-12) }
            }
            for r in rows {
                #expect(hard[r].reduce(0, +) == 1)
                #expect(hard[r][AutoSwitchRouter.argmax(soft[r])] == 1)
            }
        }
        let score = try router.score(t, mode: .perExample)
        #expect(score.examples == 30)
        #expect(score.accuracy > 0.34)  // better than chance on three real tasks
    }

    @Test("a query set round-trips through its file, and bad files are refused")
    func files() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let qs = QuerySet(features: [1, 2, 3, 4, 5, 6], count: 3, dimension: 2, labels: [0, 1, 1], tasks: ["a", "b"])
        let p = dir.appendingPathComponent("q.safetensors").path
        try qs.write(to: p)
        let back = try QuerySet(path: p, requireLabels: true)
        #expect(back.features == qs.features && back.labels == qs.labels && back.tasks == qs.tasks)
        let unlabelled = QuerySet(features: [1, 2], count: 1, dimension: 2, labels: nil, tasks: [])
        let u = dir.appendingPathComponent("u.safetensors").path
        try unlabelled.write(to: u)
        let err = switchError { () throws(SwitchError) in _ = try QuerySet(path: u, requireLabels: true) }
        #expect(err?.code == .invalidQuerySet)
        let router = try AutoSwitchRouter(query: back, k: 1, distance: .euclidean)
        let wrongDim = QuerySet(features: [1, 2, 3], count: 1, dimension: 3, labels: nil, tasks: [])
        #expect(switchError { () throws(SwitchError) in _ = try router.shares(wrongDim) }?.code == .invalidFeatures)
        #expect(
            switchError { () throws(SwitchError) in _ = try AutoSwitchRouter(query: back, k: 4) }?.code
                == .invalidArgument)
    }

    @Test(
        "a features file's 'layers' metadata is read; one that does not divide the dimension or does not parse is refused"
    )
    func layerMetadata() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        func file(_ name: String, layers: String?) throws -> String {
            let p = dir.appendingPathComponent(name).path
            let w = try SafeTensorsWriter(
                path: p, tensors: [TensorSpec(name: "embeddings", dtype: .F32, shape: [2, 6])],
                metadata: layers.map { ["layers": $0] } ?? [:])
            try w.write("embeddings", floats: (0..<12).map(Float.init))
            try w.finish()
            return p
        }
        #expect(try QuerySet(path: file("a.safetensors", layers: "3,6"), requireLabels: false).layers == [3, 6])
        #expect(try QuerySet(path: file("b.safetensors", layers: "1-3"), requireLabels: false).layers == [1, 2, 3])
        #expect(try QuerySet(path: file("c.safetensors", layers: nil), requireLabels: false).layers == nil)
        for (name, bad) in [("d", "1-4"), ("e", "six"), ("f", "final"), ("g", "4,2")] {
            let p = try file("\(name).safetensors", layers: bad)
            let err = switchError { () throws(SwitchError) in _ = try QuerySet(path: p, requireLabels: false) }
            #expect(err?.code == .invalidFeatures)
            #expect(err?.message.contains(p) == true && err?.message.contains("'\(bad)'") == true)
        }
    }
}
