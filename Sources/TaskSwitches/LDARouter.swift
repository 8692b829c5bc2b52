import Foundation
import TensorKernels

/// Per-example Auto-Switch by linear discriminants: task prototypes with one shared, shrunk covariance (LDA).
///
/// Fit (closed form, no training loop): c = mean of all rows; μ_k = mean of task k's rows − c; S = pooled
/// within-task covariance (divided by N − T); Σ = (1 − λ)·S + λ·tr(S)/D·I; w_k = Σ⁻¹μ_k; b_k = −½·μ_kᵀw_k.
/// Routing: score_k(x) = w_k·(x − c) + b_k − ½·‖L⁻¹(x − c)‖² = −½·(x − c − μ_k)ᵀΣ⁻¹(x − c − μ_k) + const, with
/// Σ = L·Lᵀ; task = argmax (ties to the lower index; the quadratic term is the same for every task, so it only
/// matters for the OOD check: a linear score alone grows without bound far from every task). An input whose best
/// score is below `oodThreshold` (the 1st percentile of the best score over the fitting rows) is out of
/// distribution and goes to the base model. Measured in `docs/routing.md` (bench/router-study.py); reference: scripts/fixtures/router_lda.py.
public struct LDARouter: Sendable, Equatable {
    public let tasks: [String]
    public let dimension: Int
    /// The centring mean c [D].
    public let centre: [Float]
    /// w_k, row-major [tasks, D].
    public let weights: [Float]
    /// b_k [tasks].
    public let bias: [Float]
    /// Lower Cholesky factor L of Σ, row-major [D, D] (upper triangle zero).
    public let choleskyFactor: [Float]
    /// Shrinkage λ the fit used.
    public let shrinkage: Double
    /// Best score below this: out of distribution (→ base). −∞ disables the check.
    public let oodThreshold: Float
    public let baseFingerprint: BaseFingerprint?
    /// The base-model layers the features are read from (0: the embedding output, L: the last layer), ascending:
    /// each layer's masked mean-pooled hidden states scaled to unit length, concatenated and scaled by 1/√n, so a
    /// feature row has unit length (`dimension` = n × hidden). Empty: the final sentence embedding at unit length,
    /// what every router before layer features read. Measured in docs/routing.md (bench/routing-study.py): layers
    /// 1-6 of MiniLM route 97.5 % of the 8 tasks' test texts (the tune-slice best, `route --build`'s default from
    /// texts), 3-6 97.1 %, the final embedding alone 91.5 %.
    public let layers: [Int]
    /// Lexical evidence added to the LDA score when the caller has the texts (`LexicalModel`); nil: LDA only.
    public let lexical: LexicalModel?
    /// `choleskyFactor` and `weights` widened once, for the batched double-precision solves of `scores`.
    let factor64: [Double]
    let weights64: [Double]

    /// Shrinkage: held-out-train best at 300 texts per task on the 20 tasks (0.01 at ≥ 1,000 per task; docs/routing.md).
    public static let defaultShrinkage = 0.03
    /// Shrinkage of a router on layer features: the held-out-train choice of docs/routing.md's study for every
    /// layer set it tried (1,000 texts per task, 8 tasks).
    public static let defaultLayerShrinkage = 0.01
    /// Percentile of the fitting rows' best score used as the OOD threshold.
    public static let oodPercentile = 1.0

    public init(
        tasks: [String], dimension: Int, centre: [Float], weights: [Float], bias: [Float], choleskyFactor: [Float],
        shrinkage: Double, oodThreshold: Float, baseFingerprint: BaseFingerprint?, layers: [Int] = [],
        lexical: LexicalModel? = nil
    ) {
        precondition(
            centre.count == dimension && weights.count == tasks.count * dimension && bias.count == tasks.count
                && choleskyFactor.count == dimension * dimension)
        precondition(
            Self.validLayers(layers, dimension: dimension), "layers ascending, distinct, ≥ 0, dividing the dimension")
        precondition(lexical.map { $0.tables.count == tasks.count } ?? true, "one lexical table per task")
        self.layers = layers
        self.lexical = lexical
        self.choleskyFactor = choleskyFactor
        self.tasks = tasks
        self.dimension = dimension
        self.centre = centre
        self.weights = weights
        self.bias = bias
        self.shrinkage = shrinkage
        self.oodThreshold = oodThreshold
        self.baseFingerprint = baseFingerprint
        factor64 = choleskyFactor.map(Double.init)
        weights64 = weights.map(Double.init)
    }

