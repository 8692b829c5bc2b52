import CheckpointIO
import Foundation
import TensorKernels

/// Spherical interpolation between the base (t = 0) and one other model (t = 1), over the whole flattened tensor;
/// nearly parallel tensors (|cos| > 0.9995) are interpolated linearly.
public enum SlerpMerge: MergeMethod {
    public static let name = "slerp"
    public static let basePolicy = BasePolicy.required
    public static let summary = "spherical interpolation between two models"
    public static let parameters: [ParameterSpec] = [.number("t")]
    public static let nonBaseCount = 1...1

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        guard let base = c.base, let other = c.nonBase.first else { return }
        let (ca, cb) = coefficients(t: c.number("t"), base.values, other.values)
        VectorMath.combine(ca, base.values, cb, other.values, into: out)
    }

    /// mergekit's `slerp`: norms ≤ 1e-8 count as 1; the dot of the normalised vectors is clamped to [−1, 1].
    static func coefficients(t: Double, _ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> (
        Float, Float
    ) {
        var na = VectorMath.norm(a)
        var nb = VectorMath.norm(b)
        if !(na > 1e-8) { na = 1 }
        if !(nb > 1e-8) { nb = 1 }
        let dot = min(1, max(-1, VectorMath.dot(a, b) / (na * nb)))
        if abs(dot) > 0.9995 { return (Float(1 - t), Float(t)) }
        let theta = acos(dot)
        let s = sin(theta)
        return (Float(sin((1 - t) * theta) / s), Float(sin(t * theta) / s))
    }
}

/// NuSLERP: SLERP with t = w₁ / (w₀ + w₁) between two models, on their task vectors when a base is given; per row
/// (`nuslerp_flatten: false`), per column (`nuslerp_row_wise: true`) or over the flattened tensor (default).
public enum NuSlerpMerge: MergeMethod {
    public static let name = "nuslerp"
    public static let basePolicy = BasePolicy.optional
    public static let summary = "SLERP by relative weights, on task vectors when a base is given"
    public static let parameters: [ParameterSpec] = [
        .number("weight", scope: .nonBase), .bool("nuslerp_row_wise", default: false),
        .bool("nuslerp_flatten", default: true),
    ]
    public static let nonBaseCount = 2...2

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        let models = c.nonBase
        let w0 = models[0].number("weight")
        let w1 = models[1].number("weight")
        let total = w0 + w1
        let t = abs(total) < 1e-6 ? 0.5 : w1 / total
        let n = c.elementCount
        let shape = c.shape.isEmpty ? [1] : c.shape
        if c.bool("nuslerp_flatten") || shape.count == 1 {
            // The whole tensor is one vector: one pass for the task vectors' Gram matrix, one for the output,
            // no copies.
            let g = VectorMath.gram([models[0].values, models[1].values], minus: c.base?.values)
            let (ca, cb) = coefficients(t: t, g[0], g[3], g[1])
            if let base = c.base {
                // ca·(v₀ − b) + cb·(v₁ − b) + b
                VectorMath.linearCombination(
                    [ca, cb, 1 - ca - cb], [models[0].values, models[1].values, base.values], into: out)
            } else {
                VectorMath.linearCombination([ca, cb], [models[0].values, models[1].values], into: out)
            }
            return
        }
        var v0 = [Float](models[0].values)
        var v1 = [Float](models[1].values)
        if let base = c.base {
            for i in 0..<n {
                v0[i] -= base.values[i]
                v1[i] -= base.values[i]
            }
        }
        // Vectors: rows (last axis), or slices along axis 0 (row-wise), as mergekit transposes.
        let alongFirst = c.bool("nuslerp_row_wise") && shape.count > 1
        let length: Int
        let stride: Int
        let vectors: Int
        if alongFirst {
            (length, stride, vectors) = (shape[0], n / max(1, shape[0]), n / max(1, shape[0]))
        } else {
            (length, stride, vectors) = (shape[shape.count - 1], 1, n / max(1, shape[shape.count - 1]))
        }
        for v in 0..<vectors {
            let start = alongFirst ? v : v * length
            var d0 = 0.0, d1 = 0.0, d01 = 0.0
            for k in 0..<length {
                let i = start + k * stride
                let a = Double(v0[i]), b = Double(v1[i])
                d0 += a * a
                d1 += b * b
                d01 += a * b
            }
            let (ca, cb) = coefficients(t: t, d0, d1, d01)
            for k in 0..<length {
                let i = start + k * stride
                out[i] = ca * v0[i] + cb * v1[i] + (c.base?.values[i] ?? 0)
            }
        }
    }

    /// mergekit's `nuslerp` coefficients from the squared norms and the dot of the two vectors: norms floored at
    /// 1e-7, linear interpolation when (nearly) colinear.
    static func coefficients(t: Double, _ d0: Double, _ d1: Double, _ d01: Double) -> (Float, Float) {
        let n0 = max(d0.squareRoot(), 1e-7)
        let n1 = max(d1.squareRoot(), 1e-7)
        let cos = min(1, max(-1, d01 / (n0 * n1)))
        let colinear = (1 - cos * cos) <= 1e-16
        let theta = acos(colinear ? 0 : cos)
        let s = sin(theta)
        return colinear ? (Float(1 - t), Float(t)) : (Float(sin((1 - t) * theta) / s), Float(sin(t * theta) / s))
    }
}

