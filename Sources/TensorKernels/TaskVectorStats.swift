import CheckpointIO

/// Statistics of one tensor's task vector τ = finetuned − base: the first look at the "pulse-like" characteristic
/// T-Switch relies on (most of the change sits in a few large entries).
///
/// The shares are of L1 mass: `topShares[i]` is Σ|τ| over the ⌈p·n⌉ largest |τ| divided by Σ|τ|, for
/// p in `TaskVectorStats.topFractions` (1 %, 10 %, 30 %). Selection is exact (quickselect), so ties are counted
/// once each and the share does not depend on their order. A tensor with no change has shares of 0.
public struct TaskVectorStats: Sendable, Equatable {
    /// The fractions of entries whose mass `topShares` reports.
    public static let topFractions: [Double] = [0.01, 0.10, 0.30]

    public var elementCount: Int
    /// ‖τ‖₂, summed in Double.
    public var l2Norm: Double
    /// Σ|τ|, in Double.
    public var l1Mass: Double
    /// max |τ|.
    public var maxAbs: Float
    /// Entries where finetuned == base exactly (τ = 0, including −0).
    public var zeroCount: Int
    /// NaN or infinite entries of τ (they make the norms non-finite; counted so a report can say so).
    public var nonFiniteCount: Int
    /// Σ|τ| over the top 1/10/30 % entries, in the order of `topFractions`.
    public var topMass: [Double]

    public var zeroFraction: Double { elementCount == 0 ? 0 : Double(zeroCount) / Double(elementCount) }
    public var topShares: [Double] { topMass.map { l1Mass > 0 ? $0 / l1Mass : 0 } }

    /// The number of entries the fraction `p` selects out of `n`: ⌈p·n⌉, at least 1 when n > 0.
    public static func topCount(_ p: Double, of n: Int) -> Int {
        n == 0 ? 0 : min(n, max(1, Int((p * Double(n)).rounded(.up))))
    }

    /// Computes the statistics of `finetuned − base`.
    ///
    /// - Parameter scratch: n floats of working memory (receives |τ|, partially reordered); passing it lets a
    ///   caller streaming many tensors reuse one buffer.
    public static func compute(
        base: UnsafeBufferPointer<Float>, finetuned: UnsafeBufferPointer<Float>,
        scratch: UnsafeMutableBufferPointer<Float>
    ) -> TaskVectorStats {
        let n = base.count
        precondition(finetuned.count == n && scratch.count >= n, "length mismatch")
        var stats = TaskVectorStats(
            elementCount: n, l2Norm: 0, l1Mass: 0, maxAbs: 0, zeroCount: 0, nonFiniteCount: 0,
            topMass: topFractions.map { _ in 0 })
        guard n > 0, let bp = base.baseAddress, let fp = finetuned.baseAddress, let sp = scratch.baseAddress else {
            return stats
        }
        let pass = magnitudePass(bp, fp, sp, n)
        stats.l2Norm = pass.sumSquares.squareRoot()
        stats.l1Mass = pass.sumAbs
        stats.maxAbs = pass.maxAbs
        stats.zeroCount = pass.zeros
        stats.nonFiniteCount = pass.nonFinite
        // Nested selection: the top 30 % prefix contains the top 10 %, which contains the top 1 %, so each
        // quickselect runs on the previous prefix only.
        let magnitudes = UnsafeMutableBufferPointer(start: sp, count: n)
        var limit = n
        for (i, p) in topFractions.enumerated().reversed() {
            let k = topCount(p, of: n)
            let prefix = UnsafeMutableBufferPointer(rebasing: magnitudes[0..<limit])
            if k < limit { Selection.partitionLargest(prefix, k: k) }
            stats.topMass[i] = Elementwise.sumOfMagnitudes(UnsafeBufferPointer(rebasing: magnitudes[0..<k]))
            limit = k
        }
        return stats
    }

