import ArgumentParser
import CheckpointIO
import Evaluation
import Foundation
import TaskSwitches

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy of an encoder with a linear head on a labelled JSONL test set, or on a folder of tasks.",
        discussion: """
            One task: tswitch eval MODEL --head head.safetensors --data test.jsonl

            A folder of tasks: tswitch eval MODEL --head data/heads --data data/tasks evaluates every task folder \
            of --data that has a test.jsonl and a head --head/<task>/head.safetensors (the others are left out, \
            named on stderr), and prints per-task and mean accuracy. MODEL may then also be a folder of per-task models (zoo/<task>/), one per task.

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

    @Option(help: "Truncate texts to this many tokens, [CLS] and [SEP] included.")
    var maxLength = 48

    @Option(help: "Texts per forward pass.")
    var batch = 64

    @Option(
        parsing: .upToNextOption,
        help: "Switch packs (.tsw: T-Switch or random-mask, mixed freely) to apply to the base MODEL: `--pack packs/*.tsw` or repeated --pack.")
    var pack: [String] = []

    @Option(name: .customLong("auto-switch"), help: "Route each batch to the packs with this labelled query set (.safetensors).")
    var autoSwitch: String?

    @Option(
        help: "Auto-Switch: per-example, soft-batch (official ViT code) or hard-batch (official RoBERTa code; the best measured, see docs/bench-switch.md).")
    var routeMode: AutoSwitchRouter.Mode = .hardBatchMean

    @Option(help: "Auto-Switch: neighbours.")
    var routeK = 10

    @Option(help: "Auto-Switch: neighbour distance, cosine (the best measured) or euclidean (the official code's).")
    var routeDistance: AutoSwitchRouter.Distance = .cosine

    @Option(help: "Auto-Switch: examples per routed batch in the batch modes.")
    var routeBatch = 64

    @Flag(help: "Print JSON for scripts.")
    var json = false

    func validate() throws {
        if maxLength < 2 { throw ValidationError("--max-length must be at least 2 ([CLS] and [SEP]).") }
        if batch < 1 { throw ValidationError("--batch must be at least 1.") }
        if autoSwitch != nil && pack.isEmpty { throw ValidationError("--auto-switch needs the packs to route to (--pack).") }
        if routeK < 1 || routeBatch < 1 { throw ValidationError("--route-k and --route-batch must be at least 1.") }
    }

    /// What produces the features of a task's texts.
    private enum Features {
        case plain(SentenceEncoder)
        case packs(SwitchedEncoder, [SwitchPack])
        case routed(SwitchedEncoder, [SwitchPack], AutoSwitchRouter)
    }

    private func loadSwitching() throws -> (SwitchedEncoder, [SwitchPack], AutoSwitchRouter?)? {
        guard !pack.isEmpty else { return nil }
        let switched = try SwitchedEncoder(basePath: model)
        let packs = try pack.map { try PackFile.read($0) }
        var router: AutoSwitchRouter?
        if let autoSwitch {
            router = try AutoSwitchRouter(
                query: QuerySet(path: autoSwitch, requireLabels: true), k: routeK,
                distance: routeDistance)
        }
        return (switched, packs, router)
    }

    private func features(_ source: Features, texts: [String], progress: ProgressBar) throws -> [Float] {
        let length = maxLength
        switch source {
        case .plain(let encoder):
            return encoder.embed(texts, maxLength: min(length, encoder.encoder.config.maxPositions), batchSize: batch) {
                progress.update($0)
            }
        case .packs(let switched, let packs):
            return try switched.embed(texts, packs: packs, maxLength: min(length, switched.config.maxPositions), batchSize: batch)
        case .routed(let switched, let packs, let router):
            return try switched.embedRouted(
                texts, packs: packs, router: router, mode: routeMode,
                routeBatch: routeBatch, maxLength: min(length, switched.config.maxPositions), batchSize: batch
            ).features
        }
    }

    func run() throws {
        if isDirectory(data) {
            try runTasks()
        } else {
            let source: Features
            if let (switched, packs, router) = try loadSwitching() {
                source = router.map { .routed(switched, packs, $0) } ?? .packs(switched, packs)
            } else {
                source = .plain(try SentenceEncoder(path: model))
            }
            let result = try evaluate(source, headPath: head, dataPath: data, label: "eval")
            if json {
                try printJSON(["accuracy": result.accuracy, "n": result.n, "correct": result.correct, "model": model, "head": head, "data": data])
            } else {
                print("accuracy \(String(format: "%.4f", result.accuracy)) (\(result.correct)/\(result.n))")
            }
        }
    }

    /// Every task folder of `--data` with a `test.jsonl`, with the matching head (and per-task model when MODEL is
    /// a folder of models).
    private func runTasks() throws {
        let fm = FileManager.default
        guard isDirectory(head) else {
            throw ValidationError("--data is a folder of tasks, so --head must be a folder of <task>/head.safetensors; \(head) is not a folder.")
        }
        let (tasks, withoutHead) = TaskFolders.withHeads(data: data, heads: head)
        guard !tasks.isEmpty else {
            throw ValidationError(
                withoutHead.isEmpty
                    ? "\(data): no task folder with a test.jsonl inside."
                    : "\(data): no task folder has a head in \(head) (<task>/head.safetensors).")
        }
        if !withoutHead.isEmpty {
            FileHandle.standardError.write(Data("eval: left out (no head in \(head)): \(withoutHead.joined(separator: ", "))\n".utf8))
        }
        let switching = try loadSwitching()
        let perTaskModels = switching == nil && isDirectory(model) && !fm.fileExists(atPath: "\(model)/config.json")
        let shared = perTaskModels || switching != nil ? nil : try SentenceEncoder(path: model)
        var rows: [(task: String, result: Result)] = []
        for task in tasks {
            let source: Features
            if let (switched, packs, router) = switching {
                if let router {
                    source = .routed(switched, packs, router)
                } else {
                    guard let own = packs.first(where: { $0.task == task }) else {
                        throw ValidationError("No --pack is for task '\(task)' (packs: \(packs.map(\.task).joined(separator: ", "))).")
                    }
                    source = .packs(switched, [own])
                }
            } else if let shared {
                source = .plain(shared)
            } else {
                source = .plain(try SentenceEncoder(path: "\(model)/\(task)"))
            }
            let r = try evaluate(source, headPath: "\(head)/\(task)/head.safetensors", dataPath: "\(data)/\(task)/test.jsonl", label: task)
            rows.append((task, r))
            if !json { print("\(task.padding(toLength: max(14, task.count), withPad: " ", startingAt: 0)) \(String(format: "%.4f", r.accuracy)) (\(r.correct)/\(r.n))") }
        }
        let mean = rows.map(\.result.accuracy).reduce(0, +) / Double(rows.count)
        let n = rows.map(\.result.n).reduce(0, +)
        if json {
            var tasksJSON: [String: Any] = [:]
            for (t, r) in rows { tasksJSON[t] = ["accuracy": r.accuracy, "n": r.n, "correct": r.correct] }
            try printJSON(["accuracy": mean, "mean_accuracy": mean, "n": n, "tasks": tasksJSON, "model": model, "head": head, "data": data])
        } else {
            print("\("mean".padding(toLength: 14, withPad: " ", startingAt: 0)) \(String(format: "%.4f", mean)) (\(rows.count) tasks, \(n) texts)")
        }
    }

    struct Result {
        var accuracy: Double
        var n: Int
        var correct: Int
    }

    private func evaluate(_ source: Features, headPath: String, dataPath: String, label: String) throws -> Result {
        let head = try LinearHead(path: headPath)
        let hidden: Int
        switch source {
        case .plain(let e): hidden = e.hiddenSize
        case .packs(let s, _), .routed(let s, _, _): hidden = s.config.hiddenSize
        }
        guard head.hidden == hidden else {
            throw ValidationError("\(headPath): the head expects \(head.hidden) features, but the model's hidden size is \(hidden).")
        }
        let examples = try TextDataset.read(path: dataPath)
        var labels: [Int] = []
        for (i, e) in examples.enumerated() {
            guard let l = e.label, l >= 0, l < head.classes else {
                throw ValidationError("\(dataPath): line \(i + 1) needs an integer \"label\" in 0..<\(head.classes) (the head's classes).")
            }
            labels.append(l)
        }
        let progress = ProgressBar(total: examples.count, label: label)
        let features = try self.features(source, texts: examples.map(\.text), progress: progress)
        progress.finish()
        let predictions = head.predict(features)
        let correct = zip(predictions, labels).filter { $0 == $1 }.count
        return Result(accuracy: LinearHead.accuracy(predictions: predictions, labels: labels), n: labels.count, correct: correct)
    }

    private func isDirectory(_ path: String) -> Bool {
        var d: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &d) && d.boolValue
    }

    private func printJSON(_ root: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