/// Barycentric SLERP of any number of models (tangent-space average at their normalised weighted mean).
public enum MultiSlerpMerge: MergeMethod {
    public static let name = "multislerp"
    public static let basePolicy = BasePolicy.optional
    public static let summary = "barycentric spherical interpolation of several models"
    public static let parameters: [ParameterSpec] = [
        .number("weight", scope: .nonBase), .bool("normalize_weights", default: true), .number("eps", default: 1e-8),
    ]

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        let models = c.nonBase
        let n = c.elementCount
        if models.count == 1 {
            _ = out.initialize(fromContentsOf: models[0].values)
            return
        }
        let eps = c.number("eps")
        var weights = models.map { $0.number("weight") }
        if c.bool("normalize_weights") {
            let s = weights.reduce(0, +)
            weights = weights.map { $0 / s }
        }
        var tv: [[Float]] = models.map { [Float]($0.values) }
        if let base = c.base {
            for m in 0..<tv.count { for i in 0..<n { tv[m][i] -= base.values[i] } }
        }
        let norms = tv.map { t in t.withUnsafeBufferPointer { VectorMath.norm($0) } }
        // unit vectors
        let units: [[Double]] = (0..<tv.count).map { m in tv[m].map { Double($0) / (norms[m] + eps) } }
        var mean = [Double](repeating: 0, count: n)
        for m in 0..<units.count { for i in 0..<n { mean[i] += units[m][i] * weights[m] } }
        let meanNorm = mean.reduce(0) { $0 + $1 * $1 }.squareRoot()
        if meanNorm < eps {
            guard tv.count == 2 else {
                throw MergeError(
                    .numerical,
                    "tensor '\(c.tensorName)': the weighted sum of the task vectors is zero (antipodal inputs with balancing weights); multislerp cannot interpolate them."
                )
            }
            for i in 0..<n {
                out[i] = Float(Double(tv[0][i]) * weights[0] + Double(tv[1][i]) * weights[1]) + (c.base?.values[i] ?? 0)
            }
            return
        }
        for i in 0..<n { mean[i] /= meanNorm }
        var tangent = [Double](repeating: 0, count: n)
        for m in 0..<units.count {
            var dot = 0.0
            for i in 0..<n { dot += units[m][i] * mean[i] }
            for i in 0..<n { tangent[i] += (units[m][i] - dot * mean[i]) * weights[m] }
        }
        let tn = tangent.reduce(0) { $0 + $1 * $1 }.squareRoot() + eps
        var avgNorm = 0.0
        for m in 0..<norms.count { avgNorm += norms[m] * weights[m] }
        let cosT = cos(tn)
        let sinT = sin(tn) / tn
        for i in 0..<n {
            out[i] = Float((mean[i] * cosT + tangent[i] * sinT) * avgNorm) + (c.base?.values[i] ?? 0)
        }
    }
}

