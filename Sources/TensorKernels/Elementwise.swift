import CheckpointIO

/// SIMD, multi-core elementwise loops. Each function splits its range across cores with `Parallel.forEachChunk`
/// and runs 8-wide SIMD over each chunk; the tails are scalar.
public enum Elementwise {
    static let minChunk = 1 << 16

    /// y += a · x
    public static func axpy(_ a: Float, _ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableBufferPointer<Float>) {
        precondition(x.count == y.count, "length mismatch")
        guard let xp = x.baseAddress, let yp = y.baseAddress else { return }
        let X = UncheckedSendable(xp)
        let Y = UncheckedSendable(yp)
        Parallel.forEachChunk(x.count, minChunk: minChunk) { r in
            let xr = UnsafeRawPointer(X.value)
            let yr = UnsafeMutableRawPointer(Y.value)
            var i = r.lowerBound
            let av = SIMD8<Float>(repeating: a)
            while i + 8 <= r.upperBound {
                let xv = xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                let yv = yr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                yr.storeBytes(of: yv + av * xv, toByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            while i < r.upperBound {
                Y.value[i] += a * X.value[i]
                i += 1
            }
        }
    }

    /// out = a - b
    public static func subtract(
        _ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, into out: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(a.count == b.count && a.count == out.count, "length mismatch")
        guard let ap = a.baseAddress, let bp = b.baseAddress, let op = out.baseAddress else { return }
        let A = UncheckedSendable(ap)
        let B = UncheckedSendable(bp)
        let O = UncheckedSendable(op)
        Parallel.forEachChunk(a.count, minChunk: minChunk) { r in
            let ar = UnsafeRawPointer(A.value)
            let br = UnsafeRawPointer(B.value)
            let orr = UnsafeMutableRawPointer(O.value)
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let d =
                    ar.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                    - br.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                orr.storeBytes(of: d, toByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            while i < r.upperBound {
                O.value[i] = A.value[i] - B.value[i]
                i += 1
            }
        }
    }

    /// out = |x|
    public static func abs(_ x: UnsafeBufferPointer<Float>, into out: UnsafeMutableBufferPointer<Float>) {
        precondition(x.count == out.count, "length mismatch")
        guard let xp = x.baseAddress, let op = out.baseAddress else { return }
        let X = UncheckedSendable(xp)
        let O = UncheckedSendable(op)
        Parallel.forEachChunk(x.count, minChunk: minChunk) { r in
            let xr = UnsafeRawPointer(X.value)
            let orr = UnsafeMutableRawPointer(O.value)
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let bits = xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<UInt32>.self) & 0x7FFF_FFFF
                orr.storeBytes(of: bits, toByteOffset: i * 4, as: SIMD8<UInt32>.self)
                i += 8
            }
            while i < r.upperBound {
                O.value[i] = Swift.abs(X.value[i])
                i += 1
            }
        }
    }

    /// Σ x² in Double (exact enough for norms of 10^9 elements), SIMD per chunk.
    public static func sumOfSquares(_ x: UnsafeBufferPointer<Float>) -> Double {
        reduce(x) { v in (v * v) }
    }

    /// Σ |x| in Double.
    public static func sumOfMagnitudes(_ x: UnsafeBufferPointer<Float>) -> Double {
        reduce(x) { v in v.replacing(with: -v, where: v .< 0) }
    }

    /// Σ f(x) over 8-wide blocks, accumulated in Float per 1024-element block and in Double across blocks.
    @inline(__always)
    static func reduce(_ x: UnsafeBufferPointer<Float>, _ f: (SIMD8<Float>) -> SIMD8<Float>) -> Double {
        guard let xp = x.baseAddress else { return 0 }
        let chunks = max(1, min(Parallel.coreCount * 4, x.count / minChunk))
        let per = (x.count + chunks - 1) / chunks
        var partial = [Double](repeating: 0, count: chunks)
        partial.withUnsafeMutableBufferPointer { pb in
            let P = UncheckedSendable(pb)
            let X = UncheckedSendable(xp)
            withoutActuallyEscaping(f) { f in
                let F = UncheckedSendable(f)
                Parallel.forEachChunk(chunks, minChunk: 1) { cr in
                    for c in cr {
                        let lo = c * per
                        let hi = min(x.count, lo + per)
                        var total = 0.0
                        var i = lo
                        let xr = UnsafeRawPointer(X.value)
                        while i < hi {
                            let end = min(hi, i + 1024)
                            var acc = SIMD8<Float>(repeating: 0)
                            while i + 8 <= end {
                                acc += F.value(xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
                                i += 8
                            }
                            var tail = SIMD8<Float>(repeating: 0)
                            var k = 0
                            while i < end {
                                tail[k] = X.value[i]
                                k += 1
                                i += 1
                            }
                            if k > 0 {
                                var t = F.value(tail)
                                for j in k..<8 { t[j] = 0 }
                                acc += t
                            }
                            total += Double(acc.sum())
                        }
                        P.value[c] = total
                    }
                }
            }
        }
        return partial.reduce(0, +)
    }
}
