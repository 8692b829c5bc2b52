import CheckpointIO
import Foundation
import TaskSwitches
import TensorKernels
import TestSupport
import Testing

@testable import Analysis
@testable import Evaluation

/// The in-memory pulse experiment: each strategy keeps the entries it claims, the paper's setting reproduces a
/// T-Switch pack exactly, and the scales are the statistics they are named after.
///
/// A synthetic fine-tune of the real base moves two tensors by a deterministic spread of values: the last layer's
/// output bias (384 entries, one row) and the first layer's query weight (384 × 384, 384 rows).
@Suite("Drop sweep", .serialized, PretrainedModel.needsModel)
struct DropSweepTests {
    static let bias = "encoder.layer.5.output.dense.bias"
    static let matrix = "encoder.layer.0.attention.self.query.weight"

    /// τ at flat index i: sign alternating with period 3, magnitude from a hash (distinct, some exact ties).
    static func delta(_ i: Int) -> Float {
        let m = Float((i &* 2_654_435_761) % 997 + 1) / 997 * 0.01
        return i % 3 == 0 ? -m : m
    }

    static func fineTune(into dir: URL) throws {
        try PretrainedModel.fineTune(into: dir, changing: [bias, matrix]) { _, i in delta(i) }
    }

    static let fixtureFolder = FileManager.default.temporaryDirectory.appendingPathComponent(
        "drop-sweep-\(UUID().uuidString)")

    /// One shared synthetic fine-tune for the tests of this suite.
    static let fixture: (sweep: DropSweep, vector: DropSweep.TaskVector, dir: URL) = {
        let dir = fixtureFolder
        // The suite's tests share this fine-tune until the process ends; then it goes (88 MB).
        atexit { try? FileManager.default.removeItem(at: DropSweepTests.fixtureFolder) }
        do {
            try fineTune(into: dir)
            let sweep = try DropSweep(basePath: PretrainedModel.folder.path)
            return (sweep, try sweep.taskVector(fineTunedPath: dir.path), dir)
        } catch {
            fatalError("drop-sweep fixture: \(error)")
        }
    }()

    /// τ as reconstructed by `setting` for `name`.
    static func reconstructed(_ setting: DropSweep.Setting, _ name: String) throws -> [Float] {
        let base = try #require(fixture.sweep.baseTensors[name]).values
        var footprint = DropSweep.Footprint()
        let out = try #require(fixture.vector.apply(setting, to: base, name: name, footprint: &footprint))
        return zip(out, base).map { $0 - $1 }
    }

    @Test("discard-low with the RMS scale equals the T-Switch pack of the same fine-tune")
    func matchesPack() throws {
        let base = try ModelFolder(path: PretrainedModel.folder.path)
        let ft = try ModelFolder(path: Self.fixture.dir.path)
        let pack = try SwitchPack.build(base: base, fineTuned: ft, dropRatio: 0.7, task: "t")
        for name in [Self.bias, Self.matrix] {
            let got = try Self.reconstructed(.init(strategy: .discardLow, dropRatio: 0.7, scale: .rms), name)
            let sw = try #require(pack.tensors.first { $0.name == name })
            var want = [Float](repeating: 0, count: got.count)
            for i in sw.positive { want[Int(i)] = sw.lambda }
            for i in sw.negative { want[Int(i)] = -sw.lambda }
            #expect(sw.keptCount == got.filter { $0 != 0 }.count)
            // Same entries with the same signs; values equal up to the rounding of (base + λ) − base (weights < 1).
            #expect(zip(got, want).allSatisfy { ($0 == 0) == ($1 == 0) && ($0 > 0) == ($1 > 0) && abs($0 - $1) < 2e-7 })
            let kept = got.filter { $0 != 0 }
            let meanAbs = kept.map { Double(abs($0)) }.reduce(0, +) / Double(kept.count)
            #expect(abs(meanAbs - Double(sw.lambda)) < 1e-6 * Double(sw.lambda) + 1e-8)
        }
    }

    @Test("discard-high keeps the smallest entries per sign, discard-low the largest, both ⌊(1−α)n⌋ per sign")
    func strategiesKeepTheirEntries() throws {
        let tau = (0..<384).map(Self.delta)
        let low = try Self.reconstructed(.init(strategy: .discardLow, dropRatio: 0.5, scale: nil), Self.bias)
        let high = try Self.reconstructed(.init(strategy: .discardHigh, dropRatio: 0.5, scale: nil), Self.bias)
        for positive in [true, false] {
            let idx = tau.indices.filter { positive ? tau[$0] > 0 : tau[$0] < 0 }
            let k = PDiscard.keepCount(idx.count, dropRatio: 0.5)
            let keptLow = idx.filter { low[$0] != 0 }
            let keptHigh = idx.filter { high[$0] != 0 }
            #expect(keptLow.count == k && keptHigh.count == k)
            let minLow = try #require(keptLow.map { abs(tau[$0]) }.min())
            let maxHigh = try #require(keptHigh.map { abs(tau[$0]) }.max())
            #expect(idx.filter { low[$0] == 0 }.allSatisfy { abs(tau[$0]) <= minLow })
            #expect(idx.filter { high[$0] == 0 }.allSatisfy { abs(tau[$0]) >= maxHigh })
            // Original values are kept unchanged (up to the base + τ − base rounding).
            #expect(keptLow.allSatisfy { abs(low[$0] - tau[$0]) < 1e-6 })
        }
    }

