import Foundation
import TaskSwitches

/// How Auto-Switch routes test texts to packs (`tswitch eval --auto-switch`).
public struct RoutingSettings: Sendable {
    /// The router: a router file (`.tsr`, LDA) or a labelled query set of base-model features (.safetensors, k-NN).
    public var queryPath: String
    public var k: Int
    public var distance: AutoSwitchRouter.Distance
    public var mode: AutoSwitchRouter.Mode
    /// Examples per routed batch in the batch modes.
    public var batch: Int
    /// How texts with different mixes are embedded (mixed batches, or the earlier regrouping).
    public var batching: SwitchedEncoder.MixedBatching

    public init(
        queryPath: String, k: Int = 10, distance: AutoSwitchRouter.Distance = .cosine,
        mode: AutoSwitchRouter.Mode = .hardBatchMean, batch: Int = 64, batching: SwitchedEncoder.MixedBatching = .mixed
    ) {
        self.queryPath = queryPath
        self.k = k
        self.distance = distance
        self.mode = mode
        self.batch = batch
        self.batching = batching
    }
}

/// What an evaluation reports while it runs: a test set starts (label, texts), texts are done, it ends.
public enum EvaluationProgress {
    case started(label: String, total: Int)
    case advanced(done: Int)
    case finished
}

/// The accuracy of linear heads on labelled test sets with an encoder: plain, with packs applied (T-Switch, the
/// task known) or routed to packs by Auto-Switch. `tswitch eval` is a thin front over this.
///
/// The model is loaded once at `init`: a BERT folder, a base for the packs, or (`isFolderOfModels`, no packs, a
/// folder of tasks) a folder of per-task models loaded one task at a time.
public final class EvaluationRun {
    public let modelPath: String
    public let maxLength: Int
    public let batchSize: Int
    public let routing: RoutingSettings?

    private let switched: SwitchedEncoder?
    private let packs: [SwitchPack]
    private let router: (any TaskRouter)?
    private var shared: SentenceEncoder?

    /// - Parameters:
    ///   - packPaths: packs to apply to the base `model` (none: the model is evaluated as is).
    ///   - routing: route each batch to the packs instead (needs packs).
    ///   - perTaskModels: `model` is a folder of per-task models, loaded per task by `evaluateTasks`.
    public init(
        model: String, packPaths: [String] = [], routing: RoutingSettings? = nil, perTaskModels: Bool = false,
        maxLength: Int, batchSize: Int
    ) throws {
        precondition(maxLength >= 2 && batchSize >= 1, "validated by the caller")
        precondition(routing == nil || !packPaths.isEmpty, "routing needs packs")
        modelPath = model
        self.maxLength = maxLength
        self.batchSize = batchSize
        self.routing = routing
        if packPaths.isEmpty {
            switched = nil
            packs = []
            router = nil
            shared = perTaskModels ? nil : try SentenceEncoder(path: model)
        } else {
            let base = try SwitchedEncoder(basePath: model)
            switched = base
            packs = try packPaths.map { try PackFile.read($0) }
            let fingerprint = base.model.fingerprint
            router = try routing.map { (r) throws -> any TaskRouter in
                // A router file (LDA, `tswitch route --build`) or a labelled query set for k-NN.
                if RouterFile.isRouterFile(r.queryPath) {
                    let lda = try RouterFile.read(r.queryPath)
                    try lda.check(base: fingerprint, file: r.queryPath)
                    return lda
                }
                return try AutoSwitchRouter(
                    query: QuerySet(path: r.queryPath, requireLabels: true), k: r.k, distance: r.distance)
            }
            shared = nil
        }
    }

    /// What produces the features of a task's texts.
    private enum Features {
        case plain(SentenceEncoder)
        case packs(SwitchedEncoder, [SwitchPack])
        case routed(SwitchedEncoder, [SwitchPack], any TaskRouter, RoutingSettings)
    }

    /// One test file: every pack is applied at weight 1 (or the texts are routed).
    public func evaluate(
        headPath: String, dataPath: String, label: String = "eval", progress: (EvaluationProgress) -> Void = { _ in }
    ) throws -> SingleEvaluationReport {
        let source: Features
        if let switched, let router, let routing {
            source = .routed(switched, packs, router, routing)
        } else if let switched {
            source = .packs(switched, packs)
        } else {
            source = .plain(try shared ?? SentenceEncoder(path: modelPath))
        }
        let score = try evaluate(
            source, headPath: headPath, dataPath: dataPath, label: label, ownTask: nil, progress: progress)
        var report = SingleEvaluationReport(score: score, model: modelPath, head: headPath, data: dataPath)
        report.routingLexical = router.map { $0.usesTexts }
        return report
    }

