import CheckpointIO
import Foundation
import TensorKernels
import Testing

@testable import TaskSwitches

/// The two switching loops of `WeightStore` (scatter over kept entries, tiled sweep over the tensor) and the rule
/// that picks between them.
@Suite("Hot-switching strategies")
struct SwitchStrategyTests {
    /// A model of a large tensor (several sweep tiles, a ragged last tile), a small one and a scalar, and packs at
    /// densities from 0.001 to 0.9 whose masks overlap.
    static func fixture() -> (SwitchableModel, [SwitchPack], [[UInt32]]) {
        var g = SplitMix64(seed: 7)
        let specs = [
            TensorSpec(name: "big", dtype: .F32, shape: [5, 20_011]),
            TensorSpec(name: "small", dtype: .BF16, shape: [7, 13]),
            TensorSpec(name: "scalar", dtype: .F32, shape: []),
        ]
        let tensors = specs.map { s in (spec: s, values: (0..<s.elementCount).map { _ in g.normal() * 0.05 }) }
        let fp = BaseFingerprint(value: 99)
        let model = SwitchableModel(tensors: tensors, fingerprint: fp)
        func pack(_ name: String, density: Double, lambda: Float) -> SwitchPack {
            let sws = specs.map { s -> TensorSwitch in
                var pos: [UInt32] = []
                var neg: [UInt32] = []
                for i in 0..<max(1, s.elementCount) where Double.random(in: 0..<1, using: &g) < density {
                    if Bool.random(using: &g) { pos.append(UInt32(i)) } else { neg.append(UInt32(i)) }
                }
                return TensorSwitch(
                    name: s.name, shape: s.shape, baseDType: s.dtype, lambda: lambda, positive: pos, negative: neg)
            }
            return SwitchPack(
                task: name, baseFingerprint: fp, dropRatio: 1 - density, tieRule: .lowestIndex, tensors: sws)
        }
        let packs = [
            pack("sparse", density: 0.001, lambda: 0.01), pack("mid", density: 0.05, lambda: 0.003),
            pack("dense", density: 0.3, lambda: 0.02), pack("full", density: 0.9, lambda: 0.0007),
        ]
        return (model, packs, snapshot(model))
    }

    static func snapshot(_ m: SwitchableModel) -> [[UInt32]] { m.withWeights { $0.map { $0.map(\.bitPattern) } } }

    /// θ + Σ w·λ·s computed independently, in pack order, as `SwitchApplier.add` does for a model on disk.
    static func expected(_ base: [[UInt32]], _ model: SwitchableModel, _ set: [(SwitchPack, Float)]) -> [[UInt32]] {
        zip(model.specs, base).map { spec, bits in
            var v = bits.map(Float.init(bitPattern:))
            let sws = set.compactMap { p, w in p.tensor(spec.name).map { ($0, w) } }
            v.withUnsafeMutableBufferPointer { SwitchApplier.add(sws, to: $0) }
            return v.map(\.bitPattern)
        }
    }

    @Test(
        "scatter, sweep and the automatic rule give bit-identical weights for every switch sequence",
        arguments: [SwitchableModel.Strategy.scatter, .sweep, .automatic])
    func strategiesAgree(strategy: SwitchableModel.Strategy) throws {
        let (model, p, base) = Self.fixture()
        let sequence: [[(SwitchPack, Float)]] = [
            [(p[0], 1)], [(p[2], 1)], [(p[3], 1), (p[1], -0.5), (p[3], 2)], [(p[1], 1)], [(p[2], 0.25), (p[0], 3)],
            [(p[3], 1)], [(p[0], 1)],
        ]
        for set in sequence {
            try model.activate(set.map { ($0.0, $0.1) }, strategy: strategy)
            #expect(Self.snapshot(model) == Self.expected(base, model, set), "after \(set.map(\.0.task))")
        }
        model.reset(strategy: strategy)
        #expect(Self.snapshot(model) == base, "reset restores the base bit for bit")
    }

    @Test("switching with one strategy and restoring with the other still restores the base exactly")
    func mixedStrategiesRestore() throws {
        let (model, p, base) = Self.fixture()
        try model.activate([(p[3], 1), (p[2], -1)], strategy: .scatter)
        try model.activate([(p[2], 1), (p[1], 0.5)], strategy: .sweep)
        try model.activate(p[3], strategy: .scatter)
        model.reset(strategy: .sweep)
        #expect(Self.snapshot(model) == base)
        try model.activate(p[3], strategy: .sweep)
        model.reset(strategy: .scatter)
        #expect(Self.snapshot(model) == base)
    }

    @Test("a refused activation (other base, non-finite weight, index out of range) leaves the model as it was")
    func refusedActivationChangesNothing() throws {
        let (model, p, _) = Self.fixture()
        try model.activate([(p[2], 1), (p[1], -0.5)])
        let before = Self.snapshot(model)
        var other = p[0]
        other.baseFingerprint = BaseFingerprint(value: 1)
        var outside = p[3]
        let big = outside.tensors[0]
        outside.tensors[0] = TensorSwitch(
            name: big.name, shape: big.shape, baseDType: big.baseDType, lambda: big.lambda, positive: big.positive,
            negative: big.negative + [UInt32(big.elementCount)])
        let attempts: [([(pack: SwitchPack, weight: Float)], SwitchError.Code)] = [
            ([(p[3], 1), (other, 1)], .wrongBase), ([(p[3], 1), (p[0], .nan)], .invalidWeight),
            ([(p[0], 1), (outside, 1)], .corruptPack),
        ]
        for (set, code) in attempts {
            do {
                try model.activate(set, strategy: .sweep)
                Issue.record("expected \(code)")
            } catch {
                #expect(error.code == code)
            }
            #expect(Self.snapshot(model) == before)
            #expect(model.active.map(\.task) == ["dense", "mid"])
        }
    }

    @Test(
        "a hand-built switch whose positive and negative entries overlap still restores the base exactly",
        arguments: [SwitchableModel.Strategy.scatter, .sweep])
    func overlappingSigns(strategy: SwitchableModel.Strategy) throws {
        let (model, p, base) = Self.fixture()
        let n = UInt32(model.specs[0].elementCount)
        let all = Array(stride(from: UInt32(0), to: n, by: 3))
        var both = p[0]
        both.tensors = [
            TensorSwitch(
                name: "big", shape: model.specs[0].shape, baseDType: .F32, lambda: 0.37, positive: all, negative: all)
        ]
        try model.activate([(both, 1), (p[2], 1)], strategy: strategy)
        #expect(Self.snapshot(model) == Self.expected(base, model, [(both, 1), (p[2], 1)]))
        model.reset(strategy: strategy)
        #expect(Self.snapshot(model) == base)
    }

    @Test("the rule sweeps a large tensor once its lists hold one entry per 64 elements, else scatters")
    func rule() {
        let n = 1 << 20
        #expect(WeightStore.path(elements: n, entries: n / 64) == .sweep)
        #expect(WeightStore.path(elements: n, entries: n / 64 - 1) == .scatter)
        #expect(WeightStore.path(elements: n, entries: n) == .sweep)
        #expect(WeightStore.path(elements: 1000, entries: 1000) == .scatter, "a tensor under two tiles scatters")
    }
}