    @Test("random keeps the random-mask pack's seeded entries, near 1−α, and rescales τ by 1/(1−α), as DARE")
    func randomIsThePackMask() throws {
        let n = 384 * 384
        let tau = (0..<n).map(Self.delta)
        for alpha in [0.5, 0.8] {
            let got = try Self.reconstructed(.init(strategy: .random, dropRatio: alpha, scale: nil), Self.matrix)
            let mask = try #require(
                RandomMask.positions(
                    count: n, dropRatio: alpha, seed: RandomMask.tensorSeed(packSeed: 0, name: Self.matrix)))
            #expect((0..<n).filter { got[$0] != 0 } == mask.map { Int($0) })
            #expect(abs(Double(mask.count) / Double(n) - (1 - alpha)) < 0.01)
            let factor = Float(1 / (1 - alpha))
            #expect(mask.allSatisfy { abs(got[Int($0)] - factor * tau[Int($0)]) < 1e-5 })
        }
    }

    @Test("a random-mask pack with f32 values embeds bit for bit like the in-memory random variant")
    func randomPackMatchesSweep() throws {
        let base = try ModelFolder(path: PretrainedModel.folder.path)
        let ft = try ModelFolder(path: Self.fixture.dir.path)
        let texts = try TextDataset.read(
            path: TestPaths.repository.appendingPathComponent("data/tasks/wn-verb/test.jsonl").path
        ).prefix(24).map(\.text)
        let switched = try SwitchedEncoder(basePath: PretrainedModel.folder.path)
        for alpha in [0.9, 0.99] {
            let pack = try SwitchPack.build(
                base: base, fineTuned: ft, dropRatio: alpha, task: "t", randomMask: RandomMaskSettings(code: .f32))
            let fromPack = try switched.embed(texts, packs: [pack], maxLength: 48, batchSize: 8)
            let (sweep, footprint) = try Self.fixture.sweep.encoder(
                Self.fixture.vector, setting: .init(strategy: .random, dropRatio: alpha, scale: nil))
            #expect(footprint.kept == pack.keptCount)
            let inMemory = sweep.embed(texts, maxLength: 48, batchSize: 8)
            #expect(fromPack.map(\.bitPattern) == inMemory.map(\.bitPattern), "α = \(alpha)")
        }
    }

    @Test("mean-abs is the mean |τ| of the kept entries; the row scales are computed per output row")
    func scales() throws {
        let n = 384 * 384
        let tau = (0..<n).map(Self.delta)
        let rms = try Self.reconstructed(.init(strategy: .discardLow, dropRatio: 0.6, scale: .rms), Self.matrix)
        let mean = try Self.reconstructed(.init(strategy: .discardLow, dropRatio: 0.6, scale: .meanAbs), Self.matrix)
        let row = try Self.reconstructed(.init(strategy: .discardLow, dropRatio: 0.6, scale: .rowMeanAbs), Self.matrix)
        let kept = (0..<n).filter { mean[$0] != 0 }
        #expect(kept == (0..<n).filter { rms[$0] != 0 })
        let m = kept.map { Double(abs(tau[$0])) }.reduce(0, +) / Double(kept.count)
        let q = (kept.map { Double(tau[$0]) * Double(tau[$0]) }.reduce(0, +) / Double(kept.count)).squareRoot()
        #expect(kept.allSatisfy { abs(Double(abs(mean[$0])) - m) < 1e-6 && abs(Double(abs(rms[$0])) - q) < 1e-6 })
        #expect(q > m)  // RMS ≥ mean |τ|, strictly for a spread of magnitudes
        for r in [0, 17, 383] {
            let inRow = kept.filter { $0 / 384 == r }
            let rm = inRow.map { Double(abs(tau[$0])) }.reduce(0, +) / Double(inRow.count)
            #expect(inRow.allSatisfy { abs(Double(abs(row[$0])) - rm) < 1e-6 && (row[$0] > 0) == (tau[$0] > 0) })
        }
    }

    @Test("drop ratio 0 with original values embeds exactly like the fine-tune; no setting embeds like the base")
    func endToEnd() throws {
        let texts = ["a first sentence", "something else entirely"]
        let fine = try SentenceEncoder(path: Self.fixture.dir.path).embed(texts, maxLength: 48)
        let (full, footprint) = try Self.fixture.sweep.encoder(
            Self.fixture.vector, setting: .init(strategy: .discardLow, dropRatio: 0, scale: nil))
        #expect(PretrainedModel.worstRelativeError(full.embed(texts, maxLength: 48), fine, hidden: 384) < 1e-6)
        #expect(footprint.kept == 384 + 384 * 384)
        let base = try Self.fixture.sweep.encoder(nil, setting: nil).0.embed(texts, maxLength: 48)
        #expect(PretrainedModel.worstRelativeError(base, fine, hidden: 384) > 1e-4)
        #expect(DropSweep.subsample(10, limit: 4) == [0, 2, 5, 7])
        #expect(DropSweep.subsample(3, limit: 4) == [0, 1, 2])
    }
}
