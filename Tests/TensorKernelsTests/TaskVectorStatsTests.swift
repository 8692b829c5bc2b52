import CheckpointIO
import Foundation
import TestSupport
import Testing

@testable import TensorKernels

/// Task-vector statistics against a brute-force reference (sort all |tau| descending and sum in Double).
@Suite("TaskVectorStats")
struct TaskVectorStatsTests {
    /// The definition, computed the slow obvious way.
    static func reference(_ base: [Float], _ ft: [Float]) -> (
        l2: Double, l1: Double, max: Float, zeros: Int, top: [Double]
    ) {
        let tau = zip(ft, base).map { Swift.abs($0 - $1) }
        let sorted = tau.sorted(by: >)
        let l1 = tau.reduce(0.0) { $0 + Double($1) }
        let top = TaskVectorStats.topFractions.map { p -> Double in
            let k = TaskVectorStats.topCount(p, of: tau.count)
            return sorted[0..<k].reduce(0.0) { $0 + Double($1) }
        }
        return (
            tau.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot(), l1, sorted.first ?? 0,
            tau.filter { $0 == 0 }.count, top
        )
    }

    static func data(_ n: Int, seed: UInt64, zeros: Double, pulse: Double) -> (base: [Float], ft: [Float]) {
        var state = seed &* 6_364_136_223_846_793_005 &+ 1
        func next() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53)
        }
        var base = [Float](), ft = [Float]()
        for _ in 0..<n {
            let b = Float(next() * 2 - 1)
            base.append(b)
            let u = next()
            if u < zeros {
                ft.append(b)
            } else {
                let big = next() < pulse
                ft.append(b + Float((next() * 2 - 1) * (big ? 1 : 0.001)))
            }
        }
        return (base, ft)
    }

    @Test(
        "Norm, max, zeros and top-1/10/30% mass shares match the sorted reference",
        arguments: [1, 7, 100, 1000, 300_001])
    func matchesReference(_ n: Int) {
        let (base, ft) = Self.data(n, seed: UInt64(n), zeros: 0.2, pulse: 0.02)
        let s = TaskVectorStats.compute(base: base, finetuned: ft)
        let r = Self.reference(base, ft)
        #expect(s.elementCount == n)
        #expect(Swift.abs(s.l2Norm - r.l2) <= 1e-5 * Swift.max(r.l2, 1e-30))
        #expect(Swift.abs(s.l1Mass - r.l1) <= 1e-5 * Swift.max(r.l1, 1e-30))
        #expect(s.maxAbs == r.max)
        #expect(s.zeroCount == r.zeros)
        #expect(s.nonFiniteCount == 0)
        for (got, want) in zip(s.topMass, r.top) {
            #expect(Swift.abs(got - want) <= 1e-5 * Swift.max(want, 1e-30), "top mass \(got) vs \(want)")
        }
        #expect(s.topShares[0] <= s.topShares[1] && s.topShares[1] <= s.topShares[2] && s.topShares[2] <= 1 + 1e-12)
    }

    @Test("A pulse-like task vector concentrates its mass: 1% of entries hold most of it")
    func pulse() {
        var base = [Float](repeating: 0.5, count: 10_000)
        var ft = base
        for i in 0..<100 { ft[i * 100] += 1 }  // 1 % big entries
        for i in 0..<10_000 where i % 100 != 0 { ft[i] += 0.0001 }
        base[1] = ft[1]  // one exact zero
        let s = TaskVectorStats.compute(base: base, finetuned: ft)
        #expect(s.topShares[0] > 0.98)
        #expect(s.zeroCount == 1)
        #expect(s.maxAbs == Swift.abs(ft[0] - base[0]))
    }

    @Test("No change gives zero norm, zero shares and all entries zero; NaN entries are counted")
    func degenerate() {
        let same = [Float](repeating: 3, count: 50)
        let s = TaskVectorStats.compute(base: same, finetuned: same)
        #expect(s.l2Norm == 0 && s.l1Mass == 0 && s.zeroFraction == 1 && s.topShares == [0, 0, 0])
        #expect(TaskVectorStats.compute(base: [], finetuned: []).elementCount == 0)
        var ft = same
        ft[3] = .nan
        ft[4] = .infinity
        let bad = TaskVectorStats.compute(base: same, finetuned: ft)
        #expect(bad.nonFiniteCount == 2)
        #expect(!bad.l2Norm.isFinite)
    }

    @Test("topCount takes the ceiling and at least one entry")
    func topCount() {
        #expect(TaskVectorStats.topCount(0.01, of: 1) == 1)
        #expect(TaskVectorStats.topCount(0.01, of: 150) == 2)
        #expect(TaskVectorStats.topCount(0.3, of: 10) == 3)
        #expect(TaskVectorStats.topCount(0.1, of: 0) == 0)
    }

    @Test("ModelDiff streams two models and refuses mismatched names and shapes with clear errors")
    func modelDiff() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        func write(_ name: String, _ tensors: [(String, DType, [Int], [Float])]) throws -> ModelFolder {
            let path = dir.appendingPathComponent(name).path
            let w = try SafeTensorsWriter(
                path: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: $0.1, shape: $0.2) })
            for t in tensors {
                if t.1 == .I32 {
                    try t.3.map { Int32($0) }.withUnsafeBytes { try w.write(t.0, bytes: $0) }
                } else {
                    try w.write(t.0, floats: t.3)
                }
            }
            try w.finish()
            return try ModelFolder(path: path)
        }
        let (b1, f1) = Self.data(5000, seed: 1, zeros: 0.1, pulse: 0.05)
        let (b2, f2) = Self.data(64, seed: 2, zeros: 0.5, pulse: 0.1)
        let base = try write(
            "base.safetensors", [("w1", .F32, [50, 100], b1), ("w2", .BF16, [64], b2), ("ids", .I32, [3], [0, 1, 2])])
        let ft = try write(
            "ft.safetensors", [("w1", .F32, [50, 100], f1), ("w2", .F32, [64], f2), ("ids", .I32, [3], [0, 1, 2])])
        var seen: [String: ModelDiff.Entry] = [:]
        let summary = try ModelDiff(base: base, finetuned: ft).run { seen[$0.name] = $0 }
        #expect(Set(seen.keys) == ["w1", "w2", "ids"])
        #expect(seen["ids"]?.stats == nil && seen["ids"]?.bytesEqual == true)
        let r1 = Self.reference(b1, f1)
        let b2r = b2.map { DTypeConversion.floatFromBFloat16Bits(DTypeConversion.bfloat16Bits($0)) }
        let r2 = Self.reference(b2r, f2)
        #expect(Swift.abs((seen["w1"]?.stats?.l2Norm ?? 0) - r1.l2) <= 1e-5 * r1.l2)
        #expect(seen["w2"]?.stats?.zeroCount == r2.zeros)
        #expect(summary.tensors == 2 && summary.elements == 5064)
        #expect(Swift.abs(summary.l2Norm - (r1.l2 * r1.l2 + r2.l2 * r2.l2).squareRoot()) <= 1e-5 * summary.l2Norm)
        let wantShare = (r1.top[1] + r2.top[1]) / (r1.l1 + r2.l1)
        #expect(Swift.abs(summary.topShares[1] - wantShare) <= 1e-5)

        let shapes = try write(
            "shape.safetensors", [("w1", .F32, [100, 50], f1), ("w2", .F32, [64], f2), ("ids", .I32, [3], [0, 1, 2])])
        let shapeError = try #require(catching { _ = try ModelDiff(base: base, finetuned: shapes) })
        #expect(shapeError.code == .modelMismatch)
        #expect(
            shapeError.message.contains("'w1'") && shapeError.message.contains("100x50")
                && shapeError.message.contains("50x100"))
        let fewer = try write("fewer.safetensors", [("w1", .F32, [50, 100], f1), ("ids", .I32, [3], [0, 1, 2])])
        let nameError = try #require(catching { _ = try ModelDiff(base: base, finetuned: fewer) })
        #expect(
            nameError.code == .modelMismatch && nameError.message.contains("'w2'")
                && nameError.message.contains("fewer.safetensors"))
        let extra = try #require(catching { _ = try ModelDiff(base: fewer, finetuned: base) })
        #expect(extra.code == .modelMismatch && extra.message.contains("'w2'"))
    }

    func catching(_ body: () throws -> Void) -> CheckpointError? {
        do { try body() } catch let e as CheckpointError { return e } catch { Issue.record("\(error)") }
        return nil
    }
}
