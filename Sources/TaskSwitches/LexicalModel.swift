import Foundation

/// Per-task multinomial naive Bayes over hashed character n-grams: the lexical evidence a router adds to its LDA
/// score, because mean-pooled features blur the surface that tells near-twin tasks apart (docs/routing.md, issue 16).
///
/// N-grams: the text's Unicode scalars, case kept (what bench/lexical-routing-study.py measured), framed as
/// U+0002 + text + U+0003; every run of n = `minOrder`…`maxOrder` consecutive scalars is one n-gram. Its bucket is
/// FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the UTF-8 bytes of the run, mod `buckets`.
/// Fit: c_k[b] = occurrences of bucket b in task k's texts, N_k = Σ_b c_k[b]; log P(b | k) = log(c_k[b] + α) −
/// log(N_k + α·B) (Lidstone over all B buckets, equal task priors). A text's log-likelihood under task k is the sum
/// over its n-grams (with repeats) of log P(b | k). Stored sparse: the buckets seen in task k with their
/// log-probabilities, and one value for every unseen bucket, log α − log(N_k + α·B).
public struct LexicalModel: Sendable, Equatable {
    /// One task's table.
    public struct Table: Sendable, Equatable {
        /// Buckets seen in the task's texts, strictly ascending.
        public let buckets: [UInt32]
        /// log P(bucket | task), one per `buckets` entry.
        public let logProbs: [Float]
        /// log P(b | task) of every bucket not in `buckets`.
        public let unseen: Float

        public init(buckets: [UInt32], logProbs: [Float], unseen: Float) {
            precondition(buckets.count == logProbs.count, "one log-probability per bucket")
            self.buckets = buckets
            self.logProbs = logProbs
            self.unseen = unseen
        }

        /// log P(b | task), by binary search.
        @inline(__always)
        func logProb(_ b: UInt32) -> Float {
            var lo = 0
            var hi = buckets.count
            while lo < hi {
                let mid = (lo + hi) >> 1
                if buckets[mid] < b { lo = mid + 1 } else { hi = mid }
            }
            return lo < buckets.count && buckets[lo] == b ? logProbs[lo] : unseen
        }
    }

    /// B, the hash range.
    public let buckets: Int
    public let minOrder: Int
    public let maxOrder: Int
    /// Lidstone α the tables were smoothed with.
    public let alpha: Double
    /// w: the router adds w · (log-likelihood) / n^p to each task's LDA score, n the text's n-gram count.
    public let weight: Double
    /// p: damps long texts' sums (0: the plain product of experts; 1: the mean log-likelihood per n-gram).
    public let power: Double
    /// One per router task, in the router's task order.
    public let tables: [Table]

    /// 2^18 buckets and 1-4-grams, the study's choice.
    public static let defaultBuckets = 1 << 18
    public static let defaultOrders = 1...4
    /// The held-out grids `route --build` tunes over (the study's, docs/routing.md); weight 0 first, so lexical
    /// evidence is kept only when it routes strictly better.
    public static let alphaGrid = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    public static let weightGrid = [0.0] + (-6...8).map { pow(2.0, Double($0)) }
    public static let powerGrid = [0.0, 0.5, 1.0]

    public init(
        buckets: Int, minOrder: Int, maxOrder: Int, alpha: Double, weight: Double, power: Double, tables: [Table]
    ) {
        precondition(buckets >= 1 && minOrder >= 1 && minOrder <= maxOrder, "validated by the caller")
        self.buckets = buckets
        self.minOrder = minOrder
        self.maxOrder = maxOrder
        self.alpha = alpha
        self.weight = weight
        self.power = power
        self.tables = tables
    }

