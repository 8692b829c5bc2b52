import TaskSwitches

/// `tswitch route --json`: the switch weights of every example and, with labelled features, the routing score.
public struct RoutingReport: Codable, Sendable, Equatable {
    public var tasks: [String]
    public var k: Int
    public var distance: String
    public var mode: String
    /// Per example, the weight of each task (in `tasks` order).
    public var weights: [[Double]]
    public var accuracy: Double?
    public var ownWeight: Double?

    enum CodingKeys: String, CodingKey {
        case tasks, k, distance, mode, weights, accuracy
        case ownWeight = "own_weight"
    }

    public init(
        router: AutoSwitchRouter, mode: AutoSwitchRouter.Mode, weights: [[Double]], score: AutoSwitchRouter.Score?
    ) {
        tasks = router.query.tasks
        k = router.k
        distance = router.distance.rawValue
        self.mode = mode.rawValue
        self.weights = weights
        accuracy = score?.accuracy
        ownWeight = score?.ownWeight
    }
}

/// `tswitch route --all --json`: routing scored for every distance and mode.
public struct RoutingSweepReport: Codable, Sendable, Equatable {
    public struct Row: Codable, Sendable, Equatable {
        public var distance: String
        public var mode: String
        public var accuracy: Double
        public var ownWeight: Double
        public var examples: Int

        enum CodingKeys: String, CodingKey {
            case distance, mode, accuracy, examples
            case ownWeight = "own_weight"
        }
    }

    public var k: Int
    public var batch: Int
    public var results: [Row]

    /// Scores `features` with a router per distance over `query`, in every mode.
    public init(query: QuerySet, features: QuerySet, k: Int, batch: Int) throws {
        var rows: [Row] = []
        for d in AutoSwitchRouter.Distance.allCases {
            let router = try AutoSwitchRouter(query: query, k: k, distance: d)
            for m in AutoSwitchRouter.Mode.allCases {
                let s = try router.score(features, mode: m, batchSize: batch)
                rows.append(
                    Row(
                        distance: d.rawValue, mode: m.rawValue, accuracy: s.accuracy, ownWeight: s.ownWeight,
                        examples: s.examples))
            }
        }
        self.k = k
        self.batch = batch
        results = rows
    }
}
