import CheckpointIO
import TensorKernels

/// SCE (Wan et al. 2024): Select the entries whose task vectors vary most across models (`select_topk`),
/// Calculate matrix-level weights ∝ mean square, Erase minority signs, then a weighted mean.
public enum SCEMerge: MergeMethod {
    public static let name = "sce"
    public static let basePolicy = BasePolicy.required
    public static let summary = "SCE: select high-variance entries, mean-square weights, erase minority signs"
    public static let parameters: [ParameterSpec] = [
        .bool("int8_mask", default: false), .number("select_topk", default: 1),
    ]

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        guard let base = c.base?.values else { return }
        let n = c.elementCount
        let m = c.nonBase.count
        guard m > 0, n > 0 else { return }
        // Task vectors are formed on the fly (xₖ − b, in f32 as before) in every pass instead of being copied, and
        // every per-element loop runs in chunks across cores; per element the arithmetic is the old order's.
        let x = c.nonBase.map(\.values)
        let topk = c.number("select_topk")
        var keep = [Bool](repeating: true, count: n)
        if topk < 1 {
            keep = [Bool](repeating: false, count: n)
            if topk > 0 {
                var variance = [Float](repeating: 0, count: n)
                variance.withUnsafeMutableBufferPointer { vb in
                    let shared = UncheckedSendable((vb, x, base))
                    Parallel.forEachChunk(n) { r in
                        let (vb, x, base) = shared.value
                        var d = [Float](repeating: 0, count: m)
                        for i in r {
                            var mean: Float = 0
                            for k in 0..<m {
                                d[k] = x[k][i] - base[i]
                                mean += d[k]
                            }
                            mean /= Float(m)
                            var v: Float = 0
                            for k in 0..<m { v += (d[k] - mean) * (d[k] - mean) }
                            vb[i] = v / Float(m)
                        }
                    }
                }
                let nonzero = variance.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
                keep = topKMask(variance, k: Int(Double(nonzero) * topk))
            }
        }
        // Matrix-level weights: mean square of each (selected) task vector, normalised to sum 1.
        var weights = keep.withUnsafeBufferPointer { kb in
            x.map { xk in
                chunkedSum(n) { r in
                    var s = 0.0
                    for i in r where kb[i] {
                        let d = Double(xk[i] - base[i])
                        s += d * d
                    }
                    return s
                } / Double(n)
            }
        }
        let sum = weights.reduce(0, +)
        weights = abs(sum) < 1e-6 ? weights.map { _ in 1 / Double(m) } : weights.map { $0 / sum }
        let w = weights.map { Float($0) }
        keep.withUnsafeBufferPointer { kb in
            let shared = UncheckedSendable((kb, x, base, out))
            Parallel.forEachChunk(n) { r in
                let (kb, x, base, out) = shared.value
                var d = [Float](repeating: 0, count: m)
                for i in r {
                    var s: Float = 0
                    for k in 0..<m {
                        d[k] = kb[i] ? x[k][i] - base[i] : 0
                        s += d[k]
                    }
                    let positive = s >= 0
                    var mixed: Float = 0
                    var div: Float = 0
                    for k in 0..<m where positive ? d[k] > 0 : d[k] < 0 {
                        mixed += d[k] * w[k]
                        div += w[k]
                    }
                    out[i] = base[i] + mixed / max(div, 1e-6)
                }
            }
        }
    }

    /// Σ of `part` over chunks of `0..<n` run across cores, added in chunk order.
    private static func chunkedSum(_ n: Int, _ part: (Range<Int>) -> Double) -> Double {
        let chunks = max(1, min(Parallel.coreCount * 4, n / (1 << 16)))
        let per = (n + chunks - 1) / chunks
        var partial = [Double](repeating: 0, count: chunks)
        partial.withUnsafeMutableBufferPointer { pb in
            let shared = UncheckedSendable(pb)
            Parallel.forEachChunk(chunks, minChunk: 1) { cr in
                for c in cr { shared.value[c] = part((c * per)..<min(n, c * per + per)) }
            }
        }
        return partial.reduce(0, +)
    }

    /// The k largest values, ties at the threshold kept in index order (exactly k kept).
    static func topKMask(_ values: [Float], k: Int) -> [Bool] {
        guard k > 0 else { return [Bool](repeating: false, count: values.count) }
        var scratch = values
        let threshold = scratch.withUnsafeMutableBufferPointer { Selection.partitionLargest($0, k: k) }
        var quota = k - values.reduce(0) { $0 + ($1 > threshold ? 1 : 0) }
        return values.map { v in
            if v > threshold { return true }
            if v == threshold, quota > 0 {
                quota -= 1
                return true
            }
            return false
        }
    }
}
