import Foundation
import Testing

@testable import Evaluation

/// The JSON reports of `tswitch eval` and the task discovery behind a folder of tasks.
struct EvaluationReportTests {
    @Test("a folder-of-tasks report has the mean over tasks under accuracy and mean_accuracy, keys sorted")
    func tasksReportJSON() throws {
        let report = TaskEvaluationReport(
            scores: [
                ("lang-id", TaskScore(accuracy: 0.5, correct: 20, n: 40)),
                ("fortune", TaskScore(accuracy: 0.575, correct: 23, n: 40)),
            ], model: "m/x", head: "h", data: "d")
        #expect(report.meanAccuracy == 0.5375 && report.n == 80)
        #expect(
            try ReportJSON.text(report)
                == #"{"accuracy":0.5375,"data":"d","head":"h","mean_accuracy":0.5375,"model":"m\/x","n":80,"tasks":{"fortune":{"accuracy":0.575,"correct":23,"n":40},"lang-id":{"accuracy":0.5,"correct":20,"n":40}}}"#
        )
    }

    @Test("a text goes to the pack with its largest weight (first on a tie), to base when every weight is zero")
    func routingDestinations() {
        let packs = ["a", "b", "c"]
        let weights: [[Double]] = [[0, 1, 0], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0, 0, 0], [0, 0, 0.1]]
        #expect(RoutingScore.destinations(weights: weights, packTasks: packs) == ["b", "b", "a", "base", "c"])
    }

    @Test("routing accuracy counts texts sent to their own task; task-agnostic ones also labelled right")
    func routingScore() throws {
        // Four texts of task "a": two go to a (one labelled right), one to b (labelled "right" by b's head, which
        // still does not count), one to the base.
        let r = RoutingScore(task: "a", destinations: ["a", "a", "b", "base"], correct: [true, false, true, true])
        #expect(r.accuracy == 0.5 && r.taskAgnosticAccuracy == 0.25)
        #expect(r.routes == ["a": 2, "b": 1, "base": 1])
        let report = TaskEvaluationReport(
            scores: [
                ("a", TaskScore(accuracy: 0.75, correct: 3, n: 4, routing: r)),
                (
                    "b",
                    TaskScore(
                        accuracy: 1, correct: 2, n: 2,
                        routing: RoutingScore(task: "b", destinations: ["b", "b"], correct: [true, true]))
                ),
            ], model: "m", head: "h", data: "d")
        #expect(report.routingAccuracy == 0.75 && report.taskAgnosticAccuracy == 0.625)
        let json = try ReportJSON.text(report)
        #expect(json.contains(#""routing_accuracy":0.75"#) && json.contains(#""task_agnostic_accuracy":0.625"#))
        #expect(
            json.contains(#""routing":{"accuracy":0.5,"routes":{"a":2,"b":1,"base":1},"task_agnostic_accuracy":0.25}"#))
    }

    @Test("a one-file report prints accuracy, correct, data, head, model and n")
    func singleReportJSON() throws {
        var report = SingleEvaluationReport(
            score: TaskScore(accuracy: 1, correct: 3, n: 3), model: "m", head: "h", data: "d")
        #expect(try ReportJSON.text(report) == #"{"accuracy":1,"correct":3,"data":"d","head":"h","model":"m","n":3}"#)
        report.routingLexical = false
        #expect(try ReportJSON.text(report).hasSuffix(#""n":3,"routing_lexical":false}"#))
    }

    @Test("with routing, whether lexical evidence was used is in the report under routing_lexical; absent without")
    func lexicalFlag() throws {
        var report = TaskEvaluationReport(
            scores: [("a", TaskScore(accuracy: 1, correct: 1, n: 1))], model: "m", head: "h", data: "d")
        #expect(try !ReportJSON.text(report).contains("routing_lexical"))
        report.routingLexical = true
        #expect(try ReportJSON.text(report).contains(#""routing_lexical":true"#))
        let back = try JSONDecoder().decode(TaskEvaluationReport.self, from: Data(try ReportJSON.text(report).utf8))
        #expect(back.routingLexical == true)
    }

    @Test("task discovery keeps the sub-folders with a test.jsonl and a head, sorted, and refuses a folder without any")
    func discovery() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("discovery-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let data = root.appendingPathComponent("data")
        let heads = root.appendingPathComponent("heads")
        for (task, test) in [("b", true), ("a", true), ("c", false)] {
            let dir = data.appendingPathComponent(task)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            if test { try Data("{}\n".utf8).write(to: dir.appendingPathComponent("test.jsonl")) }
            let head = heads.appendingPathComponent(task)
            try FileManager.default.createDirectory(at: head, withIntermediateDirectories: true)
            try Data().write(to: head.appendingPathComponent("head.safetensors"))
        }
        let tasks = try TaskDiscovery.tasks(dataFolder: data.path, headFolder: heads.path)
        #expect(tasks.map(\.name) == ["a", "b"])
        #expect(
            tasks[0].testPath == "\(data.path)/a/test.jsonl" && tasks[0].headPath == "\(heads.path)/a/head.safetensors")
        #expect(tasks[1].modelPath(in: "zoo") == "zoo/b")
        let empty = data.appendingPathComponent("c")
        let error = EvalFixture.error { _ = try TaskDiscovery.tasks(dataFolder: empty.path, headFolder: heads.path) }
        #expect(error?.code == .invalidData)
        #expect(error?.message.contains("no task folder with a test.jsonl") == true)
        // Tasks exist but none has a head: refused, naming the heads folder.
        let noHeads = EvalFixture.error {
            _ = try TaskDiscovery.tasks(dataFolder: data.path, headFolder: root.appendingPathComponent("none").path)
        }
        #expect(noHeads?.code == .invalidData)
        #expect(noHeads?.message.contains("no task folder has a head in") == true)
    }
}
