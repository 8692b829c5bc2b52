import CEncoderKernels
import CheckpointIO
import Foundation
import Testing

@testable import Evaluation

/// The encoder's kernels against plain Double references: the AVX-512 paths of `CEncoderKernels` (when the CPU has
/// AVX-512) and the Swift / OpenBLAS fallback, on shapes with ragged tails.
@Suite("Encoder kernels")
struct EncoderKernelsTests {
    /// The paths this machine can run: the fallback always, the AVX-512 kernels when available.
    static let paths: [Bool] = EncoderKernels.hasAVX512 ? [false, true] : [false]

    /// Deterministic values in [-2, 2).
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Double(state >> 40) / Double(1 << 24) * 4 - 2)
        }
    }

    @Test(
        "attention of packed sequences with Q, K, V biases matches softmax(QKᵀ/√d)V in Double, fused or not, head sizes 16 to 64"
    )
    func attention() {
        let lengths = [1, 3, 16, 17, 64, 70, 130]
        let starts = lengths.indices.map { lengths[..<$0].reduce(0, +) }
        let tokens = lengths.reduce(0, +)
        for (heads, d) in [(2, 16), (3, 32), (2, 48), (2, 64)] {
            let h = heads * d
            let scale = 1 / Float(d).squareRoot()
            let qkv = Self.values(tokens * 3 * h, seed: UInt64(d))
            let bias = Self.values(3 * h, seed: UInt64(d) + 100)
            /// Row `row`, column `col` of the biased Q | K | V.
            func biased(_ row: Int, _ col: Int) -> Double { Double(qkv[row * 3 * h + col] + bias[col]) }
            // Reference: per sequence and head, in Double.
            var want = [Double](repeating: 0, count: tokens * h)
            for (b, n) in lengths.enumerated() {
                for head in 0..<heads {
                    for i in 0..<n {
                        var s = [Double](repeating: 0, count: n)
                        for j in 0..<n {
                            var dot = 0.0
                            for c in 0..<d {
                                dot += biased(starts[b] + i, head * d + c) * biased(starts[b] + j, h + head * d + c)
                            }
                            s[j] = dot * Double(scale)
                        }
                        let m = s.max()!
                        s = s.map { Foundation.exp($0 - m) }
                        let sum = s.reduce(0, +)
                        for c in 0..<d {
                            var o = 0.0
                            for j in 0..<n { o += s[j] / sum * biased(starts[b] + j, 2 * h + head * d + c) }
                            want[(starts[b] + i) * h + head * d + c] = o
                        }
                    }
                }
            }
            let vMax = (0..<tokens).flatMap { r in (0..<h).map { abs(biased(r, 2 * h + $0)) } }.max()!
            // All sequences (one work item per sequence), then the longest alone (its heads split across items).
            for picked in [Array(lengths.indices), [lengths.count - 1]] {
                let rows = picked.flatMap { starts[$0]..<(starts[$0] + lengths[$0]) }
                for fused in Self.paths {
                    var ctx = [Float](repeating: .nan, count: tokens * h)
                    qkv.withUnsafeBufferPointer { q in
                        bias.withUnsafeBufferPointer { bb in
                            ctx.withUnsafeMutableBufferPointer { c in
                                EncoderKernels.attention(
                                    qkv: q.baseAddress!, bias: bb.baseAddress!, ctx: c.baseAddress!,
                                    starts: picked.map { starts[$0] }, lengths: picked.map { lengths[$0] },
                                    heads: heads,
                                    headSize: d, scale: scale, fused: fused)
                            }
                        }
                    }
                    // F32 rounding scales with the values averaged: 1e-6 of the largest |V + bias|.
                    let worst = rows.flatMap { r in (0..<h).map { abs(Double(ctx[r * h + $0]) - want[r * h + $0]) } }
                        .max()!
                    #expect(
                        worst < 1e-6 * vMax,
                        "d \(d), \(picked.count) sequences, fused \(fused): worst absolute error \(worst), largest |V| \(vMax)"
                    )
                }
            }
        }
    }

    @Test(
        "the AVX-512 small product of the tile-fused layout equals a·Wᵀ in Double within 1e-5 relative, ragged rows and columns, strided, accumulating or not",
        .enabled(if: EncoderKernels.hasAVX512, "this CPU has no AVX-512: the small-product kernel was not tested")
    )
    func smallGEMM() {
        for (m, n, k) in [(1, 1, 16), (4, 4, 16), (5, 7, 48), (21, 13, 384), (3, 9, 1536), (8, 17, 32)] {
            let (lda, ldw, ldc) = (k + 16, k + 32, n + 3)
            let a = Self.values(m * lda, seed: UInt64(m * 1000 + k))
            let w = Self.values(n * ldw, seed: UInt64(n * 1000 + k + 1))
            let c0 = Self.values(m * ldc, seed: UInt64(m + n + k))
            for accumulate in [false, true] {
                var c = c0
                a.withUnsafeBufferPointer { ap in
                    w.withUnsafeBufferPointer { wp in
                        c.withUnsafeMutableBufferPointer {
                            ts_small_gemm_nt_avx512(
                                ap.baseAddress, lda, wp.baseAddress, ldw, $0.baseAddress, ldc, m, n, k,
                                accumulate ? 1 : 0)
                        }
                    }
                }
                var worst = 0.0
                for i in 0..<(m * ldc) {
                    let (r, j) = (i / ldc, i % ldc)
                    guard j < n else {
                        #expect(c[i] == c0[i], "padding column \(j) of row \(r) written")
                        continue
                    }
                    var want = accumulate ? Double(c0[i]) : 0
                    var scale = abs(want)
                    for p in 0..<k {
                        let t = Double(a[r * lda + p]) * Double(w[j * ldw + p])
                        want += t
                        scale += abs(t)
                    }
                    worst = max(worst, abs(Double(c[i]) - want) / scale)
                }
                #expect(worst < 1e-5, "m \(m), n \(n), k \(k), accumulate \(accumulate): worst \(worst)")
            }
        }
    }

    // The tests below loop over `paths`; on a CPU without AVX-512 they check the fallback only. This test is
    // reported as skipped there, so a run that did not exercise the AVX-512 kernels says so.
    @Test(
        "the AVX-512 GELU agrees with the fallback within 2e-6 on [-8, 8] (each is within 1e-6 of the Double reference)",
        .enabled(if: EncoderKernels.hasAVX512, "this CPU has no AVX-512: the encoder's AVX-512 kernels were not tested")
    )
    func avx512Ran() {
        let x: [Float] = (0..<4_099).map { Float(-8.0 + 16.0 * Double($0) / 4_098.0) }
        var fast = x
        var slow = x
        fast.withUnsafeMutableBufferPointer { EncoderKernels.gelu($0, vectorized: true) }
        slow.withUnsafeMutableBufferPointer { EncoderKernels.gelu($0, vectorized: false) }
        let worst = zip(fast, slow).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 2e-6, "worst difference \(worst)")
    }

    @Test("GELU is within 1e-6 of x·Φ(x) in Double on [-8, 8], including a ragged tail")
    func gelu() {
        let x: [Float] = (0..<16_007).map { (i: Int) -> Float in Float(-8.0 + 16.0 * Double(i) / 16_006.0) }
        for vectorized in Self.paths {
            var y = x
            y.withUnsafeMutableBufferPointer { EncoderKernels.gelu($0, vectorized: vectorized) }
            var worst = 0.0
            for (xi, yi) in zip(x, y) {
                let v = Double(xi)
                let want = 0.5 * v * (1 + Foundation.erf(v / 2.0.squareRoot()))
                worst = max(worst, abs(Double(yi) - want))
            }
            #expect(worst < 1e-6, "vectorized \(vectorized): worst absolute error \(worst)")
        }
    }

    @Test("GELU with a bias row is within 1e-6 of (x + b)·Φ(x + b) in Double, widths 1536 and 37")
    func biasGELU() {
        for width in [1536, 37] {
            let rows = 11
            let x = Self.values(rows * width, seed: UInt64(width) + 1).map { $0 * 3 }
            let bias = Self.values(width, seed: UInt64(width) + 2)
            for vectorized in Self.paths {
                var y = x
                y.withUnsafeMutableBufferPointer { yb in
                    bias.withUnsafeBufferPointer { EncoderKernels.gelu(yb, bias: $0, vectorized: vectorized) }
                }
                var worst = 0.0
                for i in 0..<(rows * width) {
                    let v = Double(x[i] + bias[i % width])
                    let want = 0.5 * v * (1 + Foundation.erf(v / 2.0.squareRoot()))
                    worst = max(worst, abs(Double(y[i]) - want))
                }
                #expect(worst < 1e-6, "width \(width), vectorized \(vectorized): worst absolute error \(worst)")
            }
        }
    }

    @Test("LayerNorm of x + bias in place matches the Double formula, widths 384 and 37")
    func biasLayerNorm() {
        for width in [384, 37] {
            let rows = 9
            let x = Self.values(rows * width, seed: UInt64(width) + 3).enumerated().map { $1 * 3 + Float($0 % 5) }
            let bias = Self.values(width, seed: 5)
            let gamma = Self.values(width, seed: 7)
            let beta = Self.values(width, seed: 8)
            var want = [Double](repeating: 0, count: rows * width)
            for r in 0..<rows {
                let row = (0..<width).map { Double(x[r * width + $0] + bias[$0]) }
                let mean = row.reduce(0, +) / Double(width)
                let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(width)
                for j in 0..<width {
                    want[r * width + j] =
                        (row[j] - mean) / (variance + 1e-12).squareRoot() * Double(gamma[j]) + Double(beta[j])
                }
            }
            for vectorized in Self.paths {
                var y = x
                y.withUnsafeMutableBufferPointer { yb in
                    gamma.withUnsafeBufferPointer { g in
                        beta.withUnsafeBufferPointer { b in
                            bias.withUnsafeBufferPointer {
                                EncoderKernels.layerNorm(
                                    yb, rows: rows, gamma: g, beta: b, eps: 1e-12, bias: $0, vectorized: vectorized)
                            }
                        }
                    }
                }
                let worst = zip(y, want).map { abs(Double($0) - $1) }.max()!
                #expect(worst < 5e-6, "width \(width), vectorized \(vectorized): worst absolute error \(worst)")
            }
        }
    }

    @Test("LayerNorm into another buffer matches the Double formula, widths 384 and 37, input untouched")
    func layerNorm() {
        for width in [384, 37] {
            let rows = 9
            let x = Self.values(rows * width, seed: UInt64(width)).enumerated().map { $1 * 3 + Float($0 % 5) }
            let gamma = Self.values(width, seed: 7)
            let beta = Self.values(width, seed: 8)
            var want = [Double](repeating: 0, count: rows * width)
            for r in 0..<rows {
                let row = x[(r * width)..<((r + 1) * width)].map(Double.init)
                let mean = row.reduce(0, +) / Double(width)
                let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(width)
                for j in 0..<width {
                    want[r * width + j] =
                        (row[j] - mean) / (variance + 1e-12).squareRoot() * Double(gamma[j]) + Double(beta[j])
                }
            }
            for vectorized in Self.paths {
                var input = x
                var out = [Float](repeating: .nan, count: rows * width)
                input.withUnsafeMutableBufferPointer { xb in
                    gamma.withUnsafeBufferPointer { g in
                        beta.withUnsafeBufferPointer { b in
                            out.withUnsafeMutableBufferPointer { o in
                                EncoderKernels.layerNorm(
                                    xb, rows: rows, gamma: g, beta: b, eps: 1e-12, into: o.baseAddress!,
                                    vectorized: vectorized)
                            }
                        }
                    }
                }
                #expect(input == x)
                let worst = zip(out, want).map { abs(Double($0) - $1) }.max()!
                #expect(worst < 5e-6, "width \(width), vectorized \(vectorized): worst absolute error \(worst)")
            }
        }
    }
}
