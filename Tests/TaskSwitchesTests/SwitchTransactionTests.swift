import CheckpointIO
import Foundation
import TestSupport
import Testing

@testable import TaskSwitches

/// `SwitchableModel.withActivated`: apply → body → restore as one serialized step.
@Suite("Switch transactions")
struct SwitchTransactionTests {
    /// A base and two packs (one T-Switch at two drop ratios) over the toy model.
    static func fixture(_ dir: URL) throws -> (ModelFolder, SwitchPack, SwitchPack) {
        let (b, f) = try toyPair(dir, seed: 3)
        let (_, f2) = try toyPair(dir.appendingPathComponent("two"), seed: 3, scale: 0.05)
        let base = try ModelFolder(path: b.path)
        let p1 = try SwitchPack.build(base: base, fineTuned: try ModelFolder(path: f.path), dropRatio: 0.5, task: "one")
        let p2 = try SwitchPack.build(
            base: base, fineTuned: try ModelFolder(path: f2.path), dropRatio: 0.8, task: "two")
        return (base, p1, p2)
    }

    static func bits(_ w: borrowing SwitchableModel.Weights) -> [[UInt32]] { w.all.map { $0.map(\.bitPattern) } }

    @Test("a transaction sees the weights apply writes and leaves the previous activation bit for bit")
    func matchesApplyAndRestores() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, p1, p2) = try Self.fixture(dir)
        let model = try SwitchableModel(base: base)
        let original = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
        let mix: [(pack: SwitchPack, weight: Float)] = [(p1, 0.5), (p2, -1.25)]
        let out = dir.appendingPathComponent("mix").path
        try SwitchApplier.write(base: base, packs: mix, output: out)
        let written = try ModelFolder(path: out)
        let want = try model.specs.map { try written.tensor($0.name).floats().map(\.bitPattern) }
        #expect(try model.withActivated(mix) { Self.bits($0) } == want)
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == original)
        // Over an activation: the transaction starts from the base, and the activation comes back afterwards.
        try model.activate(p2)
        let active = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
        #expect(try model.withActivated(mix) { Self.bits($0) } == want)
        #expect(try model.withActivated([]) { Self.bits($0) } == original)
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == active)
        #expect(model.active.map(\.task) == ["two"])
        // A body that throws still restores.
        struct Stop: Error {}
        #expect(throws: Stop.self) { try model.withActivated(mix) { _ in throw Stop() } }
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == active)
    }

    @Test("many concurrent transactions with different mixes each see exactly their own weights")
    func concurrentCallers() async throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, p1, p2) = try Self.fixture(dir)
        let model = try SwitchableModel(base: base)
        let original = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
        let mixes: [[(pack: SwitchPack, weight: Float)]] = (0..<8).map { k in
            switch k % 4 {
            case 0: [(p1, Float(k) * 0.25 + 0.5)]
            case 1: [(p2, -Float(k))]
            case 2: [(p1, 1), (p2, Float(k) / 3)]
            default: []
            }
        }
        let serial = try mixes.map { mix in try model.withActivated(mix) { Self.bits($0) } }
        #expect(Set(serial).count == 7)
        let strategies: [SwitchableModel.Strategy] = [.automatic, .scatter, .sweep]
        let results = try await withThrowingTaskGroup(of: (Int, [[UInt32]]).self) { group in
            for call in 0..<48 {
                group.addTask {
                    let k = call % mixes.count
                    let got = try model.withActivated(mixes[k], strategy: strategies[call % 3]) { Self.bits($0) }
                    return (k, got)
                }
            }
            var all: [(Int, [[UInt32]])] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(results.count == 48)
        for (k, got) in results { #expect(got == serial[k], "mix \(k)") }
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == original)
    }
}