/// The Riemannian (Karcher) mean of the models' directions on the unit sphere, scaled by their mean norm.
public enum KarcherMerge: MergeMethod {
    public static let name = "karcher"
    public static let basePolicy = BasePolicy.ignored
    public static let summary = "Riemannian (Karcher) mean on the hypersphere"
    public static let parameters: [ParameterSpec] = [.number("max_iter", default: 10), .number("tol", default: 1e-5)]

    public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
        let xs = c.inputs
        let n = c.elementCount
        if xs.count == 1 {
            _ = out.initialize(fromContentsOf: xs[0].values)
            return
        }
        let tol = c.number("tol")
        let maxIter = Int(c.number("max_iter"))
        let alphas = [Double](repeating: 1 / Double(xs.count), count: xs.count)
        let norms = xs.map { VectorMath.norm($0.values) }
        let valid = xs.indices.filter { norms[$0] > tol }
        guard !valid.isEmpty else {
            for i in 0..<n { out[i] = 0 }
            return
        }
        let alphaSum = valid.reduce(0.0) { $0 + alphas[$1] }
        let a = valid.map { alphas[$0] / alphaSum }
        // The unit vectors xₖ/‖xₖ‖ are never materialised: every pass scales the inputs on the fly, and the mean
        // lives in `out`, so memory is one tensor of scratch (the tangent) whatever the model count.
        let x = valid.map { xs[$0].values }
        let inv = valid.map { 1 / norms[$0] }
        let mean = UnsafeBufferPointer(out)
        let mn = VectorMath.linearCombination(zip(a, inv).map { Float($0 * $1) }, x, into: out).squareRoot()
        if mn < tol {
            VectorMath.linearCombination([Float(inv[0])], [x[0]], into: out)
        } else {
            VectorMath.linearCombination([Float(1 / mn)], [mean], into: out)
        }
        var tangent = [Float](repeating: 0, count: n)
        tangent.withUnsafeMutableBufferPointer { t in
            for _ in 0..<maxIter {
                let dots = VectorMath.dots(mean, x)
                // tangent = Σ fⱼ·(uⱼ − cosθⱼ·mean), uⱼ = xⱼ/‖xⱼ‖, fⱼ = aⱼ·θⱼ/sin θⱼ.
                var coefficients: [Float] = []
                var vectors: [UnsafeBufferPointer<Float>] = []
                var meanCoefficient = 0.0
                for j in x.indices {
                    let dot = min(1, max(-1, dots[j] * inv[j]))
                    let theta = acos(dot)
                    if theta < tol { continue }
                    let f = a[j] * theta / sin(theta)
                    coefficients.append(Float(f * inv[j]))
                    vectors.append(x[j])
                    meanCoefficient -= f * dot
                }
                guard !vectors.isEmpty else { break }
                let tn = VectorMath.linearCombination(
                    coefficients + [Float(meanCoefficient)], vectors + [mean], into: t
                ).squareRoot()
                if tn < tol { break }
                let un = VectorMath.linearCombination(
                    [Float(cos(tn)), Float(sin(tn) / tn)], [mean, UnsafeBufferPointer(t)], into: out
                ).squareRoot()
                if un > tol { VectorMath.linearCombination([Float(1 / un)], [mean], into: out) }
            }
        }
        var scale = 0.0
        for k in xs.indices { scale += alphas[k] * norms[k] }
        VectorMath.linearCombination([Float(scale)], [mean], into: out)
    }
}
