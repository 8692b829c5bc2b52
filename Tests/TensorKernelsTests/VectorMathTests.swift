import Foundation
import Testing

@testable import TensorKernels

@Suite("SIMD elementary functions")
struct VectorMathTests {
    /// Every 8-lane call covers 8 neighbouring grid points, so each lane position is exercised.
    static func grid(from lo: Float, to hi: Float, step: Float, _ body: (SIMD8<Float>) -> Void) {
        var x = lo
        while x <= hi {
            var v = SIMD8<Float>(repeating: 0)
            for k in 0..<8 { v[k] = x + Float(k) * step / 8 }
            body(v)
            x += step
        }
    }

    @Test("exp is within 1.5e-7 relative of expf on a dense grid of [-87.3, 88]")
    func expAccuracy() {
        var worst = 0.0
        Self.grid(from: -87.3, to: 88, step: 1e-3) { v in
            let e = VectorMath.exp(v)
            for k in 0..<8 {
                let want = Double(expf(v[k]))
                worst = max(worst, abs(Double(e[k]) - want) / want)
            }
        }
        #expect(worst < 1.5e-7)
        #expect(worst > 0)  // a real approximation, not libm
    }

    @Test("exp handles the softmax edge cases: 0, underflow, overflow, NaN")
    func expEdges() {
        let e = VectorMath.exp(SIMD8(0, -1e30, -.infinity, -87.4, 88.8, .infinity, .nan, 1))
        #expect(e[0] == 1)
        #expect(e[1] == 0 && e[2] == 0 && e[3] == 0)
        #expect(e[4] == .infinity && e[5] == .infinity)
        #expect(e[6].isNaN)
        #expect(abs(e[7] - Float(M_E)) <= Float(M_E).ulp)
    }

    @Test("erf is within 5e-7 of erff on a dense grid of [-6, 6], odd, and ±1 in the tails")
    func erfAccuracy() {
        var worst = 0.0
        var odd = true
        Self.grid(from: -6, to: 6, step: 1e-4) { v in
            let e = VectorMath.erf(v)
            let m = VectorMath.erf(-v)
            for k in 0..<8 {
                worst = max(worst, abs(Double(e[k]) - Double(erff(v[k]))))
                odd = odd && m[k] == -e[k]
            }
        }
        #expect(worst < 5e-7)
        #expect(odd)
        let tails = VectorMath.erf(SIMD8(4, 10, 1e30, .infinity, -4, -10, -.infinity, .nan))
        for k in 0..<4 { #expect(tails[k] == 1) }
        for k in 4..<7 { #expect(tails[k] == -1) }
        #expect(tails[7].isNaN)
        // Tiny arguments keep their relative accuracy: erf(x) ≈ 2x/√π.
        let tiny = VectorMath.erf(SIMD8(repeating: 1e-20))
        #expect(abs(Double(tiny[0]) / (2e-20 / Double.pi.squareRoot()) - 1) < 1e-6)
    }
}

/// The fused multi-vector passes against plain Double loops, on lengths that leave SIMD and block tails.
struct FusedVectorMathTests {
    static func vectors(_ m: Int, _ n: Int, seed: UInt64) -> [[Float]] {
        var rng = SplitMix64(seed: seed)
        return (0..<m).map { _ in (0..<n).map { _ in rng.nextUnitFloat() * 2 - 1 } }
    }

    @Test("dots and the Gram matrix of differences equal Double loops", arguments: [1, 13, 70_001])
    func reductions(n: Int) {
        let v = Self.vectors(11, n, seed: UInt64(n))
        v.withUnsafeBufferPointers { ptrs in check(v, ptrs, n) }
    }

    func check(_ v: [[Float]], _ ptrs: [UnsafeBufferPointer<Float>], _ n: Int) {
        let got = VectorMath.dots(ptrs[0], Array(ptrs[1...]))
        #expect(got.count == 10)
        for k in 1..<11 {
            let expected = (0..<n).reduce(0.0) { $0 + Double(v[0][$1]) * Double(v[k][$1]) }
            // f32 block sums: error relative to Σ|aᵢbᵢ| (the sum itself may cancel to near zero).
            let scale = (0..<n).reduce(0.0) { $0 + abs(Double(v[0][$1]) * Double(v[k][$1])) }
            #expect(abs(got[k - 1] - expected) <= 1e-6 * max(1, scale))
        }
        for base in [nil, ptrs[3]] {
            let g = VectorMath.gram([ptrs[0], ptrs[1], ptrs[2]], minus: base)
            for i in 0..<3 {
                for j in 0..<3 {
                    let expected = (0..<n).reduce(0.0) { s, e in
                        let b = base == nil ? 0 : Double(v[3][e])
                        return s + (Double(v[i][e]) - b) * (Double(v[j][e]) - b)
                    }
                    let scale = (0..<n).reduce(0.0) { s, e in
                        let b = base == nil ? 0 : Double(v[3][e])
                        return s + abs((Double(v[i][e]) - b) * (Double(v[j][e]) - b))
                    }
                    #expect(abs(g[i * 3 + j] - expected) <= 1e-6 * max(1, scale))
                }
            }
        }
    }

    @Test("a linear combination of up to 11 vectors, into a fresh buffer or over its first input", arguments: [3, 11])
    func combination(m: Int) {
        let n = 70_003
        let v = Self.vectors(m, n, seed: 5 + UInt64(m))
        let c = (0..<m).map { Float($0) * 0.25 - 1 }
        var out = [Float](repeating: .nan, count: n)
        var inPlace = v[0]
        let norm2 = v.withUnsafeBufferPointers { ptrs in
            out.withUnsafeMutableBufferPointer { VectorMath.linearCombination(c, ptrs, into: $0) }
        }
        let norm2InPlace = inPlace.withUnsafeMutableBufferPointer { first in
            v.withUnsafeBufferPointers { ptrs in
                VectorMath.linearCombination(c, [UnsafeBufferPointer(first)] + ptrs.dropFirst(), into: first)
            }
        }
        var expectedNorm2 = 0.0
        for e in 0..<n {
            let expected = (0..<m).reduce(0.0) { $0 + Double(c[$1]) * Double(v[$1][e]) }
            expectedNorm2 += expected * expected
            #expect(abs(Double(out[e]) - expected) <= 1e-5 * max(1, abs(expected)))
            #expect(inPlace[e] == out[e])
        }
        #expect(abs(norm2 - expectedNorm2) <= 1e-4 * expectedNorm2)
        #expect(norm2InPlace == norm2)
    }
}

extension Array where Element == [Float] {
    /// Calls `body` with a buffer pointer to each inner array, valid for the call.
    fileprivate func withUnsafeBufferPointers<R>(_ body: ([UnsafeBufferPointer<Float>]) -> R) -> R {
        func go(_ i: Int, _ acc: [UnsafeBufferPointer<Float>]) -> R {
            if i == count { return body(acc) }
            return self[i].withUnsafeBufferPointer { go(i + 1, acc + [$0]) }
        }
        return go(0, [])
    }
}
