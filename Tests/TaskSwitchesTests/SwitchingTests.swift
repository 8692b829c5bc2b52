import CheckpointIO
import Foundation
import TensorKernels
import TestSupport
import Testing

@testable import TaskSwitches

/// Building packs from model folders, writing switched models, hot switching, and bad input.
struct SwitchingTests {
    @Test("a pack built from a base and a fine-tune reconstructs θ + λ·S_A·S_P exactly")
    func buildAndApply() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, f) = try toyPair(dir)
        let base = try ModelFolder(path: b.path)
        let fine = try ModelFolder(path: f.path)
        let pack = try SwitchPack.build(base: base, fineTuned: fine, dropRatio: 0.7, task: "toy")
        #expect(
            pack.tensors.map(\.name).sorted() == ["layer.0.bias", "layer.0.weight", "layer.1.weight", "temperature"])
        // Independent reconstruction from τ with P-Discard, per tensor.
        let out = dir.appendingPathComponent("out").path
        try SwitchApplier.write(base: base, packs: [(pack, 1)], output: out)
        let written = try ModelFolder(path: out)
        for name in ["layer.0.weight", "layer.0.bias", "layer.1.weight"] {
            let bv = try base.tensor(name).floats()
            let fv = try fine.tensor(name).floats()
            let tau = zip(fv, bv).map { $0 - $1 }
            let r = try #require(try tau.withUnsafeBufferPointer { try PDiscard.run($0, dropRatio: 0.7) })
            var expected = bv
            for i in r.positive { expected[Int(i)] = bv[Int(i)] + r.lambda }
            for i in r.negative { expected[Int(i)] = bv[Int(i)] - r.lambda }
            #expect(try written.tensor(name).floats().map(\.bitPattern) == expected.map(\.bitPattern))
        }
        // The scalar is carried exactly; the int tensor is copied.
        let ts = try fine.tensor("temperature").floats()[0]
        #expect(try written.tensor("temperature").floats()[0] == ts)
        #expect(try written.tensor("position_ids").bytes.elementsEqual(base.tensor("position_ids").bytes))
    }

    @Test("hot switching restores the base bit for bit after any sequence of packs")
    func hotSwitchRestores() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, f) = try toyPair(dir, seed: 1)
        let (_, f2) = try toyPair(dir.appendingPathComponent("two"), seed: 1, scale: 0.05)
        let base = try ModelFolder(path: b.path)
        let p1 = try SwitchPack.build(base: base, fineTuned: try ModelFolder(path: f.path), dropRatio: 0.5, task: "one")
        let p2 = try SwitchPack.build(
            base: base, fineTuned: try ModelFolder(path: f2.path), dropRatio: 0.8, task: "two")
        let model = try SwitchableModel(base: base)
        let original = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }

        try model.activate(p1)
        let one = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
        #expect(one != original)
        try model.activate([(p1, 0.5), (p2, -1.25), (p1, 2)])
        #expect(model.active.map(\.task) == ["one", "two", "one"])
        // Same result as the streamed writer for the same weighted set.
        let out = dir.appendingPathComponent("mix").path
        try SwitchApplier.write(base: base, packs: [(p1, 0.5), (p2, -1.25), (p1, 2)], output: out)
        let mixed = try ModelFolder(path: out)
        let resident = model.withWeights { $0.map { Array($0) } }
        for (i, spec) in model.specs.enumerated() {
            #expect(try mixed.tensor(spec.name).floats().map(\.bitPattern) == resident[i].map(\.bitPattern))
        }
        try model.activate(p2)
        try model.activate(p1)
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == one)
        model.reset()
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == original)
        #expect(model.active.isEmpty)
    }

    @Test("switching from several tasks at once is safe")
    func concurrentSwitching() async throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, f) = try toyPair(dir)
        let base = try ModelFolder(path: b.path)
        let pack = try SwitchPack.build(base: base, fineTuned: try ModelFolder(path: f.path), dropRatio: 0.6, task: "t")
        let model = try SwitchableModel(base: base)
        let original = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
        await withTaskGroup(of: Void.self) { group in
            for k in 0..<16 {
                group.addTask {
                    if k % 2 == 0 { try? model.activate([(pack, Float(k))]) } else { model.reset() }
                }
            }
        }
        model.reset()
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == original)
    }

    @Test("a pack for another base is refused before anything changes")
    func wrongBase() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, f) = try toyPair(dir.appendingPathComponent("a"), seed: 1)
        let (b2, _) = try toyPair(dir.appendingPathComponent("b"), seed: 2)
        let pack = try SwitchPack.build(
            base: try ModelFolder(path: b.path), fineTuned: try ModelFolder(path: f.path), dropRatio: 0.5, task: "a")
        let other = try ModelFolder(path: b2.path)
        let model = try SwitchableModel(base: other)
        let err = switchError { () throws(SwitchError) in try model.activate(pack) }
        #expect(err?.code == .wrongBase)
        #expect(err?.message.contains(pack.baseFingerprint.description) == true)
        let out = dir.appendingPathComponent("out")
        let err2 = switchError { () throws(SwitchError) in
            try SwitchApplier.write(base: other, packs: [(pack, 1)], output: out.path)
        }
        #expect(err2?.code == .wrongBase)
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }

    @Test("bad inputs to pack building are clear errors", arguments: [-0.1, 1.0, 1.5, Double.nan])
    func badDropRatio(_ alpha: Double) throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, f) = try toyPair(dir)
        let err = switchError { () throws(SwitchError) in
            _ = try SwitchPack.build(
                base: try io { () throws(CheckpointError) in try ModelFolder(path: b.path) },
                fineTuned: try io { () throws(CheckpointError) in try ModelFolder(path: f.path) }, dropRatio: alpha,
                task: "t")
        }
        #expect(err?.code == .invalidDropRatio)
    }

    @Test("an empty task vector, a shape mismatch and a missing tensor are refused")
    func badModels() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, _) = try toyPair(dir)
        let base = try ModelFolder(path: b.path)
        let empty = switchError { () throws(SwitchError) in
            _ = try SwitchPack.build(base: base, fineTuned: base, dropRatio: 0.5, task: "t")
        }
        #expect(empty?.code == .emptyTaskVector)
        let odd = dir.appendingPathComponent("odd")
        try writeModel(odd, [("layer.0.weight", [32, 48], [Float](repeating: 1, count: 32 * 48))])
        let mismatch = switchError { () throws(SwitchError) in
            _ = try SwitchPack.build(
                base: base, fineTuned: try io { () throws(CheckpointError) in try ModelFolder(path: odd.path) },
                dropRatio: 0.5, task: "t")
        }
        #expect(mismatch?.code == .shapeMismatch || mismatch?.code == .missingTensor)
        #expect(mismatch?.message.contains("layer.0.") == true)
    }

    @Test("the base fingerprint sees a changed value and ignores nothing in names or shapes")
    func fingerprint() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, f) = try toyPair(dir)
        let fb = try BaseFingerprint(model: try ModelFolder(path: b.path))
        #expect(try BaseFingerprint(model: try ModelFolder(path: b.path)) == fb)
        #expect(try BaseFingerprint(model: try ModelFolder(path: f.path)) != fb)
    }
}

extension SwitchingTests {
    @Test("a hand-built switch with an index outside its tensor is refused, not written out of bounds")
    func outOfRangeIndex() throws {
        let fp = BaseFingerprint(value: 7)
        let model = SwitchableModel(
            tensors: [(TensorSpec(name: "w", dtype: .F32, shape: [4]), [1, 2, 3, 4])], fingerprint: fp)
        let bad = SwitchPack(
            task: "bad", baseFingerprint: fp, dropRatio: 0.5, tieRule: .lowestIndex,
            tensors: [TensorSwitch(name: "w", shape: [4], baseDType: .F32, lambda: 1, positive: [1, 4], negative: [])])
        #expect(switchError { () throws(SwitchError) in try model.activate(bad) }?.code == .corruptPack)
        let good = SwitchPack(
            task: "good", baseFingerprint: fp, dropRatio: 0.5, tieRule: .lowestIndex,
            tensors: [TensorSwitch(name: "w", shape: [4], baseDType: .F32, lambda: 0.5, positive: [1], negative: [3])])
        try model.activate([(good, 2)])
        #expect(model.withTensor("w") { Array($0) } == [1, 3, 3, 3])
    }
}
