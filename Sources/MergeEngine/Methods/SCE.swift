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
        guard let base = c.base else { return }
        let n = c.elementCount
        let m = c.nonBase.count
        var tv: [[Float]] = c.nonBase.map { x in (0..<n).map { x.values[$0] - base.values[$0] } }
        let topk = c.number("select_topk")
        if topk < 1 {
            var keep = [Bool](repeating: topk > 0, count: n)
            if topk > 0 {
                var variance = [Float](repeating: 0, count: n)
                for i in 0..<n {
                    var mean: Float = 0
                    for k in 0..<m { mean += tv[k][i] }
                    mean /= Float(m)
                    var v: Float = 0
                    for k in 0..<m { v += (tv[k][i] - mean) * (tv[k][i] - mean) }
                    variance[i] = v / Float(m)
                }
                let nonzero = variance.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
                let k = Int(Double(nonzero) * topk)
                keep = topKMask(variance, k: k)
            }
            for k in 0..<m { for i in 0..<n where !keep[i] { tv[k][i] = 0 } }
        }
        // Matrix-level weights: mean square of each (selected) task vector, normalised to sum 1.
        var weights = tv.map { t in t.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(1, n)) }
        let sum = weights.reduce(0, +)
        weights = abs(sum) < 1e-6 ? weights.map { _ in 1 / Double(m) } : weights.map { $0 / sum }
        let w = weights.map { Float($0) }
        for i in 0..<n {
            var s: Float = 0
            for k in 0..<m { s += tv[k][i] }
            let positive = s >= 0
            var mixed: Float = 0
            var div: Float = 0
            for k in 0..<m {
                let v = tv[k][i]
                if positive ? v > 0 : v < 0 {
                    mixed += v * w[k]
                    div += w[k]
                }
            }
            out[i] = base.values[i] + mixed / max(div, 1e-6)
        }
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