    /// The n-gram buckets of `text`, in order of position then n (see the type's comment).
    public static func ngrams(_ text: String, buckets: Int, orders: ClosedRange<Int>) -> [UInt32] {
        // A run of scalars is a contiguous run of the framed text's UTF-8 bytes: hash byte ranges between scalar
        // starts (the bytes that are not continuation bytes 10xxxxxx).
        var bytes: [UInt8] = [0x02]
        bytes += text.utf8
        bytes.append(0x03)
        var starts: [Int] = []
        starts.reserveCapacity(bytes.count + 1)
        for (i, b) in bytes.enumerated() where b & 0xC0 != 0x80 { starts.append(i) }
        let scalars = starts.count
        starts.append(bytes.count)
        var out: [UInt32] = []
        out.reserveCapacity(scalars * orders.count)
        let modulus = UInt64(buckets)
        for i in 0..<scalars {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for n in 1...orders.upperBound {
                guard i + n <= scalars else { break }
                for j in starts[i + n - 1]..<starts[i + n] {
                    h ^= UInt64(bytes[j])
                    h = h &* 0x100_0000_01b3
                }
                if n >= orders.lowerBound { out.append(UInt32(h % modulus)) }
            }
        }
        return out
    }

    /// The n-gram buckets of `text` under this model's hash.
    public func ngrams(_ text: String) -> [UInt32] {
        Self.ngrams(text, buckets: buckets, orders: minOrder...maxOrder)
    }

    /// Per task, Σ over the text's n-grams of log P(bucket | task) (double precision sums).
    public func logLikelihoods(_ text: String) -> [Double] { logLikelihoods(grams: ngrams(text)) }

    func logLikelihoods(grams: [UInt32]) -> [Double] {
        tables.map { t in
            var s = 0.0
            for g in grams { s += Double(t.logProb(g)) }
            return s
        }
    }

    /// What routing adds to each task's LDA score: w · logLikelihood / n^p.
    public func evidence(_ text: String) -> [Double] {
        let grams = ngrams(text)
        let scale = weight / pow(Double(max(1, grams.count)), power)
        return logLikelihoods(grams: grams).map { $0 * scale }
    }

    /// Occurrence counts per task (sparse), the sufficient statistics of the fit.
    struct Counts {
        var perTask: [[UInt32: Int]]
        var totals: [Int]

        init(texts: [[UInt32]], labels: [Int], tasks: Int) {
            perTask = Array(repeating: [:], count: tasks)
            totals = Array(repeating: 0, count: tasks)
            for (grams, l) in zip(texts, labels) {
                for g in grams { perTask[l][g, default: 0] += 1 }
                totals[l] += grams.count
            }
        }

        /// Σ log P(g | task) over `grams`, for every task, smoothed with α over `buckets`.
        func logLikelihoods(_ grams: [UInt32: Int], alpha: Double, buckets: Int) -> [Double] {
            (0..<perTask.count).map { k in
                let denom = log(Double(totals[k]) + alpha * Double(buckets))
                var s = 0.0
                for (g, c) in grams { s += Double(c) * (log(Double(perTask[k][g] ?? 0) + alpha) - denom) }
                return s
            }
        }

        func tables(alpha: Double, buckets: Int) -> [Table] {
            (0..<perTask.count).map { k in
                let denom = log(Double(totals[k]) + alpha * Double(buckets))
                let keys = perTask[k].keys.sorted()
                return Table(
                    buckets: keys, logProbs: keys.map { Float(log(Double(perTask[k][$0] ?? 0) + alpha) - denom) },
                    unseen: Float(log(alpha) - denom))
            }
        }
    }

    /// Fits the tables on labelled texts (`labels` index the router's tasks) with the given knobs.
    public static func fit(
        texts: [String], labels: [Int], tasks: Int, alpha: Double, weight: Double, power: Double,
        buckets: Int = defaultBuckets, orders: ClosedRange<Int> = defaultOrders
    ) -> LexicalModel {
        precondition(texts.count == labels.count, "one label per text")
        let counts = Counts(
            texts: texts.map { ngrams($0, buckets: buckets, orders: orders) }, labels: labels, tasks: tasks)
        return LexicalModel(
            buckets: buckets, minOrder: orders.lowerBound, maxOrder: orders.upperBound, alpha: alpha, weight: weight,
            power: power, tables: counts.tables(alpha: alpha, buckets: buckets))
    }

    /// Size of the tables as `RouterFile` stores them (8 bytes per seen bucket, 8 per task).
    public var storedBytes: Int { tables.reduce(0) { $0 + 8 + 8 * $1.buckets.count } }
}
