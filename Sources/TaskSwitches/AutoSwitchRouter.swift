import CheckpointIO

/// Auto-Switch: picks switch weights for inputs of unknown task by k-nearest neighbours among a labelled query set.
///
/// w_k(x) = share of x's k nearest query examples that belong to task k (uniform weights, as the official code's
/// `KNeighborsClassifier`). Neighbour ties in distance are broken by lower query index. Three ways to turn
/// neighbour shares into switch weights:
/// - `softBatchMean`: the official ViT code: average w over each batch, one weight set per batch;
/// - `hardBatchMean`: the RoBERTa code: one-hot argmax of the batch mean (one switch per batch);
/// - `perExample`: each example its own w.
public struct AutoSwitchRouter: Sendable {
    public enum Distance: String, Sendable, CaseIterable {
        case euclidean
        /// 1 − cos(x, q); on raw mean-pooled sentence features it routes far better than Euclidean distance.
        case cosine
    }

    public enum Mode: String, Sendable, CaseIterable {
        case softBatchMean = "soft-batch"
        case hardBatchMean = "hard-batch"
        case perExample = "per-example"
    }

    public let query: QuerySet
    public let k: Int
    public let distance: Distance
    private let queryNorms: [Float]

    public init(query: QuerySet, k: Int = 10, distance: Distance = .cosine) throws(SwitchError) {
        guard let labels = query.labels, !query.tasks.isEmpty else {
            throw SwitchError(.invalidQuerySet, "The query set has no labels or task names.")
        }
        guard k >= 1, k <= query.count else {
            throw SwitchError(
                .invalidArgument, "k must be between 1 and the query set's \(query.count) examples; got \(k).")
        }
        _ = labels
        self.query = query
        self.k = k
        self.distance = distance
        queryNorms = (0..<query.count).map { i in query.row(i).reduce(0) { $0 + $1 * $1 }.squareRoot() }
    }

    /// Neighbour shares per example: rows of `tasks.count` values summing to 1.
    public func shares(_ features: QuerySet) throws(SwitchError) -> [[Double]] {
        guard features.dimension == query.dimension else {
            throw SwitchError(
                .invalidFeatures,
                "The features have dimension \(features.dimension); the query set has \(query.dimension).")
        }
        let labels = query.labels ?? []
        let t = query.tasks.count
        var out = [[Double]](repeating: [Double](repeating: 0, count: t), count: features.count)
        let qn = queryNorms
        let q = query
        let kk = k
        let dist = distance
        out.withUnsafeMutableBufferPointer { ob in
            let O = UncheckedSendable(ob)
            Parallel.forEachChunk(features.count, minChunk: 16) { r in
                var d = [(Float, Int)](repeating: (0, 0), count: q.count)
                for e in r {
                    let x = features.row(e)
                    let xn = x.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    for j in 0..<q.count {
                        let y = q.row(j)
                        var dot: Float = 0
                        var sq: Float = 0
                        for (a, b) in zip(x, y) {
                            dot += a * b
                            sq += (a - b) * (a - b)
                        }
                        let value: Float =
                            dist == .euclidean ? sq : 1 - dot / max(xn * qn[j], .leastNormalMagnitude)
                        d[j] = (value, j)
                    }
                    d.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
                    var row = [Double](repeating: 0, count: t)
                    for n in 0..<kk { row[labels[d[n].1]] += 1 / Double(kk) }
                    O.value[e] = row
                }
            }
        }
        return out
    }

    /// Switch weights per example under `mode`. Batches are consecutive runs of `batchSize` examples (as a test
    /// loader yields them); batch modes give every example of a batch the same weights.
    public func weights(_ features: QuerySet, mode: Mode, batchSize: Int = 256) throws(SwitchError) -> [[Double]] {
        Self.aggregate(try shares(features), mode: mode, batchSize: batchSize)
    }

    /// Per-example weights as `mode` uses them: as they are, or each run of `batchSize` examples given its mean
    /// (soft) or the one-hot argmax of its mean (hard).
    public static func aggregate(_ s: [[Double]], mode: Mode, batchSize: Int) -> [[Double]] {
        guard mode != .perExample, let width = s.first?.count else { return s }
        var out = s
        for start in stride(from: 0, to: s.count, by: max(1, batchSize)) {
            let end = min(s.count, start + max(1, batchSize))
            var mean = [Double](repeating: 0, count: width)
            for i in start..<end { for j in 0..<mean.count { mean[j] += s[i][j] / Double(end - start) } }
            // A batch routed nowhere (every example out of distribution, weights all zero) stays on the base.
            if mode == .hardBatchMean, mean.contains(where: { $0 > 0 }) {
                let best = Self.argmax(mean)
                mean = mean.indices.map { $0 == best ? 1 : 0 }
            }
            for i in start..<end { out[i] = mean }
        }
        return out
    }

    /// First index of the largest value.
    public static func argmax(_ v: [Double]) -> Int {
        var best = 0
        for i in v.indices where v[i] > v[best] { best = i }
        return best
    }

    /// Routing quality on labelled features.
    public struct Score: Sendable {
        /// Share of examples whose largest weight is on their own task.
        public let accuracy: Double
        /// Mean weight put on the example's own task.
        public let ownWeight: Double
        public let examples: Int
    }

    /// Scores routing of labelled `features` (their task names are matched to the query set's by name). Batches are
    /// formed within each task, as the official evaluation routes one dataset's test loader at a time.
    public func score(_ features: QuerySet, mode: Mode, batchSize: Int = 256) throws(SwitchError) -> Score {
        guard let labels = features.labels else {
            throw SwitchError(.invalidFeatures, "The features have no 'labels'; routing accuracy needs them.")
        }
        let map = try features.tasks.map { (name) throws(SwitchError) -> Int in
            guard let i = query.tasks.firstIndex(of: name) else {
                throw SwitchError(
                    .invalidFeatures,
                    "Task '\(name)' of the features is not in the query set (\(query.tasks.joined(separator: ", "))).")
            }
            return i
        }
        var correct = 0
        var own = 0.0
        for task in Set(labels).sorted() {
            let rows = labels.indices.filter { labels[$0] == task }
            var values: [Float] = []
            values.reserveCapacity(rows.count * features.dimension)
            for r in rows { values += features.row(r) }
            let subset = QuerySet(
                features: values, count: rows.count, dimension: features.dimension, labels: nil, tasks: [])
            let w = try weights(subset, mode: mode, batchSize: batchSize)
            let target = map[task]
            for row in w {
                if Self.argmax(row) == target { correct += 1 }
                own += row[target]
            }
        }
        return Score(
            accuracy: Double(correct) / Double(labels.count), ownWeight: own / Double(labels.count),
            examples: labels.count)
    }
}
