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
                            acc += ar.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
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
                let v = av * ar.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
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
