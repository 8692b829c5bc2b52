import CheckpointIO
import TensorKernels

// Task-switch style methods (Qi et al. 2025 and the neighbours it compares with): T-Switch, EMR-Merging and
// TALL masks, as one-output merge methods.
// Each works per tensor on task vectors τ_k = x_k − base. EMR and TALL produce one model *per task*; here the
// per-model `weight` selects (weight 1 on one model, 0 on the others) or mixes those task-specific models.

/// θ + Σ_k w_k λ_k S_A^k ⊙ S_P^k: each τ_k is P-Discarded per sign with drop ratio `drop` (exact selection, ties at
/// the threshold kept in increasing index), binarized to its sign and scaled by λ_k = RMS of the kept entries.
public enum TSwitchMerge: MergeMethod {
    public static let name = "t_switch"
    public static let basePolicy = BasePolicy.required
    public static let summary = "T-Switch: P-Discard per sign, sign bits and one RMS scale per tensor (Qi et al. 2025)"
    public static let parameters: [ParameterSpec] = [
        .number("weight", scope: .nonBase, default: 1), .number("drop", scope: .nonBase, default: 0.7),
    ]

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        guard let base = c.base else { throw MergeError(.invalidInputs, "t_switch needs a base_model.") }
        _ = out.initialize(fromContentsOf: base.values)
        let tau = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, out.count))
        defer { tau.deallocate() }
        let t = UnsafeMutableBufferPointer(rebasing: tau[0..<out.count])
        for m in c.nonBase {
            let alpha = m.number("drop")
            guard alpha >= 0, alpha < 1 else {
                throw MergeError(
                    .invalidInputs,
                    "t_switch: drop for \(m.model) must be in [0, 1); got \(alpha) (tensor '\(c.tensorName)').")
            }
            Elementwise.subtract(m.values, base.values, into: t)
            let result: PDiscard.Result?
            do {
                result = try PDiscard.run(UnsafeBufferPointer(t), dropRatio: alpha)
            } catch {
                throw MergeError(
                    .numerical,
                    "t_switch: tensor '\(c.tensorName)' of \(m.model) minus the base is NaN or infinite (\(error)).")
            }
            guard let r = result else { continue }
            let s = Float(m.number("weight")) * r.lambda
            // The loop every switch is applied with (TensorKernels), so this matches `tswitch apply` bit for bit.
            SwitchKernel.addSigns(s, positive: r.positive, negative: r.negative, to: out)
        }
    }
}

/// EMR-Merging (Huang et al. 2024): σ = sign(Σ τ_k); τ_uni = σ ⊙ max over tasks agreeing with σ of |τ_k|;
/// M_k = [τ_k ⊙ σ > 0]; λ_k = Σ|τ_k| / Σ|M_k ⊙ τ_uni| (per tensor here); output θ + Σ_k w_k λ_k M_k ⊙ τ_uni.
public enum EMRMerge: MergeMethod {
    public static let name = "emr"
    public static let basePolicy = BasePolicy.required
    public static let summary =
        "EMR-Merging: unified task vector with per-task masks and rescalers (weight selects tasks)"
    public static let parameters: [ParameterSpec] = [.number("weight", scope: .nonBase, default: 1)]

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        guard let base = c.base else { throw MergeError(.invalidInputs, "emr needs a base_model.") }
        let n = out.count
        let models = c.nonBase
        // σ and τ_uni.
        var uni = [Float](repeating: 0, count: n)
        for i in 0..<n {
            var sum: Float = 0
            for m in models { sum += m.values[i] - base.values[i] }
            var best: Float = 0
            for m in models {
                let t = m.values[i] - base.values[i]
                if t * sum > 0 { best = max(best, abs(t)) }
            }
            uni[i] = sum > 0 ? best : (sum < 0 ? -best : 0)
        }
        guard uni.allSatisfy(\.isFinite) else {
            throw MergeError(.numerical, "emr: tensor '\(c.tensorName)' has NaN or infinite task-vector entries.")
        }
        _ = out.initialize(fromContentsOf: base.values)
        for m in models {
            var mass = 0.0
            var maskedUni = 0.0
            for i in 0..<n {
                let t = m.values[i] - base.values[i]
                mass += Double(abs(t))
                if t * uni[i] > 0 { maskedUni += Double(abs(uni[i])) }
            }
            guard maskedUni > 0 else { continue }
            let s = Float(m.number("weight") * mass / maskedUni)
            for i in 0..<n {
                let t = m.values[i] - base.values[i]
                if t * uni[i] > 0 { out[i] += s * uni[i] }
            }
        }
    }
}

/// TALL masks (Wang et al. 2024): τ_MTL = Σ_k τ_k; m_k = [|τ_k| ≥ λ_k |τ_MTL − τ_k|]; task k's model is
/// θ + m_k ⊙ τ_MTL. Output θ + (Σ_k w_k m_k) ⊙ τ_MTL; with `consensus` c ≥ 1, Consensus Merging instead:
/// θ + [Σ_k m_k ≥ c] ⊙ τ_MTL.
public enum TallMasksMerge: MergeMethod {
    public static let name = "tall_masks"
    public static let basePolicy = BasePolicy.required
    public static let summary = "TALL masks: per-task masks over the summed task vector, or their consensus"
    public static let parameters: [ParameterSpec] = [
        .number("weight", scope: .nonBase, default: 1), .number("lambda", scope: .nonBase, default: 0.4),
        .number("consensus", default: 0),
    ]

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        guard let base = c.base else { throw MergeError(.invalidInputs, "tall_masks needs a base_model.") }
        let n = out.count
        let models = c.nonBase
        let consensus = Int(c.number("consensus"))
        var mtl = [Float](repeating: 0, count: n)
        for m in models { for i in 0..<n { mtl[i] += m.values[i] - base.values[i] } }
        guard mtl.allSatisfy(\.isFinite) else {
            throw MergeError(
                .numerical, "tall_masks: tensor '\(c.tensorName)' has NaN or infinite task-vector entries.")
        }
        var coefficient = [Float](repeating: 0, count: n)
        for m in models {
            let lambda = Float(m.number("lambda"))
            let w = consensus > 0 ? 1 : Float(m.number("weight"))
            for i in 0..<n {
                let t = m.values[i] - base.values[i]
                if abs(t) >= lambda * abs(mtl[i] - t) { coefficient[i] += w }
            }
        }
        for i in 0..<n {
            let k = consensus > 0 ? (coefficient[i] >= Float(consensus) ? 1 : 0) : coefficient[i]
            out[i] = base.values[i] + k * mtl[i]
        }
    }
}
