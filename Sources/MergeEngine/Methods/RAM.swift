import CheckpointIO
import TensorKernels

/// RAM (Reinforced Agent Merging): entries changed (|τ| > ε) by one model only are summed, entries changed by
/// several are averaged over those models.
public enum RAMMerge: MergeMethod {
    public static let name = "ram"
    public static let basePolicy = BasePolicy.required
    public static let summary = "RAM: sum unique changes, average shared ones"
    public static let parameters: [ParameterSpec] = [.number("epsilon", default: 1e-5)]

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        RAMCore.merge(c, into: out, r: 0, alpha: 0, plus: false)
    }
}

/// RAM+ (tensor-local): unique changes of model i are amplified by 1 + r · clamp(shared_i / unique_i, 0, α).
public enum RAMPlusTLMerge: MergeMethod {
    public static let name = "ramplus_tl"
    public static let basePolicy = BasePolicy.required
    public static let summary = "RAM+ with a tensor-local rescale of unique changes"
    public static let parameters: [ParameterSpec] = [
        .number("r", default: 0.1), .number("alpha", default: 0.2), .number("epsilon", default: 1e-5),
    ]

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        RAMCore.merge(c, into: out, r: c.number("r"), alpha: c.number("alpha"), plus: true)
    }
}

enum RAMCore {
    static func merge(
        _ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>, r: Double, alpha: Double, plus: Bool
    ) {
        guard let base = c.base else { return }
        let models = c.nonBase.map(\.values)
        let n = c.elementCount
        let eps = Float(c.number("epsilon"))
        // Per element: how many models change it.
        var counts = [UInt8](repeating: 0, count: n)
        for x in models { for i in 0..<n where abs(x[i] - base.values[i]) > eps { counts[i] &+= 1 } }
        var lambdas = [Float](repeating: 1, count: models.count)
        if plus {
            for (k, x) in models.enumerated() {
                var shared = 0.0
                var unique = 0.0
                for i in 0..<n where abs(x[i] - base.values[i]) > eps {
                    if counts[i] > 1 { shared += 1 } else { unique += 1 }
                }
                let rho = shared / max(unique, Double(eps))
                lambdas[k] = Float(1 + r * min(alpha, max(0, rho)))
            }
        }
        for i in 0..<n {
            var merged: Float = 0
            let cnt = counts[i]
            for (k, x) in models.enumerated() {
                let d = x[i] - base.values[i]
                guard abs(d) > eps else { continue }
                merged += cnt == 1 ? d * lambdas[k] : d / Float(cnt)
            }
            out[i] = base.values[i] + merged
        }
    }
}
