import Foundation

extension LDARouter {
    /// Lexical knobs a caller fixes instead of tuning them (nil: tuned on the held-out part of the train rows).
    public struct LexicalKnobs: Sendable, Equatable {
        public var alpha: Double?
        public var weight: Double?
        public var power: Double?
        public var buckets: Int
        public var orders: ClosedRange<Int>

        public init(
            alpha: Double? = nil, weight: Double? = nil, power: Double? = nil,
            buckets: Int = LexicalModel.defaultBuckets, orders: ClosedRange<Int> = LexicalModel.defaultOrders
        ) {
            self.alpha = alpha
            self.weight = weight
            self.power = power
            self.buckets = buckets
            self.orders = orders
        }
    }

    /// What the held-out tuning measured: the share of held-out train rows routed to their task (mean over tasks)
    /// by the LDA alone and with the chosen knobs.
    public struct LexicalTuning: Sendable, Equatable {
        public let heldOut: Int
        public let ldaRouted: Double
        public let lexicalRouted: Double
        public let alpha: Double
        public let weight: Double
        public let power: Double
    }

    /// Knobs used when no rows are held out to tune on: a fallback inside the tuning grids, not a measured choice.
    static let untunedKnobs = (alpha: 0.1, weight: 8.0, power: 1.0)

