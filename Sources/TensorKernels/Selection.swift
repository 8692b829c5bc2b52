import CheckpointIO

/// Exact order statistics over `Float` buffers: the threshold of "the k largest" that magnitude pruning
/// (TIES, P-Discard, breadcrumbs) needs, in O(n) expected time instead of a sort.
public enum Selection {
    /// Rearranges `values` so that `values[0..<k]` holds the k largest elements (unordered) and returns the k-th
    /// largest. NaN counts as smaller than every number. Requires `1 <= k <= values.count`.
    ///
    /// Three-way quickselect (median-of-three pivot): the equal band absorbs ties, which task vectors have in
    /// bulk (frozen or untouched entries are exactly zero), so it stays linear there.
    /// - Complexity: O(n) expected.
    @discardableResult
    public static func partitionLargest(_ values: UnsafeMutableBufferPointer<Float>, k: Int) -> Float {
        precondition(k >= 1 && k <= values.count, "k out of range")
        var lo = 0
        var hi = values.count  // working range [lo, hi); the answer index k-1 lies inside it
        let target = k - 1
        while hi - lo > 16 {
            let pivot = medianOfThree(values[lo], values[lo + (hi - lo) / 2], values[hi - 1])
            // Partition into [lo, gt) > pivot, [gt, lt) == pivot, [lt, hi) < pivot or NaN.
            var gt = lo
            var i = lo
            var lt = hi
            while i < lt {
                let x = values[i]
                if x > pivot {
                    values.swapAt(i, gt)
                    gt += 1
                    i += 1
                } else if x == pivot {
                    i += 1
                } else {
                    lt -= 1
                    values.swapAt(i, lt)
                }
            }
            if target < gt {
                hi = gt
            } else if target < lt {
                return pivot
            } else {
                lo = lt
            }
        }
        // Small range: insertion sort descending (NaN last).
        if lo < hi {
            for i in (lo + 1)..<hi {
                let x = values[i]
                var j = i
                while j > lo, greater(x, values[j - 1]) {
                    values[j] = values[j - 1]
                    j -= 1
                }
                values[j] = x
            }
        }
        return values[target]
    }

    @inline(__always)
    private static func greater(_ a: Float, _ b: Float) -> Bool { a > b || (b.isNaN && !a.isNaN) }

    @inline(__always)
    private static func medianOfThree(_ a: Float, _ b: Float, _ c: Float) -> Float {
        if a.isNaN || b.isNaN || c.isNaN {
            // Any number is a valid pivot; prefer one that is not NaN so the > band can make progress.
            return !a.isNaN ? a : (!b.isNaN ? b : c)
        }
        if a < b { return b < c ? b : (a < c ? c : a) }
        return a < c ? a : (b < c ? c : b)
    }

    /// The k-th largest |x| (1-based), computed on a scratch copy; `x` is not modified.
    public static func kthLargestMagnitude(_ x: UnsafeBufferPointer<Float>, k: Int) -> Float {
        precondition(k >= 1 && k <= x.count, "k out of range")
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: x.count)
        defer { scratch.deallocate() }
        Elementwise.abs(x, into: scratch)
        return partitionLargest(scratch, k: k)
    }
}
