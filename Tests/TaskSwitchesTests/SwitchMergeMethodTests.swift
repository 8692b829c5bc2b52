import CheckpointIO
import Foundation
import MergeEngine
import TensorKernels
import Testing

@testable import TaskSwitches

/// The `t_switch`, `emr` and `tall_masks` merge methods on hand-checked tensors, and `t_switch` against packs.
struct SwitchMergeMethodTests {
    /// Runs a method on one tensor: `base` then the models, with per-model and shared parameters.
    static func merge(
        _ method: any MergeMethod.Type, base: [Float], models: [[Float]], perModel: [[String: Double]],
        shared: [String: Double] = [:]
    ) throws -> [Float] {
        var out = [Float](repeating: .nan, count: base.count)
        let all = [base] + models
        let buffers = all.map { a -> UnsafeMutableBufferPointer<Float> in
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: a.count)
            _ = b.initialize(from: a)
            return b
        }
        defer { buffers.forEach { $0.deallocate() } }
        var inputs = [MergeInput(model: "base", isBase: true, values: UnsafeBufferPointer(buffers[0]), parameters: [:])]
        for (i, p) in perModel.enumerated() {
            inputs.append(
                MergeInput(
                    model: "m\(i)", isBase: false, values: UnsafeBufferPointer(buffers[i + 1]),
                    parameters: p.mapValues { ParameterValue.number($0) }))
        }
        let ctx = TensorMergeContext(
            tensorName: "t", shape: [base.count], inputs: inputs, parameters: shared.mapValues { .number($0) }, seed: 0)
        try out.withUnsafeMutableBufferPointer { o in try method.merge(ctx, into: o) }
        return out
    }

    @Test("the methods are registered under their names")
    func registered() {
        #expect(MergeMethodRegistry.method(named: "t_switch") != nil)
        #expect(MergeMethodRegistry.method(named: "emr") != nil)
        #expect(MergeMethodRegistry.method(named: "tall_masks") != nil)
    }

    @Test("t_switch equals applying the packs built from the same models")
    func tSwitchMatchesPacks() throws {
        var g = SplitMix64(seed: 11)
        let n = 4000
        let base = (0..<n).map { _ in g.normal() }
        let a = base.map { $0 + 0.01 * g.normal() }
        let b = base.map { $0 + 0.02 * g.normal() }
        let merged = try Self.merge(
            TSwitchMerge.self, base: base, models: [a, b],
            perModel: [["weight": 1, "drop": 0.7], ["weight": 0.5, "drop": 0.9]])
        var expected = base
        for (m, alpha, w) in [(a, 0.7, Float(1)), (b, 0.9, Float(0.5))] {
            let tau = zip(m, base).map { $0 - $1 }
            let r = try #require(try tau.withUnsafeBufferPointer { try PDiscard.run($0, dropRatio: alpha) })
            let sw = TensorSwitch(
                name: "t", shape: [n], baseDType: .F32, lambda: r.lambda, positive: r.positive, negative: r.negative)
            expected.withUnsafeMutableBufferPointer { SwitchApplier.add([(sw, w)], to: $0) }
        }
        #expect(merged.map(\.bitPattern) == expected.map(\.bitPattern))
    }

    @Test("emr builds the unified vector, masks and rescalers of EMR-Merging")
    func emr() throws {
        let base: [Float] = [0, 0, 0, 0]
        let t1: [Float] = [1, -2, 0.5, 0]
        let t2: [Float] = [3, 1, -0.5, 2]
        // σ = sign(t1 + t2) = [+, −, 0, +]; τ_uni = [3, −2, 0, 2].
        // M1 = [1, 1, 0, 0], λ1 = (1 + 2 + 0.5) / (3 + 2) = 0.7; M2 = [1, 0, 0, 1], λ2 = (3 + 1 + 0.5 + 2) / (3 + 2) = 1.3.
        let task1 = try Self.merge(
            EMRMerge.self, base: base, models: [t1, t2], perModel: [["weight": 1], ["weight": 0]])
        #expect(zip(task1, [Float(2.1), -1.4, 0, 0]).allSatisfy { abs($0 - $1) < 1e-6 })
        let task2 = try Self.merge(
            EMRMerge.self, base: base, models: [t1, t2], perModel: [["weight": 0], ["weight": 1]])
        #expect(zip(task2, [Float(3.9), 0, 0, 2.6]).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test("tall_masks keeps entries where a task dominates the rest, and consensus counts masks")
    func tallMasks() throws {
        let base: [Float] = [1, 1, 1]
        let x1: [Float] = [2, 1.1, 0]  // τ1 = [1, 0.1, −1]
        let x2: [Float] = [1, 2, 0]  // τ2 = [0, 1, −1]
        // τ_MTL = [1, 1.1, −2]. λ = 0.5: m1 = [1 ≥ 0, 0.1 ≥ 0.5, 1 ≥ 0.5] = [1, 0, 1]; m2 = [0 ≥ 0.5, 1 ≥ 0.05, 1 ≥ 0.5] = [0, 1, 1].
        let p: [[String: Double]] = [["weight": 1, "lambda": 0.5], ["weight": 0, "lambda": 0.5]]
        let task1 = try Self.merge(TallMasksMerge.self, base: base, models: [x1, x2], perModel: p)
        #expect(task1 == [2, 1, -1])
        let consensus = try Self.merge(
            TallMasksMerge.self, base: base, models: [x1, x2], perModel: p, shared: ["consensus": 2])
        #expect(consensus == [1, 1, -1])  // only the last entry is in both masks
    }
}