    /// Convenience for arrays (tests, small tensors).
    public static func compute(base: [Float], finetuned: [Float]) -> TaskVectorStats {
        var scratch = [Float](repeating: 0, count: base.count)
        return base.withUnsafeBufferPointer { b in
            finetuned.withUnsafeBufferPointer { f in
                scratch.withUnsafeMutableBufferPointer { compute(base: b, finetuned: f, scratch: $0) }
            }
        }
    }

    private struct Pass {
        var sumSquares = 0.0
        var sumAbs = 0.0
        var maxAbs: Float = 0
        var zeros = 0
        var nonFinite = 0
    }

    /// One streaming pass over both inputs: writes |τ| and accumulates the sums per core; SIMD8 per block of 1024
    /// entries with Float accumulators, Double across blocks.
    private static func magnitudePass(
        _ base: UnsafePointer<Float>, _ finetuned: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int
    ) -> Pass {
        let chunks = max(1, min(Parallel.coreCount * 4, n / (1 << 16)))
        let per = (n + chunks - 1) / chunks
        var partial = [Pass](repeating: Pass(), count: chunks)
        partial.withUnsafeMutableBufferPointer { pb in
            let P = UncheckedSendable(pb.start)
            let B = UncheckedSendable(base)
            let F = UncheckedSendable(finetuned)
            let O = UncheckedSendable(out)
            Parallel.forEachChunk(chunks, minChunk: 1) { cr in
                let br = UnsafeRawPointer(B.value)
                let fr = UnsafeRawPointer(F.value)
                let orr = UnsafeMutableRawPointer(O.value)
                for c in cr {
                    var acc = Pass()
                    var i = c * per
                    let hi = min(n, i + per)
                    var maxV = SIMD8<Float>(repeating: 0)
                    while i < hi {
                        let end = min(hi, i + 1024)
                        var sq = SIMD8<Float>(repeating: 0)
                        var ab = SIMD8<Float>(repeating: 0)
                        var zeros = SIMD8<Int32>(repeating: 0)
                        while i + 8 <= end {
                            let d =
                                fr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                                - br.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                            let a = unsafeBitCast(
                                unsafeBitCast(d, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: SIMD8<Float>.self)
                            orr.storeBytes(of: a, toByteOffset: i * 4, as: SIMD8<Float>.self)
                            sq += d * d
                            ab += a
                            maxV = pointwiseMax(maxV, a)
                            zeros &+= SIMD8<Int32>(repeating: 0).replacing(with: 1, where: a .== 0)
                            i += 8
                        }
                        var sqS = Double(sq.sum())
                        var abS = Double(ab.sum())
                        acc.zeros += Int(zeros.wrappedSum())
                        while i < end {
                            let a = Swift.abs(F.value[i] - B.value[i])
                            O.value[i] = a
                            sqS += Double(a * a)
                            abS += Double(a)
                            if a == 0 { acc.zeros += 1 }
                            if a > acc.maxAbs { acc.maxAbs = a }
                            if !a.isFinite { acc.nonFinite += 1 }
                            i += 1
                        }
                        acc.sumSquares += sqS
                        acc.sumAbs += abS
                    }
                    acc.maxAbs = Swift.max(acc.maxAbs, maxV.max())
                    P.value[c] = acc
                }
            }
        }
        var total = Pass()
        for p in partial {
            total.sumSquares += p.sumSquares
            total.sumAbs += p.sumAbs
            total.maxAbs = Swift.max(total.maxAbs, p.maxAbs)
            total.zeros += p.zeros
            total.nonFinite += p.nonFinite
        }
        // Non-finite entries are rare (broken checkpoints); count them in a second pass only when the sums say so.
        if !total.sumAbs.isFinite || total.maxAbs.isNaN || !total.maxAbs.isFinite {
            total.nonFinite = (0..<n).reduce(0) { $0 + (out[$1].isFinite ? 0 : 1) }
            if (0..<n).contains(where: { out[$0].isNaN }) { total.maxAbs = .nan }
        }
        return total
    }
}
