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
