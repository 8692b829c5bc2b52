import Foundation

/// The accuracy of a head on one test set.
public struct TaskScore: Codable, Sendable, Equatable {
    public var accuracy: Double
    public var correct: Int
    public var n: Int

    public init(accuracy: Double, correct: Int, n: Int) {
        self.accuracy = accuracy
        self.correct = correct
        self.n = n
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

    enum CodingKeys: String, CodingKey {
        case accuracy, n, tasks, model, head, data
        case meanAccuracy = "mean_accuracy"
    }

    /// `scores` in task order; the mean is over tasks, not texts.
    public init(scores: [(task: String, score: TaskScore)], model: String, head: String, data: String) {
        let mean = scores.map(\.score.accuracy).reduce(0, +) / Double(max(1, scores.count))
        accuracy = mean
        meanAccuracy = mean
        n = scores.map(\.score.n).reduce(0, +)
        tasks = Dictionary(scores.map { ($0.task, $0.score) }, uniquingKeysWith: { a, _ in a })
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