    /// Every task of `dataFolder` (see `TaskDiscovery`) with its head in `headFolder`. With packs, each task gets
    /// the pack made for it (T-Switch with the task known), or every batch is routed over all packs.
    ///
    /// - Parameter scored: called after each task, in task order.
    /// - Throws: `EvaluationError` `.incompatible` when no pack is for a task (and there is no routing).
    public func evaluateTasks(
        headFolder: String, dataFolder: String, progress: (EvaluationProgress) -> Void = { _ in },
        scored: (String, TaskScore) -> Void = { _, _ in }
    ) throws -> TaskEvaluationReport {
        let tasks = try TaskDiscovery.tasks(dataFolder: dataFolder, headFolder: headFolder)
        var rows: [(task: String, score: TaskScore)] = []
        for task in tasks {
            let source: Features
            if let switched {
                if let router, let routing {
                    source = .routed(switched, packs, router, routing)
                } else {
                    guard let own = packs.first(where: { $0.task == task.name }) else {
                        throw EvaluationError(
                            .incompatible,
                            "No --pack is for task '\(task.name)' (packs: \(packs.map(\.task).joined(separator: ", ")))."
                        )
                    }
                    source = .packs(switched, [own])
                }
            } else if let shared {
                source = .plain(shared)
            } else {
                source = .plain(try SentenceEncoder(path: task.modelPath(in: modelPath)))
            }
            let score = try evaluate(
                source, headPath: task.headPath, dataPath: task.testPath, label: task.name, ownTask: task.name,
                progress: progress)
            rows.append((task.name, score))
            scored(task.name, score)
        }
        var report = TaskEvaluationReport(scores: rows, model: modelPath, head: headFolder, data: dataFolder)
        report.routingLexical = router.map { $0.usesTexts }
        return report
    }

    /// - Parameter ownTask: the test set's task, when known: routed evaluations then score the routing too.
    private func evaluate(
        _ source: Features, headPath: String, dataPath: String, label: String, ownTask: String?,
        progress: (EvaluationProgress) -> Void
    ) throws -> TaskScore {
        let head = try LinearHead(path: headPath)
        let hidden: Int
        switch source {
        case .plain(let e): hidden = e.hiddenSize
        case .packs(let s, _), .routed(let s, _, _, _): hidden = s.config.hiddenSize
        }
        guard head.hidden == hidden else {
            throw EvaluationError(
                .incompatible,
                "\(headPath): the head expects \(head.hidden) features, but the model's hidden size is \(hidden).")
        }
        let examples = try TextDataset.read(path: dataPath)
        var labels: [Int] = []
        for (i, e) in examples.enumerated() {
            guard let l = e.label, l >= 0, l < head.classes else {
                throw EvaluationError(
                    .invalidData,
                    "\(dataPath): line \(i + 1) needs an integer \"label\" in 0..<\(head.classes) (the head's classes)."
                )
            }
            labels.append(l)
        }
        progress(.started(label: label, total: examples.count))
        let (features, weights) = try self.features(source, texts: examples.map(\.text), progress: progress)
        progress(.finished)
        let predictions = head.predict(features)
        let right = zip(predictions, labels).map { $0 == $1 }
        var routing: RoutingScore?
        if let ownTask, let weights, case .routed(_, let packs, _, _) = source {
            routing = RoutingScore(
                task: ownTask, destinations: RoutingScore.destinations(weights: weights, packTasks: packs.map(\.task)),
                correct: right)
        }
        return TaskScore(
            accuracy: LinearHead.accuracy(predictions: predictions, labels: labels),
            correct: right.filter { $0 }.count, n: labels.count, routing: routing)
    }

    /// The features of `texts`, and with routing each text's switch weights (in pack order).
    private func features(_ source: Features, texts: [String], progress: (EvaluationProgress) -> Void) throws
        -> ([Float], [[Double]]?)
    {
        switch source {
        case .plain(let encoder):
            // `embed` takes an optional (so escaping) closure but calls it only while it runs.
            let features = withoutActuallyEscaping(progress) { progress in
                encoder.embed(
                    texts, maxLength: min(maxLength, encoder.maxSequenceLength), batchSize: batchSize
                ) { progress(.advanced(done: $0)) }
            }
            return (features, nil)
        case .packs(let switched, let packs):
            let features = try switched.embed(
                texts, packs: packs, maxLength: min(maxLength, switched.config.maxSequenceLength), batchSize: batchSize)
            return (features, nil)
        case .routed(let switched, let packs, let router, let routing):
            let routed = try switched.embedRouted(
                texts, packs: packs, router: router, mode: routing.mode, routeBatch: routing.batch,
                maxLength: min(maxLength, switched.config.maxSequenceLength), batchSize: batchSize,
                batching: routing.batching)
            return (routed.features, routed.weights)
        }
    }
}
