import ArgumentParser
import Evaluation
import Foundation

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy of an encoder with a linear head on a labelled JSONL test set, or on a folder of tasks.",
        discussion: """
            One task: tswitch eval MODEL --head head.safetensors --data test.jsonl

            A folder of tasks: tswitch eval MODEL --head data/heads --data data/tasks evaluates every task folder \
            of --data that has a test.jsonl and a head (tasks without one are named on stderr), with --head's <task>/head.safetensors, and prints per-task and mean \
            accuracy. MODEL may then also be a folder of per-task models (zoo/<task>/), one per task.

            Texts are truncated to --max-length tokens (48, the zoo's training protocol, by default). A head with \
            a logit_scale in its metadata (a zero-shot head, `tswitch head`) scores the L2-normalized features by \
            scaled cosine.

            With --pack, MODEL is the base and the packs are applied in memory first. One task: every pack is \
            added (weight 1). A folder of tasks: each task gets the pack made for it (T-Switch with the task \
            known). With --auto-switch QUERYSET (a labelled query set of base-model features, see `tswitch route`), \
            each test batch is routed by k-NN to weights over the packs instead (Auto-Switch).
            """)

    @Argument(help: "A Hugging Face BERT folder, or a folder of per-task model folders.")
    var model: String

    @Option(help: "Head file (weight: classes x hidden, bias: classes), or a folder of <task>/head.safetensors.")
    var head: String

    @Option(help: "Labelled JSONL test file, or a folder of task folders holding test.jsonl.")
    var data: String

    @OptionGroup(title: "Encoder")
    var encoder: EncoderOptions<EvalDefaults>

    @Option(
        parsing: .upToNextOption,
        help:
            "Switch packs (.tsw: T-Switch or random-mask, mixed freely) to apply to the base MODEL: `--pack packs/*.tsw` or repeated --pack."
    )
    var pack: [String] = []

    @OptionGroup(title: "Auto-Switch")
    var routing: RoutingOptions

    @OptionGroup
    var format: JSONOption

    func validate() throws {
        if routing.autoSwitch != nil && pack.isEmpty {
            throw ValidationError("--auto-switch needs the packs to route to (--pack).")
        }
        if TaskDiscovery.isDirectory(data) && !TaskDiscovery.isDirectory(head) {
            throw ValidationError(
                "--data is a folder of tasks, so --head must be a folder of <task>/head.safetensors; \(head) is not a folder."
            )
        }
    }

    func run() throws {
        let folder = TaskDiscovery.isDirectory(data)
        let run = try EvaluationRun(
            model: model, packPaths: pack, routing: routing.settings,
            perTaskModels: folder && pack.isEmpty && TaskDiscovery.isFolderOfModels(model),
            maxLength: encoder.maxLength, batchSize: encoder.batch)
        let progress = ProgressReporter()
        if folder {
            let left = try TaskDiscovery.split(dataFolder: data, headFolder: head).withoutHead
            if !left.isEmpty {
                FileHandle.standardError.write(
                    Data("eval: left out (no head in \(head)): \(left.joined(separator: ", "))\n".utf8))
            }
            let report = try run.evaluateTasks(headFolder: head, dataFolder: data, progress: progress.report) {
                task, s in
                if !format.json {
                    print(
                        "\(task.padding(toLength: max(14, task.count), withPad: " ", startingAt: 0)) \(Self.score(s))")
                }
            }
            if format.json {
                print(try ReportJSON.text(report))
            } else {
                print(
                    "\("mean".padding(toLength: 14, withPad: " ", startingAt: 0)) \(String(format: "%.4f", report.meanAccuracy)) (\(report.tasks.count) tasks, \(report.n) texts)"
                )
                if let routed = report.routingAccuracy, let agnostic = report.taskAgnosticAccuracy {
                    print(
                        "routed to their task \(String(format: "%.4f", routed)), task-agnostic accuracy \(String(format: "%.4f", agnostic)) (means over tasks)"
                    )
                }
            }
        } else {
            let report = try run.evaluate(headPath: head, dataPath: data, progress: progress.report)
            if format.json {
                print(try ReportJSON.text(report))
            } else {
                print(
                    "accuracy \(Self.score(TaskScore(accuracy: report.accuracy, correct: report.correct, n: report.n)))"
                )
            }
        }
    }

    /// `0.5750 (23/40)`, with routing `0.5750 (23/40) routed 0.9500, task-agnostic 0.5500`.
    private static func score(_ s: TaskScore) -> String {
        let plain = "\(String(format: "%.4f", s.accuracy)) (\(s.correct)/\(s.n))"
        guard let r = s.routing else { return plain }
        return plain
            + " routed \(String(format: "%.4f", r.accuracy)), task-agnostic \(String(format: "%.4f", r.taskAgnosticAccuracy))"
    }
}

/// Draws the library's evaluation progress as one `ProgressBar` per test set.
final class ProgressReporter {
    private var bar: ProgressBar?

    func report(_ event: EvaluationProgress) {
        switch event {
        case .started(let label, let total): bar = ProgressBar(total: total, label: label)
        case .advanced(let done): bar?.update(done)
        case .finished:
            bar?.finish()
            bar = nil
        }
    }
}
