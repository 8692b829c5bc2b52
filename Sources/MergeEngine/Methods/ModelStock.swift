import CheckpointIO
import TensorKernels

/// Model Stock (Jang et al. 2024): interpolate between the base and the average of ≥ 2 fine-tunes by
/// t = N cos θ / (1 + (N − 1) cos θ), θ the mean pairwise angle of the task vectors (per row with `filter_wise`).
public enum ModelStockMerge: MergeMethod {
    public static let name = "model_stock"
    public static let basePolicy = BasePolicy.required
    public static let summary = "Model Stock: base-to-average interpolation from task-vector angles"
    public static let parameters: [ParameterSpec] = [.bool("filter_wise", default: false)]
    public static let nonBaseCount = 2...Int.max

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        guard let base = c.base else { return }
        let ws = c.nonBase.map(\.values)
        let n = c.elementCount
        let filterWise = c.bool("filter_wise")
        let length = filterWise ? (c.shape.last ?? n) : n
        let rows = length == 0 ? 0 : n / length
        let count = Double(ws.count)
        for r in 0..<rows {
            let lo = r * length
            var cosSum = 0.0
            var pairs = 0
            for a in 0..<ws.count {
                for b in (a + 1)..<ws.count {
                    var na = 0.0, nb = 0.0, d = 0.0
                    for i in lo..<(lo + length) {
                        let x = Double(ws[a][i] - base.values[i]), y = Double(ws[b][i] - base.values[i])
                        na += x * x
                        nb += y * y
                        d += x * y
                    }
                    cosSum += min(1, max(-1, d / max(na.squareRoot() * nb.squareRoot(), 1e-6)))
                    pairs += 1
                }
            }
            let cosTheta = cosSum / Double(pairs)
            let denom = 1 + (count - 1) * cosTheta
            let t = abs(denom) < 1e-6 ? 0 : Float(count * cosTheta / denom)
            for i in lo..<(lo + length) {
                var avg: Float = 0
                for w in ws { avg += w[i] }
                avg /= Float(ws.count)
                out[i] = t * avg + (1 - t) * base.values[i]
            }
        }
    }
}

/// NearSwap: take the other model's value where it is within `t` of the base, blending by t / |a − b|.
public enum NearSwapMerge: MergeMethod {
    public static let name = "nearswap"
    public static let basePolicy = BasePolicy.required
    public static let summary = "NearSwap: take the other model where it is close to the base"
    public static let parameters: [ParameterSpec] = [.number("t")]
    public static let nonBaseCount = 1...1

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        guard let base = c.base, let other = c.nonBase.first else { return }
        let t = Float(c.number("t"))
        let a = UncheckedSendable(base.values)
        let b = UncheckedSendable(other.values)
        let o = UncheckedSendable(out)
        Parallel.forEachChunk(out.count) { r in
            for i in r {
                let w = min(1, max(0, t / max(abs(a.value[i] - b.value[i]), 1e-6)))
                o.value[i] = w * b.value[i] + (1 - w) * a.value[i]
            }
        }
    }
}