    /// Fits the router on labelled features (`labels` index `tasks`). The OOD threshold comes from held-out rows:
    /// every `holdOutEvery`-th row is left out of a first fit, whose best scores on those rows give the threshold
    /// (in-sample scores are optimistic and would send far too many real inputs to the base); the router is then
    /// fitted on all rows. `holdOutEvery` 0 takes the threshold from the fitting rows themselves.
    ///
    /// - Parameter layers: the base layers `set`'s features were read from (see `layers`); recorded, not checked
    ///   beyond dividing the dimension.
    public static func fit(
        _ set: QuerySet, shrinkage: Double = defaultShrinkage, baseFingerprint: BaseFingerprint? = nil,
        holdOutEvery: Int = 5, layers: [Int] = []
    ) throws(SwitchError) -> LDARouter {
        try fitHeldOut(
            set, shrinkage: shrinkage, baseFingerprint: baseFingerprint, holdOutEvery: holdOutEvery, layers: layers
        ).router
    }

    /// `fit`, also returning the held-out rows (indices into `set`) and the first fit's scores on them, which
    /// lexical tuning reuses (empty when nothing was held out).
    static func fitHeldOut(
        _ set: QuerySet, shrinkage: Double, baseFingerprint: BaseFingerprint?, holdOutEvery: Int, layers: [Int]
    ) throws(SwitchError) -> (router: LDARouter, heldRows: [Int], heldScores: [[Float]]) {
        guard validLayers(layers, dimension: set.dimension) else {
            throw SwitchError(
                .invalidArgument,
                "The feature layers \(layers) must be distinct, ascending, ≥ 0 and divide the feature dimension \(set.dimension)."
            )
        }
        let all = try fitAll(set, shrinkage: shrinkage, baseFingerprint: baseFingerprint, layers: layers)
        guard holdOutEvery >= 2, let labels = set.labels, set.count >= holdOutEvery * 2 * set.tasks.count else {
            return (all, [], [])
        }
        var keep: [Float] = []
        var keepLabels: [Int] = []
        var held: [Float] = []
        var heldRows: [Int] = []
        for i in 0..<set.count {
            if i % holdOutEvery == holdOutEvery - 1 {
                held += set.row(i)
                heldRows.append(i)
            } else {
                keep += set.row(i)
                keepLabels.append(labels[i])
            }
        }
        let d = set.dimension
        let part = try fitAll(
            QuerySet(features: keep, count: keepLabels.count, dimension: d, labels: keepLabels, tasks: set.tasks),
            shrinkage: shrinkage, baseFingerprint: baseFingerprint, layers: layers)
        let heldScores = try part.scores(
            QuerySet(features: held, count: held.count / d, dimension: d, labels: nil, tasks: []))
        let best = heldScores.map { $0.max() ?? 0 }.sorted()
        let router = LDARouter(
            tasks: all.tasks, dimension: d, centre: all.centre, weights: all.weights, bias: all.bias,
            choleskyFactor: all.choleskyFactor, shrinkage: shrinkage, oodThreshold: percentile(best, oodPercentile),
            baseFingerprint: baseFingerprint, layers: layers)
        return (router, heldRows, heldScores)
    }

