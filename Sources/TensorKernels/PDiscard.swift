import CheckpointIO

/// P-Discard, the activation switch of T-Switch (Qi et al., CVPR 2025): per tensor, the positive and the negative
/// entries of a task vector τ are thresholded separately and only the largest magnitudes of each sign are kept.
///
/// With drop ratio α, among the n⁺ positive entries the k⁺ = ⌊(1−α)·n⁺⌋ largest are kept, and among the n⁻ negative
/// entries the k⁻ = ⌊(1−α)·n⁻⌋ largest by |τ|. The floor is taken of the IEEE double product `(1.0 − α) · n`, which
/// is what the official code's `int(len * (1 - k))` computes (so α = 0.9 and n = 10 keep 0, not 1, exactly as
/// there). Selection is exact (quickselect, no histogram).
///
/// **Ties at the threshold.** The official code keeps every entry `>= threshold`, so when several entries equal the
/// k-th largest value it keeps more than k. That makes the count depend on value collisions, which are common in
/// task vectors of BF16/F16 fine-tunes. The default rule here, `.lowestIndex`, keeps exactly k: all entries strictly
/// above the threshold, then the tied entries in increasing flat (row-major) index until k are kept. `.keepAllTied`
/// reproduces the official code. Both are deterministic and both are checked against NumPy.
///
/// **k = 0.** The official code skips thresholding (keeps *all* entries of that sign, with a warning) when k rounds
/// to 0. Here k = 0 keeps none, as the formula says; this only matters for tiny tensors at high α.
///
/// **λ** is the root mean square of the kept entries, ‖S_A⊙τ‖₂ / ‖S_A⊙S_P‖₂, summed in Double with Neumaier
/// compensation (≈ the correctly rounded sum), square-rooted in Double and rounded once to Float.
public enum PDiscard {
    /// What to do with entries equal to the threshold.
    public enum TieRule: String, Sendable, CaseIterable, Codable {
        /// Exactly k kept per sign: tied entries are taken in increasing flat index.
        case lowestIndex = "lowest-index"
        /// Every entry `>= threshold` is kept, as the official code does (may keep more than k).
        case keepAllTied = "keep-all-tied"
    }

    /// The kept entries of one tensor: flat indices (row-major, ascending) of kept positive and negative entries, and
    /// the scale λ.
    public struct Result: Sendable, Equatable {
        public var elementCount: Int
        public var positive: [UInt32]
        public var negative: [UInt32]
        public var lambda: Float
        /// Positive and negative non-zero entries of τ before discarding.
        public var positiveCount: Int
        public var negativeCount: Int

        public init(
            elementCount: Int, positive: [UInt32], negative: [UInt32], lambda: Float, positiveCount: Int,
            negativeCount: Int
        ) {
            self.elementCount = elementCount
            self.positive = positive
            self.negative = negative
            self.lambda = lambda
            self.positiveCount = positiveCount
            self.negativeCount = negativeCount
        }

        public var keptCount: Int { positive.count + negative.count }
        /// Kept entries per entry of the tensor.
        public var density: Double { elementCount == 0 ? 0 : Double(keptCount) / Double(elementCount) }
    }

    /// Why a tensor cannot be P-Discarded.
    public enum Failure: Error, Equatable, Sendable {
        /// τ holds a NaN or an infinity at this flat index.
        case nonFinite(index: Int)
        /// More than 2³² elements: flat indices are stored as UInt32.
        case tooLarge(count: Int)
    }

    /// ⌊(1−α)·n⌋ evaluated as the official code does (`int(n * (1 - alpha))` on IEEE doubles).
    @inlinable
    public static func keepCount(_ n: Int, dropRatio alpha: Double) -> Int {
        precondition(alpha >= 0 && alpha <= 1, "drop ratio out of range")
        return Int((Double(n) * (1.0 - alpha)).rounded(.down))
    }

    /// Runs P-Discard on the task vector `tau`.
    ///
    /// - Returns: nil when τ is all zero (the method skips such tensors).
    /// - Throws: `Failure.nonFinite` when τ holds NaN or ±∞.
    /// - Complexity: O(n) expected; one scratch buffer of max(n⁺, n⁻) floats.
    public static func run(
        _ tau: UnsafeBufferPointer<Float>, dropRatio alpha: Double, ties: TieRule = .lowestIndex
    ) throws(Failure) -> Result? {
        let n = tau.count
        guard n <= Int(UInt32.max) else { throw .tooLarge(count: n) }
        var nPos = 0
        var nNeg = 0
        for i in 0..<n {
            let v = tau[i]
            if v > 0 {
                nPos += 1
            } else if v < 0 {
                nNeg += 1
            } else if v.isNaN {
                throw .nonFinite(index: i)
            }
            if v.isInfinite { throw .nonFinite(index: i) }
        }
        if nPos == 0 && nNeg == 0 { return nil }
        let kPos = keepCount(nPos, dropRatio: alpha)
        let kNeg = keepCount(nNeg, dropRatio: alpha)
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, max(nPos, nNeg)))
        defer { scratch.deallocate() }

        // Threshold and the number of tied entries to admit, per sign. A quota of Int.max admits every tie.
        func threshold(positive: Bool, count: Int, keep: Int) -> (Float, Int) {
            if keep == 0 { return (.infinity, 0) }
            var j = 0
            for i in 0..<n {
                let v = tau[i]
                if positive ? v > 0 : v < 0 {
                    scratch[j] = Swift.abs(v)
                    j += 1
                }
            }
            let part = UnsafeMutableBufferPointer(rebasing: scratch[0..<count])
            let t = Selection.partitionLargest(part, k: keep)
            if ties == .keepAllTied { return (t, Int.max) }
            var above = 0
            for i in 0..<keep where part[i] > t { above += 1 }
            return (t, keep - above)
        }
        let (tPos, quotaPosStart) = threshold(positive: true, count: nPos, keep: kPos)
        let (tNeg, quotaNegStart) = threshold(positive: false, count: nNeg, keep: kNeg)
        var quotaPos = quotaPosStart
        var quotaNeg = quotaNegStart

        var positive: [UInt32] = []
        var negative: [UInt32] = []
        positive.reserveCapacity(kPos)
        negative.reserveCapacity(kNeg)
        var sum = 0.0
        var compensation = 0.0
        @inline(__always) func accumulate(_ v: Float) {
            let x = Double(v) * Double(v)  // exact: a Float square fits a Double
            let t = sum + x
            if Swift.abs(sum) >= x { compensation += (sum - t) + x } else { compensation += (x - t) + sum }
            sum = t
        }
        for i in 0..<n {
            let v = tau[i]
            if v > 0 {
                if v > tPos || (v == tPos && quotaPos > 0) {
                    if v == tPos { quotaPos -= 1 }
                    positive.append(UInt32(i))
                    accumulate(v)
                }
            } else if v < 0 {
                let m = -v
                if m > tNeg || (m == tNeg && quotaNeg > 0) {
                    if m == tNeg { quotaNeg -= 1 }
                    negative.append(UInt32(i))
                    accumulate(v)
                }
            }
        }
        let kept = positive.count + negative.count
        let lambda = kept == 0 ? 0 : Float(((sum + compensation) / Double(kept)).squareRoot())
        return Result(
            elementCount: n, positive: positive, negative: negative, lambda: lambda, positiveCount: nPos,
            negativeCount: nNeg)
    }
}
