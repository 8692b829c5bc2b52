import CheckpointIO
import Testing

@testable import TensorKernels

@Suite("Fused streamed merge loops")
struct FusedStreamTests {
    /// BF16 bit patterns: ordinary weights, ±0, ±Inf, NaNs with both signs and payloads, subnormals, the largest
    /// finite values (sums overflow to Inf) and values whose narrowing rounds to even.
    static func bf16Sample(_ n: Int, seed: UInt64) -> [UInt16] {
        var g = SplitMix64(seed: seed)
        let specials: [UInt16] = [
            0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0x0001, 0x8005, 0x7F7F, 0xFF7F, 0x3F81,
        ]
        return (0..<n).map { _ in
            let r = g.next()
            if r % 50 == 0 { return specials[Int(r >> 32) % specials.count] }
            if r % 7 == 0 { return UInt16(truncatingIfNeeded: r >> 16) }  // any pattern
            return DTypeConversion.bfloat16Bits((g.nextUnitFloat() - 0.5) * 0.1)
        }
    }

    /// The definition: widen, subtract, weight, sum from 0 in order, divide, scale, add the base, round once.
    static func reference(base: Float, models: [Float], weights: [Float], divide: Float, lambda: Float) -> Float {
        var acc: Float = 0
        for (x, w) in zip(models, weights) { acc += (x - base) * w }
        if divide != 1 { acc /= divide }
        if lambda != 1 { acc *= lambda }
        return base + acc
    }

    @Test(
        "BF16 weighted delta sum equals the scalar definition bit for bit, at any byte offset and length",
        arguments: [(300_007, 0, Float(1), Float(1)), (131_101, 2, 2.5, 0.7), (37, 6, 1, -1), (16, 2, 3, 1)])
    func bf16(n: Int, offset: Int, divide: Float, lambda: Float) throws {
        let m = 3
        let weights: [Float] = [1, -0.5, 0.25][0..<m].map { $0 }
        let arrays = (0...m).map { Self.bf16Sample(n, seed: UInt64(n * 10 + $0)) }
        // Each input starts `offset` bytes into its buffer, as a tensor inside a mapped file may.
        let got = FusedKernelLevelTests.run(
            level: FusedStream.vectorLevel, arrays: arrays, weights: weights, divide: divide, lambda: lambda,
            withBase: true, offset: offset)
        var mismatches = 0
        for i in 0..<n {
            let w = arrays.map { DTypeConversion.floatFromBFloat16Bits($0[i]) }
            let want = DTypeConversion.bfloat16Bits(
                Self.reference(base: w[0], models: Array(w[1...]), weights: weights, divide: divide, lambda: lambda))
            if got[i] != want { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    @Test("BF16 weighted sum (linear merging) equals the scalar definition bit for bit", arguments: [Float(1), 2.75])
    func bf16Sum(divide: Float) {
        let n = 140_011
        let arrays = (0..<3).map { Self.bf16Sample(n, seed: UInt64(77 + $0)) }
        let weights: [Float] = [0.5, 1.5, -1]
        var out = [UInt16](repeating: 0, count: n)
        let buffers = arrays.map { a -> UnsafeMutableBufferPointer<UInt16> in
            let b = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: n)
            _ = b.initialize(from: a)
            return b
        }
        defer { for b in buffers { b.deallocate() } }
        let done = out.withUnsafeMutableBytes { o in
            FusedStream.weightedSum(
                buffers.map { TensorSource(bytes: UnsafeRawBufferPointer($0), dtype: .BF16, count: n) },
                weights: weights,
                divide: divide, into: TensorSink(bytes: o, dtype: .BF16, count: n))
        }
        #expect(done)
        let want = (0..<n).map { i -> UInt16 in
            var acc: Float = 0
            for (a, w) in zip(arrays, weights) { acc += DTypeConversion.floatFromBFloat16Bits(a[i]) * w }
            if divide != 1 { acc /= divide }
            return DTypeConversion.bfloat16Bits(acc)
        }
        #expect(zip(out, want).filter { $0 != $1 }.count == 0)
    }

    @Test("F32 weighted delta sum equals the scalar definition bit for bit")
    func f32() {
        let n = 200_003
        var g = SplitMix64(seed: 9)
        let arrays = (0..<3).map { _ in
            (0..<n).map { _ in g.next() % 97 == 0 ? Float.nan : (g.nextUnitFloat() - 0.5) * 3 }
        }
        let weights: [Float] = [0.3, 0.7]
        var out = [Float](repeating: 0, count: n)
        arrays[0].withUnsafeBufferPointer { b in
            arrays[1].withUnsafeBufferPointer { x1 in
                arrays[2].withUnsafeBufferPointer { x2 in
                    out.withUnsafeMutableBufferPointer { o in
                        #expect(
                            FusedStream.weightedDeltaSum(
                                base: TensorSource(b), models: [TensorSource(x1), TensorSource(x2)], weights: weights,
                                divide: 1, lambda: 0.5, into: TensorSink(o)))
                    }
                }
            }
        }
        let want = (0..<n).map {
            Self.reference(
                base: arrays[0][$0], models: [arrays[1][$0], arrays[2][$0]], weights: weights, divide: 1, lambda: 0.5)
        }
        #expect(zip(out, want).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) })
    }

    @Test("mixed dtypes are declined, leaving the sink untouched")
    func mixed() {
        var base = [Float](repeating: 1, count: 64)
        let bf = [UInt16](repeating: 0x3F80, count: 64)
        var out = [UInt16](repeating: 7, count: 64)
        let done = base.withUnsafeMutableBufferPointer { b in
            bf.withUnsafeBytes { x in
                out.withUnsafeMutableBytes { o in
                    FusedStream.weightedDeltaSum(
                        base: TensorSource(UnsafeBufferPointer(b)),
                        models: [TensorSource(bytes: x, dtype: .BF16, count: 64)],
                        weights: [1], divide: 1, lambda: 1, into: TensorSink(bytes: o, dtype: .BF16, count: 64))
                }
            }
        }
        #expect(!done)
        #expect(out.allSatisfy { $0 == 7 })
    }
}