    /// Layer indices written `3-6`, `1,3,6` or both (`1,3-6`): ascending, each once, 0 … 1024; `final` is none
    /// (the final sentence embedding, `layers` empty).
    ///
    /// - Throws: `.invalidArgument` naming the text otherwise.
    public static func layers(parsing text: String) throws(SwitchError) -> [Int] {
        if text == "final" { return [] }
        var out: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            guard (1...2).contains(ends.count), let lo = ends[0], let hi = ends[ends.count - 1], lo >= 0, lo <= hi,
                hi <= 1024
            else {
                throw SwitchError(
                    .invalidArgument, "'\(text)' is not a list of layers like 3-6 or 1,3,6 (0 to 1024), or final.")
            }
            out += Array(lo...hi)
        }
        guard zip(out, out.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw SwitchError(.invalidArgument, "'\(text)' must list each layer once, in ascending order.")
        }
        return out
    }

    /// Whether `layers` can describe features of `dimension`: empty, or distinct ascending indices ≥ 0 whose count
    /// divides the dimension.
    public static func validLayers(_ layers: [Int], dimension: Int) -> Bool {
        guard !layers.isEmpty else { return true }
        return layers[0] >= 0 && zip(layers, layers.dropFirst()).allSatisfy { $0 < $1 } && dimension % layers.count == 0
    }

    static func fitAll(
        _ set: QuerySet, shrinkage: Double, baseFingerprint: BaseFingerprint?, layers: [Int] = []
    ) throws(SwitchError) -> LDARouter {
        guard let labels = set.labels, !set.tasks.isEmpty else {
            throw SwitchError(.invalidQuerySet, "The training features have no labels or task names.")
        }
        guard shrinkage > 0, shrinkage <= 1 else {
            throw SwitchError(.invalidArgument, "The shrinkage λ must be in (0, 1]; got \(shrinkage).")
        }
        let t = set.tasks.count
        let d = set.dimension
        var counts = [Int](repeating: 0, count: t)
        for l in labels { counts[l] += 1 }
        if let empty = counts.firstIndex(of: 0) {
            throw SwitchError(.invalidQuerySet, "Task '\(set.tasks[empty])' has no training rows.")
        }
        guard set.count > t else {
            throw SwitchError(.invalidQuerySet, "LDA needs more rows (\(set.count)) than tasks (\(t)).")
        }
        var grand = [Double](repeating: 0, count: d)
        var mus = [Double](repeating: 0, count: t * d)
        set.features.withUnsafeBufferPointer { f in
            for i in 0..<set.count {
                let l = labels[i]
                for j in 0..<d {
                    let v = Double(f[i * d + j])
                    grand[j] += v
                    mus[l * d + j] += v
                }
            }
        }
        for j in 0..<d { grand[j] /= Double(set.count) }
        for k in 0..<t { for j in 0..<d { mus[k * d + j] /= Double(counts[k]) } }
        // Pooled within-task scatter, upper triangle: centred rows in chunks through one BLAS rank-k update each.
        var s = [Double](repeating: 0, count: d * d)
        let chunk = 256
        var rows = [Double](repeating: 0, count: chunk * d)
        set.features.withUnsafeBufferPointer { f in
            for start in stride(from: 0, to: set.count, by: chunk) {
                let m = min(chunk, set.count - start)
                for i in 0..<m {
                    let l = labels[start + i]
                    for j in 0..<d { rows[i * d + j] = Double(f[(start + i) * d + j]) - mus[l * d + j] }
                }
                rows.withUnsafeBufferPointer { r in
                    s.withUnsafeMutableBufferPointer { DenseLinearAlgebra.addScatter(r, rows: m, n: d, into: $0) }
                }
            }
        }
        let denom = Double(set.count - t)
        var trace = 0.0
        for a in 0..<d { trace += s[a * d + a] / denom }
        var sigma = [Double](repeating: 0, count: d * d)
        for a in 0..<d {
            for b in a..<d {
                let v = (1 - shrinkage) * s[a * d + b] / denom + (a == b ? shrinkage * trace / Double(d) : 0)
                sigma[a * d + b] = v
                sigma[b * d + a] = v
            }
        }
        guard trace > 0, let chol = DenseLinearAlgebra.choleskyLower(sigma, n: d) else {
            throw SwitchError(
                .invalidQuerySet, "The training features have no spread within tasks; the covariance is singular.")
        }
        var w = [Float](repeating: 0, count: t * d)
        var b = [Float](repeating: 0, count: t)
        for k in 0..<t {
            let mu = (0..<d).map { mus[k * d + $0] - grand[$0] }
            let wk = choleskySolve(chol, d, mu)
            var dot = 0.0
            for j in 0..<d {
                w[k * d + j] = Float(wk[j])
                dot += mu[j] * wk[j]
            }
            b[k] = Float(-0.5 * dot)
        }
        let l = chol.map { Float($0) }
        var router = LDARouter(
            tasks: set.tasks, dimension: d, centre: grand.map { Float($0) }, weights: w, bias: b, choleskyFactor: l,
            shrinkage: shrinkage, oodThreshold: -.infinity, baseFingerprint: baseFingerprint, layers: layers)
        let best = try router.scores(set).map { $0.max() ?? 0 }.sorted()
        router = LDARouter(
            tasks: router.tasks, dimension: d, centre: router.centre, weights: w, bias: b, choleskyFactor: l,
            shrinkage: shrinkage,
            oodThreshold: percentile(best, oodPercentile), baseFingerprint: baseFingerprint, layers: layers)
        return router
    }

    /// numpy's default (linear) percentile of sorted values.
    static func percentile(_ sorted: [Float], _ p: Double) -> Float {
        guard !sorted.isEmpty else { return -.infinity }
        let pos = p / 100 * Double(sorted.count - 1)
        let lo = Int(pos.rounded(.down))
        let hi = min(sorted.count - 1, lo + 1)
        let frac = pos - Double(lo)
        return Float(Double(sorted[lo]) + frac * (Double(sorted[hi]) - Double(sorted[lo])))
    }

    /// Solves L·Lᵀ·x = y.
    static func choleskySolve(_ l: [Double], _ n: Int, _ y: [Double]) -> [Double] {
        var z = y
        for i in 0..<n {
            var s = z[i]
            for k in 0..<i { s -= l[i * n + k] * z[k] }
            z[i] = s / l[i * n + i]
        }
        for i in stride(from: n - 1, through: 0, by: -1) {
            var s = z[i]
            for k in (i + 1)..<n { s -= l[k * n + i] * z[k] }
            z[i] = s / l[i * n + i]
        }
        return z
    }

    /// Discriminant scores per example: rows of `tasks.count` values. Batched: per chunk of examples one product
    /// with the weights and one triangular solve for the quadratic term (double precision, as the fit).
    public func scores(_ features: QuerySet) throws(SwitchError) -> [[Float]] {
        guard features.dimension == dimension else {
            throw SwitchError(
                .invalidFeatures,
                "The features have dimension \(features.dimension); the router has \(dimension).")
        }
        let d = dimension
        let t = tasks.count
        let chunk = 256
        let centre64 = centre.map(Double.init)
        var x = [Double](repeating: 0, count: min(chunk, max(1, features.count)) * d)
        var linear = [Double](repeating: 0, count: min(chunk, max(1, features.count)) * t)
        var out: [[Float]] = []
        out.reserveCapacity(features.count)
        for start in stride(from: 0, to: features.count, by: chunk) {
            let m = min(chunk, features.count - start)
            features.features.withUnsafeBufferPointer { f in
                for e in 0..<m {
                    for j in 0..<d { x[e * d + j] = Double(f[(start + e) * d + j]) - centre64[j] }
                }
            }
            x.withUnsafeBufferPointer { xb in
                weights64.withUnsafeBufferPointer { w in
                    linear.withUnsafeMutableBufferPointer {
                        DenseLinearAlgebra.multiplyTransposed(xb, w, m: m, n: t, k: d, into: $0)
                    }
                }
            }
            // ½‖L⁻¹x‖²: the rows solved in place.
            factor64.withUnsafeBufferPointer { l in
                x.withUnsafeMutableBufferPointer { DenseLinearAlgebra.solveLowerRows(l, n: d, rows: $0, count: m) }
            }
            for e in 0..<m {
                var quad = 0.0
                for j in 0..<d { quad += x[e * d + j] * x[e * d + j] }
                out.append((0..<t).map { k in Float(Double(bias[k]) - 0.5 * quad + linear[e * t + k]) })
            }
        }
        return out
    }

    /// Task per example, nil when the input is out of distribution (its best LDA score is below the threshold).
    /// With `texts` (one per row) and a lexical model, the task is the argmax of LDA score + lexical evidence; the
    /// OOD check stays on the LDA score alone (the NB has no notion of "far from every task").
    public func route(_ features: QuerySet, texts: [String]? = nil) throws(SwitchError) -> [Int?] {
        let lda = try scores(features)
        let evidence = try lexicalEvidence(texts, count: features.count)
        return lda.enumerated().map { i, s in
            let best = AutoSwitchRouter.argmax(s.map(Double.init))
            if s[best] < oodThreshold { return nil }
            guard let e = evidence?[i] else { return best }
            return AutoSwitchRouter.argmax(zip(s, e).map { Double($0) + $1 })
        }
    }

    /// Per text, what the lexical model adds to each task's score (w · NB / n^p); nil without texts or model.
    ///
    /// - Throws: `.invalidArgument` when the texts are not one per feature row.
    public func lexicalEvidence(_ texts: [String]?, count: Int) throws(SwitchError) -> [[Double]]? {
        guard let lexical, let texts else { return nil }
        guard texts.count == count else {
            throw SwitchError(
                .invalidArgument, "\(texts.count) texts were given for \(count) feature rows; give one text per row.")
        }
        return texts.map(lexical.evidence)
    }

    /// One-hot switch weights per example (all zero for an out-of-distribution input: the base model).
    public func weights(_ features: QuerySet, texts: [String]? = nil) throws(SwitchError) -> [[Double]] {
        try route(features, texts: texts).map { r in (0..<tasks.count).map { $0 == r ? 1 : 0 } }
    }

    /// Refuses a router fitted on another base model's features.
    public func check(base: BaseFingerprint, file: String) throws(SwitchError) {
        if let mine = baseFingerprint, mine != base {
            throw SwitchError(
                .wrongBase,
                "\(file): the router was fitted on features of base \(mine), not of this base (\(base)).")
        }
    }
}
