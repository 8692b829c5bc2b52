import Foundation

/// The accuracy of a head on one test set.
public struct TaskScore: Codable, Sendable, Equatable {
    public var accuracy: Double
    public var correct: Int
    public var n: Int
    /// With Auto-Switch over a folder of tasks: where the texts were routed (absent otherwise, so reports without
    /// routing keep their bytes).
    public var routing: RoutingScore?

    public init(accuracy: Double, correct: Int, n: Int, routing: RoutingScore? = nil) {
        self.accuracy = accuracy
        self.correct = correct
        self.n = n
        self.routing = routing
    }
}

/// Where Auto-Switch sent one task's test texts. A text goes to the pack with its largest switch weight (the first
/// on a tie), or to `base` when every weight is zero (the router found it far from every task).
public struct RoutingScore: Codable, Sendable, Equatable {
    /// Share of the texts sent to their own task's pack.
    public var accuracy: Double
    /// Texts per destination (task names and `base`), the task's row of the confusion matrix.
    public var routes: [String: Int]
    /// Share of the texts both sent to their own task and labelled right: what a caller who does not know the task
    /// gets, since a text sent elsewhere is answered in another task's label set.
    public var taskAgnosticAccuracy: Double

    enum CodingKeys: String, CodingKey {
        case accuracy, routes
        case taskAgnosticAccuracy = "task_agnostic_accuracy"
    }

    /// `destinations[i]`: where text i went; `correct[i]`: whether the task's own head (on the routed features)
    /// labelled it right.
    public init(task: String, destinations: [String], correct: [Bool]) {
        precondition(destinations.count == correct.count, "one destination per text")
        let n = Double(max(1, destinations.count))
        routes = destinations.reduce(into: [:]) { $0[$1, default: 0] += 1 }
        accuracy = Double(routes[task] ?? 0) / n
        taskAgnosticAccuracy = Double(zip(destinations, correct).filter { $0 == task && $1 }.count) / n
    }

    /// The destination of each text from its switch weights over `packTasks`.
    public static func destinations(weights: [[Double]], packTasks: [String]) -> [String] {
        weights.map { row in
            var best = -1
            for (i, w) in row.enumerated() where w > 0 && (best < 0 || w > row[best]) { best = i }
            return best < 0 ? "base" : packTasks[best]
        }
    }
}

/// `tswitch eval --json` on one test file.
public struct SingleEvaluationReport: Codable, Sendable, Equatable {
    public var accuracy: Double
    public var correct: Int
    public var n: Int
    public var model: String
    public var head: String
    public var data: String
    /// With Auto-Switch: whether the router added lexical evidence from the texts.
    public var routingLexical: Bool?

    enum CodingKeys: String, CodingKey {
        case accuracy, correct, n, model, head, data
        case routingLexical = "routing_lexical"
    }

    public init(score: TaskScore, model: String, head: String, data: String) {
        accuracy = score.accuracy
        correct = score.correct
        n = score.n
        self.model = model
        self.head = head
        self.data = data
    }
}

/// `tswitch eval --json` on a folder of tasks: per-task scores and their unweighted mean.
public struct TaskEvaluationReport: Codable, Sendable, Equatable {
    /// The mean accuracy again, under the key the single-file report uses.
    public var accuracy: Double
    public var meanAccuracy: Double
    /// Test texts over all tasks.
    public var n: Int
    public var tasks: [String: TaskScore]
    public var model: String
    public var head: String
    public var data: String
    /// With Auto-Switch: the mean over tasks of each task's routing accuracy and task-agnostic accuracy.
    public var routingAccuracy: Double?
    public var taskAgnosticAccuracy: Double?
    /// With Auto-Switch: whether the router added lexical evidence from the texts (an LDA router file with it).
    public var routingLexical: Bool?

    enum CodingKeys: String, CodingKey {
        case accuracy, n, tasks, model, head, data
        case meanAccuracy = "mean_accuracy"
        case routingAccuracy = "routing_accuracy"
        case taskAgnosticAccuracy = "task_agnostic_accuracy"
        case routingLexical = "routing_lexical"
    }

    /// `scores` in task order; the mean is over tasks, not texts.
    public init(scores: [(task: String, score: TaskScore)], model: String, head: String, data: String) {
        let mean = scores.map(\.score.accuracy).reduce(0, +) / Double(max(1, scores.count))
        accuracy = mean
        meanAccuracy = mean
        n = scores.map(\.score.n).reduce(0, +)
        tasks = Dictionary(scores.map { ($0.task, $0.score) }, uniquingKeysWith: { a, _ in a })
        let routed = scores.compactMap(\.score.routing)
        if !routed.isEmpty, routed.count == scores.count {
            routingAccuracy = routed.map(\.accuracy).reduce(0, +) / Double(routed.count)
            taskAgnosticAccuracy = routed.map(\.taskAgnosticAccuracy).reduce(0, +) / Double(routed.count)
        }
        self.model = model
        self.head = head
        self.data = data
    }
}

/// JSON text of the reports as the command line prints them: keys sorted, one line unless `pretty`.
public enum ReportJSON {
    public static func text<T: Encodable>(_ value: T, pretty: Bool = false) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
