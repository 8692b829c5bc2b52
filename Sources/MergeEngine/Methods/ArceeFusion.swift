import CheckpointIO
import Foundation
import TensorKernels

/// Arcee Fusion: importance = |x − base| × KL(softmax(x) ‖ softmax(base)) per row (a property of the weights, no
/// forward pass); entries with importance ≥ median + 1.5 · IQR take the fine-tune's value.
public enum ArceeFusionMerge: MergeMethod {
    public static let name = "arcee_fusion"
    public static let basePolicy = BasePolicy.required
    public static let summary = "Arcee Fusion: keep the fine-tune where |Δ| × row KL is an outlier"
    public static let parameters: [ParameterSpec] = []
    public static let nonBaseCount = 1...1

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        guard let base = c.base, let other = c.nonBase.first else { return }
        let n = c.elementCount
        let cols = c.shape.last ?? n
        let rows = cols == 0 ? 0 : n / cols
        var importance = [Float](repeating: 0, count: n)
        for r in 0..<rows {
            let lo = r * cols
            let hi = lo + cols
            let p = softmax(other.values, lo, hi)
            let q = softmax(base.values, lo, hi)
            // KL in Double: for near-identical rows its terms cancel to ~1e-7, below f32 resolution (docs/merge.md).
            var kl = 0.0
            for j in 0..<cols {
                let pj = p[j] + 1e-8
                let qj = q[j] + 1e-8
                kl += pj * Foundation.log(pj / qj)
            }
            for i in lo..<hi { importance[i] = Float(Double(abs(other.values[i] - base.values[i])) * kl) }
        }
        // Exact quantiles (mergekit samples 10⁶ entries of larger tensors; see docs/merge.md).
        let sorted = importance.sorted()
        func quantile(_ q: Float) -> Float { sorted.isEmpty ? 0 : sorted[Int(q * Float(sorted.count - 1))] }
        let threshold = quantile(0.5) + 1.5 * (quantile(0.75) - quantile(0.25))
        for i in 0..<n {
            let keep: Float = importance[i] >= threshold ? 1 : 0
            out[i] = base.values[i] + (other.values[i] - base.values[i]) * keep
        }
    }

    static func softmax(_ x: UnsafeBufferPointer<Float>, _ lo: Int, _ hi: Int) -> [Double] {
        var mx = -Float.infinity
        for i in lo..<hi { mx = max(mx, x[i]) }
        var e = (lo..<hi).map { Foundation.exp(Double(x[$0] - mx)) }
        let s = e.reduce(0, +)
        for j in e.indices { e[j] /= s }
        return e
    }
}
