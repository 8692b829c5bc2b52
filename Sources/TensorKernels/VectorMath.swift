import CheckpointIO

/// Whole-vector reductions the interpolation merges (SLERP, Model Stock, Karcher) need: dot products and norms in
/// Double across cores, so a 10⁸-element tensor's dot product does not lose digits to f32 accumulation.
public enum VectorMath {
    /// Σ aᵢ bᵢ.
    public static func dot(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> Double {
        precondition(a.count == b.count, "length mismatch")
        guard let ap = a.baseAddress, let bp = b.baseAddress else { return 0 }
        let n = a.count
        let chunks = max(1, min(Parallel.coreCount * 4, n / (1 << 16)))
        let per = (n + chunks - 1) / chunks
        var partial = [Double](repeating: 0, count: chunks)
        partial.withUnsafeMutableBufferPointer { pb in
            let P = UncheckedSendable(pb)
            let A = UncheckedSendable(ap)
            let B = UncheckedSendable(bp)
            Parallel.forEachChunk(chunks, minChunk: 1) { cr in
                for c in cr {
                    let lo = c * per
                    let hi = min(n, lo + per)
                    var total = 0.0
                    var i = lo
                    let ar = UnsafeRawPointer(A.value)
                    let br = UnsafeRawPointer(B.value)
                    while i < hi {
                        let end = min(hi, i + 1024)
                        var acc = SIMD8<Float>(repeating: 0)
                        while i + 8 <= end {
                            acc +=
                                ar.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                                * br.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                            i += 8
                        }
                        var s = Double(acc.sum())
                        while i < end {
                            s += Double(A.value[i]) * Double(B.value[i])
                            i += 1
                        }
                        total += s
                    }
                    P.value[c] = total
                }
            }
        }
        return partial.reduce(0, +)
    }

    /// ‖a‖₂.
    public static func norm(_ a: UnsafeBufferPointer<Float>) -> Double { Elementwise.sumOfSquares(a).squareRoot() }

    /// out = α a + β b, on all cores.
    public static func combine(
        _ alpha: Float, _ a: UnsafeBufferPointer<Float>, _ beta: Float, _ b: UnsafeBufferPointer<Float>,
        into out: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(a.count == b.count && a.count == out.count, "length mismatch")
        guard let ap = a.baseAddress, let bp = b.baseAddress, let op = out.baseAddress else { return }
        let A = UncheckedSendable(ap)
        let B = UncheckedSendable(bp)
        let O = UncheckedSendable(op)
        Parallel.forEachChunk(a.count, minChunk: 1 << 16) { r in
            let ar = UnsafeRawPointer(A.value)
            let br = UnsafeRawPointer(B.value)
            let orr = UnsafeMutableRawPointer(O.value)
            let av = SIMD8<Float>(repeating: alpha)
            let bv = SIMD8<Float>(repeating: beta)
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let v =
                    av * ar.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                    + bv * br.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                orr.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            while i < r.upperBound {
                O.value[i] = alpha * A.value[i] + beta * B.value[i]
                i += 1
            }
        }
    }
}

// MARK: - Elementary functions on SIMD8<Float>

extension VectorMath {
    /// eˣ for 8 lanes, for softmax: max relative error 1.2e-7 (1 ulp) against `expf` on [-87.3, 88] (`VectorMathTests`
    /// checks a dense grid). Below -87.34 (where eˣ leaves the normal range) it gives 0, above 88.72 +Inf; on
    /// (88.03, 88.72] it saturates at e^88.03, which a softmax (inputs ≤ 0) never sees. NaN stays NaN.
    ///
    /// Cody-Waite reduction x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two so n·ln2 is exact), Cephes' degree-5
    /// polynomial for eʳ (S. L. Moshier, Cephes Math Library `expf`), and 2ⁿ built in the exponent bits. Rounding to
    /// the nearest n uses the 1.5·2²³ trick: baseline x86-64 (SSE2) has no vector floor.
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        // Clamps by compare-and-replace: `clamped(lowerBound:upperBound:)` and `pointwiseMin/Max` compile to calls
        // of per-lane generic code here (4× slower); NaN fails both compares and propagates.
        var clamped = x.replacing(with: -87.33654, where: x .< -87.33654)
        clamped.replace(with: 88.02969, where: clamped .> 88.02969)
        let magic = SIMD8<Float>(repeating: 0x1.8p23)
        let shifted = clamped * 1.442695040888963 + magic
        let n = shifted - magic
        var r = clamped - n * 0.693359375
        r = r - n * -2.12194440e-4
        var p = SIMD8<Float>(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * (r * r) + r + 1
        // 2ⁿ: n is an integer in [-126, 127] held in the low mantissa bits of `shifted` (1.5·2²³ has bits 0x4B400000).
        let bits = (unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        var result = p * unsafeBitCast(bits, to: SIMD8<Float>.self)
        result.replace(with: 0, where: x .< -87.33654)
        result.replace(with: .infinity, where: x .> 88.72283)
        return result
    }

    /// erf(x) for 8 lanes, for exact GELU: max absolute error 4.2e-7 against `erff` (`VectorMathTests`), exactly ±1
    /// beyond |x| = 4, odd, NaN stays NaN.
    ///
    /// x·P(x²)/Q(x²) with numerator degree 13 and denominator degree 8 on x clamped to [-4, 4]: the rational
    /// approximation of Eigen's `generic_fast_erf_float` (also XLA's and TVM's); only its published coefficients are
    /// reused.
    @inlinable @inline(__always)
    public static func erf(_ x: SIMD8<Float>) -> SIMD8<Float> {
        var c = x.replacing(with: -4, where: x .< -4)
        c.replace(with: 4, where: c .> 4)
        let x2 = c * c
        var p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08
        p = x2 * p + -2.10102402082508e-06
        p = x2 * p + -5.69250639462346e-05
        p = x2 * p + -7.34990630326855e-04
        p = x2 * p + -2.95459980854025e-03
        p = x2 * p + -1.60960333262415e-02
        p = c * p
        var q = x2 * -1.45660718464996e-05 + -2.13374055278905e-04
        q = x2 * q + -1.68282697438203e-03
        q = x2 * q + -7.37332916720468e-03
        q = x2 * q + -1.42647390514189e-02
        return p / q
    }
}