    /// Fits the LDA router (as `fit`) and beside it the lexical naive Bayes of `texts` (one per row of `set`). The
    /// knobs not fixed in `knobs` are the grid point (`LexicalModel.alphaGrid`, `weightGrid`, `powerGrid`) that
    /// routes the most held-out rows (mean over tasks) with the LDA and NB both fitted on the other rows, the same
    /// split the OOD threshold comes from; ties go to the earlier point, weight 0 first, so the router carries no
    /// lexical model unless it routes strictly better there. The NB is then refitted on every row.
    ///
    /// - Throws: `.invalidArgument` when the texts are not one per row or a knob is out of range; what `fit` throws.
    public static func fit(
        _ set: QuerySet, texts: [String], knobs: LexicalKnobs = LexicalKnobs(), shrinkage: Double = defaultShrinkage,
        baseFingerprint: BaseFingerprint? = nil, holdOutEvery: Int = 5, layers: [Int] = []
    ) throws(SwitchError) -> (router: LDARouter, tuning: LexicalTuning?) {
        guard texts.count == set.count else {
            throw SwitchError(
                .invalidArgument, "\(texts.count) texts were given for \(set.count) feature rows; give one per row.")
        }
        if let a = knobs.alpha, !(a > 0 && a.isFinite) {
            throw SwitchError(.invalidArgument, "The lexical smoothing α must be > 0; got \(a).")
        }
        if let w = knobs.weight, !(w >= 0 && w.isFinite) {
            throw SwitchError(.invalidArgument, "The lexical weight must be ≥ 0; got \(w).")
        }
        if let p = knobs.power, !(p >= 0 && p <= 4) {
            throw SwitchError(.invalidArgument, "The lexical length power must be in [0, 4]; got \(p).")
        }
        guard knobs.buckets >= 1, knobs.buckets <= RouterFile.Limits.standard.maxLexicalBuckets,
            knobs.orders.lowerBound >= 1, knobs.orders.upperBound <= RouterFile.Limits.standard.maxLexicalOrder
        else {
            throw SwitchError(
                .invalidArgument,
                "The lexical buckets (\(knobs.buckets)) or n-gram orders (\(knobs.orders)) are outside the file's limits."
            )
        }
        let (lda, heldRows, heldScores) = try fitHeldOut(
            set, shrinkage: shrinkage, baseFingerprint: baseFingerprint, holdOutEvery: holdOutEvery, layers: layers)
        guard let labels = set.labels else {
            throw SwitchError(.invalidQuerySet, "The training features have no labels or task names.")
        }
        let t = set.tasks.count
        let grams = texts.map { LexicalModel.ngrams($0, buckets: knobs.buckets, orders: knobs.orders) }
        var tuning: LexicalTuning?
        var chosen = (
            alpha: knobs.alpha ?? untunedKnobs.alpha, weight: knobs.weight ?? untunedKnobs.weight,
            power: knobs.power ?? untunedKnobs.power
        )
        if !heldRows.isEmpty {
            let isHeld = Set(heldRows)
            let keep = (0..<set.count).filter { !isHeld.contains($0) }
            let counts = LexicalModel.Counts(
                texts: keep.map { grams[$0] }, labels: keep.map { labels[$0] }, tasks: t)
            let truth = heldRows.map { labels[$0] }
            let bags = heldRows.map { r in grams[r].reduce(into: [UInt32: Int]()) { $0[$1, default: 0] += 1 } }
            let lengths = heldRows.map { Double(max(1, grams[$0].count)) }
            let alphas = knobs.alpha.map { [$0] } ?? LexicalModel.alphaGrid
            let weights = knobs.weight.map { [$0] } ?? LexicalModel.weightGrid
            let powers = knobs.power.map { [$0] } ?? LexicalModel.powerGrid
            let lda64 = heldScores.map { $0.map(Double.init) }
            let ldaRouted = routedShare(lda64.map(AutoSwitchRouter.argmax), truth, tasks: t)
            var best: (routed: Double, alpha: Double, weight: Double, power: Double)?
            for a in alphas {
                let nb = bags.map { counts.logLikelihoods($0, alpha: a, buckets: knobs.buckets) }
                for w in weights {
                    for p in powers {
                        let predictions = (0..<heldRows.count).map { i in
                            let scale = w / pow(lengths[i], p)
                            return AutoSwitchRouter.argmax(zip(lda64[i], nb[i]).map { $0 + scale * $1 })
                        }
                        let r = routedShare(predictions, truth, tasks: t)
                        if best.map({ r > $0.routed }) ?? true { best = (r, a, w, p) }
                    }
                }
            }
            if let best {
                chosen = (best.alpha, best.weight, best.power)
                tuning = LexicalTuning(
                    heldOut: heldRows.count, ldaRouted: ldaRouted, lexicalRouted: best.routed, alpha: best.alpha,
                    weight: best.weight, power: best.power)
            }
        }
        guard chosen.weight > 0 else { return (lda, tuning) }
        let model = LexicalModel(
            buckets: knobs.buckets, minOrder: knobs.orders.lowerBound, maxOrder: knobs.orders.upperBound,
            alpha: chosen.alpha, weight: chosen.weight, power: chosen.power,
            tables: LexicalModel.Counts(texts: grams, labels: labels, tasks: t).tables(
                alpha: chosen.alpha, buckets: knobs.buckets))
        return (lda.with(lexical: model), tuning)
    }

    /// The same router with `lexical` beside it.
    public func with(lexical: LexicalModel?) -> LDARouter {
        LDARouter(
            tasks: tasks, dimension: dimension, centre: centre, weights: weights, bias: bias,
            choleskyFactor: choleskyFactor, shrinkage: shrinkage, oodThreshold: oodThreshold,
            baseFingerprint: baseFingerprint, layers: layers, lexical: lexical)
    }

    /// Share of each task's rows predicted as it, mean over the tasks that have rows.
    static func routedShare(_ predictions: [Int], _ truth: [Int], tasks: Int) -> Double {
        var right = [Int](repeating: 0, count: tasks)
        var total = [Int](repeating: 0, count: tasks)
        for (p, y) in zip(predictions, truth) {
            total[y] += 1
            if p == y { right[y] += 1 }
        }
        let shares = (0..<tasks).filter { total[$0] > 0 }.map { Double(right[$0]) / Double(total[$0]) }
        return shares.reduce(0, +) / Double(max(1, shares.count))
    }
}
