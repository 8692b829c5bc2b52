import CheckpointIO

/// One-pass reductions and combinations over several vectors at once, for the iterative whole-tensor merges
/// (Karcher mean, NuSLERP): each pass reads every input once, 8 lanes at a time, split across cores, and sums in
/// Double per 1,024-element block as `dot` does. Replaces per-model passes and Double copies of whole tensors.
extension VectorMath {
    /// Vectors one pass reads; more are taken in further passes.
    static let fusedLimit = 8

    /// Σ a·bₖ for every `bs[k]`, in one pass over `a` and the `bs`.
    public static func dots(_ a: UnsafeBufferPointer<Float>, _ bs: [UnsafeBufferPointer<Float>]) -> [Double] {
        precondition(bs.allSatisfy { $0.count == a.count }, "dots: shapes")
        if bs.count > fusedLimit {
            return stride(from: 0, to: bs.count, by: fusedLimit).flatMap {
                dots(a, Array(bs[$0..<min(bs.count, $0 + fusedLimit)]))
            }
        }
        guard let ap = a.baseAddress, !bs.isEmpty else { return [Double](repeating: 0, count: bs.count) }
        let m = bs.count
        let pointers = UncheckedSendable((ap, bs.map { $0.baseAddress ?? ap }))
        return reduce(a.count, width: m) { lo, hi, sums in
            let (ap, bps) = pointers.value
            var i = lo
            while i < hi {
                let end = min(hi, i + 1024)
                var acc = [SIMD8<Float>](repeating: .zero, count: m)
                while i + 8 <= end {
                    let av = UnsafeRawPointer(ap).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                    for k in 0..<m {
                        acc[k] +=
                            av * UnsafeRawPointer(bps[k]).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                    }
                    i += 8
                }
                for k in 0..<m {
                    var s = Double(acc[k].sum())
                    for j in i..<end { s += Double(ap[j]) * Double(bps[k][j]) }
                    sums[k] += s
                }
                i = max(i, end)
            }
        }
    }

    /// The Gram matrix of `(vₖ − base)` (or of the `vs` themselves when `base` is nil), row-major `m × m`, in one
    /// pass: task vectors are small next to the weights, so their products are formed from the differences,
    /// never by expanding (v − b)·(w − b).
    public static func gram(_ vs: [UnsafeBufferPointer<Float>], minus base: UnsafeBufferPointer<Float>?) -> [Double] {
        let m = vs.count
        precondition(m >= 1 && m <= 4 && vs.allSatisfy { $0.count == vs[0].count }, "gram: shapes")
        precondition(base.map { $0.count == vs[0].count } ?? true, "gram: base shape")
        guard let first = vs[0].baseAddress else { return [Double](repeating: 0, count: m * m) }
        let pointers = UncheckedSendable((vs.map { $0.baseAddress ?? first }, base?.baseAddress))
        let pairs = (0..<m).flatMap { i in (i..<m).map { (i, $0) } }
        let upper = reduce(vs[0].count, width: pairs.count) { lo, hi, sums in
            let (vps, bp) = pointers.value
            var i = lo
            var d = [SIMD8<Float>](repeating: .zero, count: m)
            while i < hi {
                let end = min(hi, i + 1024)
                var acc = [SIMD8<Float>](repeating: .zero, count: pairs.count)
                while i + 8 <= end {
                    let b = bp.map { UnsafeRawPointer($0).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) }
                    for k in 0..<m {
                        let v = UnsafeRawPointer(vps[k]).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                        d[k] = b.map { v - $0 } ?? v
                    }
                    for (p, (x, y)) in pairs.enumerated() { acc[p] += d[x] * d[y] }
                    i += 8
                }
                for (p, (x, y)) in pairs.enumerated() {
                    var s = Double(acc[p].sum())
                    for j in i..<end {
                        let b = bp.map { $0[j] } ?? 0
                        s += Double(vps[x][j] - b) * Double(vps[y][j] - b)
                    }
                    sums[p] += s
                }
                i = max(i, end)
            }
        }
        var out = [Double](repeating: 0, count: m * m)
        for (p, (x, y)) in pairs.enumerated() {
            out[x * m + y] = upper[p]
            out[y * m + x] = upper[p]
        }
        return out
    }

    /// out = Σ cₖ·vₖ in one pass (`out` may be one of the first eight `vs`: each element is read before it is
    /// written; beyond eight vectors, later passes add to `out`); returns ‖out‖².
    @discardableResult
    public static func linearCombination(
        _ coefficients: [Float], _ vs: [UnsafeBufferPointer<Float>], into out: UnsafeMutableBufferPointer<Float>
    ) -> Double {
        let m = vs.count
        precondition(
            m >= 1 && coefficients.count == m && vs.allSatisfy { $0.count == out.count }, "linearCombination: shapes")
        if m > fusedLimit {
            // The first passes write partial sums into `out`; each later one adds to them.
            var norm2 = linearCombination(Array(coefficients[0..<fusedLimit]), Array(vs[0..<fusedLimit]), into: out)
            var k = fusedLimit
            while k < m {
                let hi = min(m, k + fusedLimit - 1)
                norm2 = linearCombination(
                    [1] + coefficients[k..<hi], [UnsafeBufferPointer(out)] + vs[k..<hi], into: out)
                k = hi
            }
            return norm2
        }
        guard let op = out.baseAddress else { return 0 }
        let pointers = UncheckedSendable((vs.map { $0.baseAddress ?? UnsafePointer(op) }, op))
        let c = coefficients
        return reduce(out.count, width: 1) { lo, hi, sums in
            let (vps, op) = pointers.value
            let cv = c.map { SIMD8<Float>(repeating: $0) }
            var i = lo
            while i < hi {
                let end = min(hi, i + 1024)
                var sq = SIMD8<Float>.zero
                while i + 8 <= end {
                    var v = cv[0] * UnsafeRawPointer(vps[0]).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                    for k in 1..<m {
                        v +=
                            cv[k] * UnsafeRawPointer(vps[k]).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                    }
                    UnsafeMutableRawPointer(op).storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
                    sq += v * v
                    i += 8
                }
                var s = Double(sq.sum())
                for j in i..<end {
                    var v = c[0] * vps[0][j]
                    for k in 1..<m { v += c[k] * vps[k][j] }
                    op[j] = v
                    s += Double(v) * Double(v)
                }
                sums[0] += s
                i = max(i, end)
            }
        }[0]
    }

    /// Splits `0..<n` into chunks across cores; `body(lo, hi, sums)` adds its chunk's `width` partial sums.
    private static func reduce(
        _ n: Int, width: Int, _ body: @Sendable (Int, Int, inout [Double]) -> Void
    ) -> [Double] {
        let chunks = max(1, min(Parallel.coreCount * 4, n / (1 << 16)))
        let per = (n + chunks - 1) / chunks
        var partial = [[Double]](repeating: [Double](repeating: 0, count: width), count: chunks)
        partial.withUnsafeMutableBufferPointer { pb in
            let P = UncheckedSendable(pb)
            Parallel.forEachChunk(chunks, minChunk: 1) { cr in
                for c in cr {
                    var sums = [Double](repeating: 0, count: width)
                    body(c * per, min(n, c * per + per), &sums)
                    P.value[c] = sums
                }
            }
        }
        return (0..<width).map { k in partial.reduce(0) { $0 + $1[k] } }
    }
}
