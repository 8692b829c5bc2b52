import ArgumentParser
import CheckpointIO
import Evaluation
import Foundation
import TaskSwitches

/// Which router `route --build` writes.
enum RouterKind: String, ExpressibleByArgument, CaseIterable {
    /// LDA task prototypes with a shared covariance (per-example routing, `RouterFile`); the default.
    case lda
    /// The paper's k-NN query set (`AutoSwitchRouter`).
    case knn
}

struct RouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route",
        abstract: "Auto-Switch: route features to task switches by k-NN over a labelled query set; score it.",
        discussion: """
            QUERIES is a safetensors file with 'features' [N, D], 'labels' (I64 task index) and metadata 'tasks' \
            (JSON array of names): ~100 base-model features per task, kept next to the packs. FEATURES has \
            'features' [M, D] from the same base model (e.g. `tswitch embed`), optionally 'labels' and 'tasks'. \
            Prints the switch weights per batch (or per example) and, with labels, the routing accuracy. \
            --all scores every mode x distance (labels needed). Defaults (cosine, hard-batch, k = 10) are the best \
            measured on the 8-task benchmark (docs/bench-switch.md): Euclidean k-NN on raw mean-pooled features \
            routes 25 % of examples to their task, cosine 77 % per example and 100 % per single-task batch. \
            With examples of mixed tasks in one stream, use --batch 1. \
            --build ROUTER.tsr --base BASE TASK=train.jsonl … fits the per-example LDA router on every base layer \
            after the embeddings, λ = 0.01: the best router measured, 97.5 % of the 8 tasks' test texts routed to \
            their task (tuned on train, docs/routing.md); --layers final fits it on the final embedding (91.5 %). \
            From texts the router also carries lexical evidence (naive Bayes over hashed character 1-4-grams, its \
            smoothing, weight and length power tuned on the held-out train rows; kept only when it routes them \
            better; --no-lexical: LDA only), used whenever the texts are at hand: \
            tswitch route ROUTER.tsr --base BASE [TASK=]TEXTS.jsonl … embeds and routes texts, and \
            tswitch route ROUTER.tsr FEATURES --texts TEXTS.jsonl routes features with their texts.
            """)

    @Argument(
        help:
            "QUERIES FEATURES, or with --build: TASK=FILE pairs, FILE per-task features (e.g. from `tswitch embed`) or a JSONL of {\"text\": …} lines (embedded with --base)."
    )
    var inputs: [String]

    @Option(
        help: "Build a router from TASK=FILE pairs and write it here (--kind lda: a router file; knn: a query set).")
    var build: String?

    @Option(
        help: """
            With --build: lda (per-example LDA router file) or knn (the paper's query set). Default: knn when the \
            output ends in .safetensors (a query set, as before), lda otherwise (e.g. router.tsr).
            """)
    var kind: RouterKind?

    /// The kind `--build` writes: as given, or read off the output name so that existing query-set builds
    /// (`--build queries.safetensors`) keep their meaning.
    var buildKind: RouterKind {
        if let kind { return kind }
        return (build ?? "").hasSuffix(".safetensors") ? .knn : .lda
    }

    @Option(
        help: """
            With --build --kind lda: covariance shrinkage λ in (0, 1]; default 0.01 on layer features, 0.03 on the \
            final embedding (docs/routing.md).
            """)
    var shrinkage: Double?

    /// The shrinkage an LDA build fits with: as given, else the study's choice for the features it reads.
    func fitShrinkage(layered: Bool) -> Double {
        shrinkage ?? (layered ? LDARouter.defaultLayerShrinkage : LDARouter.defaultShrinkage)
    }

    @Option(
        help:
            "With --build: the base model folder, whose fingerprint an LDA router records and which embeds JSONL inputs."
    )
    var base: String?

    @Option(help: "With --build and JSONL inputs: embed the first N lines of each file.")
    var perTask: Int = 1000

    @Option(
        help: ArgumentHelp(
            "With --build --kind lda and JSONL inputs: route on these base layers' mean-pooled states (0 = embeddings, e.g. 3-6 or 1,3,6), each at unit length, concatenated, or on the final embedding (final). Default: with every input a JSONL, every layer after the embeddings (1-6 on MiniLM-L6, the best router measured, docs/routing.md); else final.",
            valueName: "layers"),
        transform: Parse.layers)
    var layers: [Int]?

    @Flag(help: "With --build from JSONL texts: fit the LDA router alone, without lexical evidence.")
    var noLexical = false

    @Option(help: "With --build from texts: fix the lexical naive Bayes smoothing α (> 0) instead of tuning it.")
    var lexicalAlpha: Double?

    @Option(help: "With --build from texts: fix the lexical weight w (≥ 0; 0: none) instead of tuning it.")
    var lexicalWeight: Double?

    @Option(help: "With --build from texts: fix the lexical length power p (0 … 4) instead of tuning it.")
    var lexicalPower: Double?

    @Option(
        help:
            "Routing features with a router file that has lexical evidence: the JSONL of their texts, one line per feature row."
    )
    var texts: String?

    @Flag(help: "With a router file and --json: also print each example's LDA scores and lexical log-likelihoods.")
    var scores = false

    @Option(help: "Neighbours.")
    var k: Int = 10

    @Option(help: "Distance: cosine or euclidean (the official code's).")
    var distance: AutoSwitchRouter.Distance = .cosine

    @Option(
        help:
            "How neighbour shares become switch weights: per-example, soft-batch (official ViT) or hard-batch (official RoBERTa)."
    )
    var mode: AutoSwitchRouter.Mode = .hardBatchMean

    @Option(help: "Batch size of the batch modes.")
    var batch: Int = 256

    @Flag(help: "Score every mode and distance on labelled features.")
    var all = false

    @OptionGroup
    var format: JSONOption

    func validate() throws {
        guard k >= 1 else { throw ValidationError("--k must be at least 1; got \(k).") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1; got \(batch).") }
        if build != nil {
            guard !inputs.isEmpty else {
                throw ValidationError("With --build, give TASK=FILE pairs (one features file per task).")
            }
            for pair in inputs {
                let file = try Parse.taskFile(pair)
                if file.path.hasSuffix(".jsonl"), base == nil {
                    throw ValidationError("\(file.path) is a JSONL of texts: give --base, the model that embeds them.")
                }
            }
            guard perTask >= 1 else { throw ValidationError("--per-task must be at least 1; got \(perTask).") }
            if let layers, !layers.isEmpty {
                guard buildKind == .lda else { throw ValidationError("--layers is for LDA routers (--kind lda).") }
            }
            if lexicalAlpha != nil || lexicalWeight != nil || lexicalPower != nil {
                guard allTexts, !noLexical, buildKind == .lda else {
                    throw ValidationError(
                        "--lexical-alpha, --lexical-weight and --lexical-power need an LDA build from JSONL texts without --no-lexical."
                    )
                }
            }
            if let a = lexicalAlpha, !(a > 0) { throw ValidationError("--lexical-alpha must be > 0; got \(a).") }
            if let w = lexicalWeight, !(w >= 0) { throw ValidationError("--lexical-weight must be ≥ 0; got \(w).") }
            if let p = lexicalPower, !(p >= 0 && p <= 4) {
                throw ValidationError("--lexical-power must be in [0, 4]; got \(p).")
            }
        } else if inputs.count >= 2, inputs.dropFirst().allSatisfy(Self.isTextInput) {
            guard base != nil else {
                throw ValidationError("Routing JSONL texts needs --base, the model that embeds them.")
            }
            guard texts == nil else { throw ValidationError("--texts is for routing a FEATURES file.") }
        } else if inputs.count != 2 {
            throw ValidationError(
                "Give QUERIES and FEATURES (two .safetensors files), or ROUTER.tsr and [TASK=]TEXTS.jsonl files with --base."
            )
        }
    }

    /// A JSONL of texts to route, bare or as TASK=FILE.
    static func isTextInput(_ s: String) -> Bool { s.hasSuffix(".jsonl") }

    /// Whether every TASK=FILE input is a JSONL of texts (which `--build` embeds with the base).
    private var allTexts: Bool { inputs.allSatisfy { (try? Parse.taskFile($0))?.path.hasSuffix(".jsonl") == true } }

    /// The base layers an LDA build reads: as given (`final`: none); else, when every input is a JSONL of texts,
    /// every layer after the embeddings (1 … L of the base); else what the features files say they hold
    /// (`tswitch embed --layers` records it; none: sentence embeddings).
    private func lDALayers(_ files: [String: QuerySet]) throws -> [Int] {
        if let layers { return layers }
        if allTexts, let base { return Array(1...max(1, try EncoderLoader(path: base).config.layerCount)) }
        var said: [Int]?
        for pair in try inputs.map(Parse.taskFile) {
            guard let file = files[pair.path] else { continue }
            let own = file.layers ?? []
            if let said, said != own {
                throw ValidationError(
                    "\(pair.path) holds features of \(Self.describe(own)), an earlier input of \(Self.describe(said)); give features of one kind (tswitch embed --layers)."
                )
            }
            said = own
        }
        return said ?? []
    }

    /// "layers 3,4,5,6" or "the sentence embedding".
    static func describe(_ layers: [Int]) -> String {
        layers.isEmpty ? "the sentence embedding" : "layers \(layers.map(String.init).joined(separator: ","))"
    }

    /// The TASK=FILE inputs that are features files (not JSONL texts the base embeds), read once, by path.
    private func featureFiles() throws -> [String: QuerySet] {
        var files: [String: QuerySet] = [:]
        for pair in try inputs.map(Parse.taskFile) where !pair.path.hasSuffix(".jsonl") || base == nil {
            if files[pair.path] == nil { files[pair.path] = try QuerySet(path: pair.path, requireLabels: false) }
        }
        return files
    }

    /// Each TASK=FILE input as features: a features file as read by `featureFiles`, or a JSONL's first `perTask`
    /// texts embedded with the base model (on `layers`; empty: the final embedding).
    private func parts(layers: [Int], files: [String: QuerySet]) throws -> [(task: String, features: QuerySet)] {
        try textParts(layers: layers, files: files).map { ($0.task, $0.features) }
    }

    /// `parts`, with each JSONL input's texts (nil for a features file).
    private func textParts(layers: [Int], files: [String: QuerySet]) throws -> [(
        task: String, features: QuerySet, texts: [String]?
    )] {
        var encoder: SentenceEncoder?
        var parts: [(task: String, features: QuerySet, texts: [String]?)] = []
        for pair in try inputs.map(Parse.taskFile) {
            if let f = files[pair.path] {
                if let own = f.layers, own != layers {
                    throw ValidationError(
                        "\(pair.path) holds features of \(Self.describe(own)); the router is built on \(Self.describe(layers))."
                    )
                }
                parts.append((pair.task, f, nil))
                continue
            }
            // Without a base every input is a features file (`featureFiles`), so only JSONL texts reach here.
            guard let base else { preconditionFailure("a JSONL input without --base passed validation") }
            let texts = try TextDataset.read(path: pair.path).prefix(perTask).map(\.text)
            let e = try encoder ?? SentenceEncoder(path: base)
            encoder = e
            FileHandle.standardError.write(Data("\(pair.task): embedding \(texts.count) texts of \(pair.path)\n".utf8))
            // LDA routers work on unit-length features (LDARouter.wantsUnitFeatures), query sets on raw ones.
            let f = try e.routerFeatures(
                Array(texts), layers: layers, normalize: buildKind == .lda, maxLength: 128, batchSize: 64)
            parts.append(
                (
                    pair.task,
                    QuerySet(
                        features: f, count: texts.count, dimension: max(1, layers.count) * e.hiddenSize,
                        labels: nil,
                        tasks: []),
                    Array(texts)
                ))
        }
        return parts
    }

    /// Stacks per-task feature files into one labelled file.
    private func buildSet(_ out: String) throws {
        let set = try QuerySet.combine(try parts(layers: [], files: try featureFiles()))
        try set.write(to: out)
        print(
            "\(out): \(set.count) labelled examples of \(set.dimension) features, tasks \(set.tasks.joined(separator: ", "))"
        )
    }

    /// Fits and writes an LDA router file.
    private func buildLDA(_ out: String) throws {
        let fp = try base.map { try BaseFingerprint(model: try ModelFolder(path: $0)) }
        let files = try featureFiles()
        let layers = try lDALayers(files)
        let lambda = fitShrinkage(layered: !layers.isEmpty)
        let parts = try textParts(layers: layers, files: files)
        let set = try QuerySet.combine(parts.map { ($0.task, $0.features) })
        let router: LDARouter
        var lexicalNote = ""
        let texts = parts.allSatisfy { $0.texts != nil } ? parts.flatMap { $0.texts ?? [] } : nil
        if let texts, !noLexical {
            let knobs = LDARouter.LexicalKnobs(alpha: lexicalAlpha, weight: lexicalWeight, power: lexicalPower)
            let (fitted, tuning) = try LDARouter.fit(
                set, texts: texts, knobs: knobs, shrinkage: lambda, baseFingerprint: fp, layers: layers)
            router = fitted
            if let t = tuning {
                lexicalNote = String(
                    format: "; held-out train rows (%d) routed %.2f%% by the LDA alone, %.2f%% with lexical evidence",
                    t.heldOut, 100 * t.ldaRouted, 100 * t.lexicalRouted)
            }
            if let x = router.lexical {
                lexicalNote =
                    ", lexical evidence (char \(x.minOrder)-\(x.maxOrder)-grams, \(x.buckets) buckets, α = \(x.alpha), w = \(x.weight), p = \(x.power))"
                    + lexicalNote
            } else {
                lexicalNote = ", no lexical evidence (it did not route the held-out rows better)" + lexicalNote
            }
        } else {
            router = try LDARouter.fit(set, shrinkage: lambda, baseFingerprint: fp, layers: layers)
        }
        let size = try RouterFile.write(router, to: out)
        print(
            "\(out): LDA router, \(router.tasks.count) tasks, \(router.dimension) features\(router.layers.isEmpty ? " (final embedding)" : " (layers \(router.layers.map(String.init).joined(separator: ",")))"), λ = \(lambda), \(size) bytes\(lexicalNote)"
        )
    }

    /// Routes with an LDA router file: one task (or the base) per example, with lexical evidence when the router
    /// has it and `texts` are given.
    private func runLDA(_ router: LDARouter, _ f: QuerySet, texts: [String]?) throws {
        let routes = try router.route(f, texts: texts)
        let lexical = router.lexical != nil && texts != nil
        var correct: Int?
        var perTask: [String: Double]?
        if let labels = f.labels {
            var c = 0
            var right = [Int](repeating: 0, count: f.tasks.count)
            var total = [Int](repeating: 0, count: f.tasks.count)
            for (i, r) in routes.enumerated() {
                total[labels[i]] += 1
                if r.map({ router.tasks[$0] }) == f.tasks[labels[i]] {
                    c += 1
                    right[labels[i]] += 1
                }
            }
            correct = c
            perTask = Dictionary(
                uniqueKeysWithValues: f.tasks.indices.filter { total[$0] > 0 }.map {
                    (f.tasks[$0], Double(right[$0]) / Double(total[$0]))
                })
        }
        let meanTask = perTask.map { $0.values.reduce(0, +) / Double(max(1, $0.count)) }
        let toBase = routes.filter { $0 == nil }.count
        if format.json {
            var report = LDARoutingReport(
                kind: "lda", tasks: router.tasks, routes: routes.map { $0.map { router.tasks[$0] } ?? "base" },
                toBase: toBase, accuracy: correct.map { Double($0) / Double(max(1, f.count)) }, lexical: lexical,
                taskAccuracy: perTask, meanTaskAccuracy: meanTask)
            if scores {
                report.ldaScores = try router.scores(f).map { $0.map(Double.init) }
                if let x = router.lexical, let texts { report.lexicalLogLikelihoods = texts.map(x.logLikelihoods) }
            }
            print(try ReportJSON.text(report, pretty: true))
            return
        }
        for (i, r) in routes.enumerated() {
            print("\(i)\t\(r.map { router.tasks[$0] } ?? "base (out of distribution)")")
        }
        print("\(toBase) of \(f.count) examples out of distribution (to the base)")
        if router.lexical != nil {
            print(lexical ? "lexical evidence used" : "lexical evidence not used (no texts; give --texts)")
        }
        if let correct {
            print(
                String(
                    format: "routing accuracy %.2f%% (%d examples)", 100 * Double(correct) / Double(max(1, f.count)),
                    f.count))
            if let perTask, let meanTask, perTask.count > 1 {
                for t in f.tasks where perTask[t] != nil {
                    print(String(format: "  %@ %.2f%%", t, 100 * (perTask[t] ?? 0)))
                }
                print(String(format: "mean over tasks %.2f%% (%d tasks)", 100 * meanTask, perTask.count))
            }
        }
    }

    /// `route ROUTER.tsr --base BASE [TASK=]TEXTS.jsonl …`: the texts embedded on the router's features (as
    /// `--build` embeds them), labelled when every file names its task.
    private func routeTexts(_ router: LDARouter, routerPath: String) throws {
        guard let base else { preconditionFailure("validated: JSONL inputs need --base") }
        try router.check(base: try BaseFingerprint(model: try ModelFolder(path: base)), file: routerPath)
        let encoder = try SentenceEncoder(path: base)
        let files = inputs.dropFirst().map { s in
            s.contains("=") ? ((try? TaskFile(parsing: s)) ?? TaskFile(task: "", path: s)) : TaskFile(task: "", path: s)
        }
        let labelled = files.allSatisfy { !$0.task.isEmpty }
        var taskNames: [String] = []
        var all: [String] = []
        var labels: [Int] = []
        for file in files {
            let texts = try TextDataset.read(path: file.path).map(\.text)
            if labelled {
                if !taskNames.contains(file.task) { taskNames.append(file.task) }
                labels += Array(repeating: taskNames.firstIndex(of: file.task) ?? 0, count: texts.count)
            }
            all += texts
        }
        FileHandle.standardError.write(Data("route: embedding \(all.count) texts\n".utf8))
        let width = max(1, router.layers.count) * encoder.hiddenSize
        guard width == router.dimension else {
            throw ValidationError(
                "\(routerPath) reads \(router.dimension) features; \(base) gives \(width) on \(Self.describe(router.layers))."
            )
        }
        let f = try encoder.routerFeatures(all, layers: router.layers, normalize: true, maxLength: 128, batchSize: 64)
        try runLDA(
            router,
            QuerySet(
                features: f, count: all.count, dimension: width, labels: labelled ? labels : nil,
                tasks: labelled ? taskNames : []), texts: all)
    }

    func run() throws {
        if let build { return buildKind == .lda ? try buildLDA(build) : try buildSet(build) }
        if RouterFile.isRouterFile(inputs[0]) {
            let router = try RouterFile.read(inputs[0])
            if inputs.dropFirst().allSatisfy(Self.isTextInput) { return try routeTexts(router, routerPath: inputs[0]) }
            let features = try QuerySet(path: inputs[1], requireLabels: false)
            if let own = features.layers, own != router.layers {
                throw ValidationError(
                    "\(inputs[1]) holds features of \(Self.describe(own)); the router \(inputs[0]) reads \(Self.describe(router.layers)) (tswitch embed --layers \(router.layers.isEmpty ? "final" : router.layers.map(String.init).joined(separator: ",")))."
                )
            }
            let lines = try texts.map { try TextDataset.read(path: $0).map(\.text) }
            if let lines, lines.count != features.count {
                throw ValidationError(
                    "\(texts ?? ""): \(lines.count) texts for the \(features.count) feature rows of \(inputs[1]); give one line per row."
                )
            }
            return try runLDA(router, features, texts: lines)
        }
        let q = try QuerySet(path: inputs[0], requireLabels: true)
        let f = try QuerySet(path: inputs[1], requireLabels: false)
        if all {
            let sweep = try RoutingSweepReport(query: q, features: f, k: k, batch: batch)
            if format.json {
                print(try ReportJSON.text(sweep, pretty: true))
            } else {
                print("k = \(k), batch = \(batch), \(f.count) examples, \(q.tasks.count) tasks")
                print("distance   mode          accuracy  own-task weight")
                for r in sweep.results {
                    print(
                        String(format: "%-10@ %-13@ %7.2f%%  %.4f", r.distance, r.mode, 100 * r.accuracy, r.ownWeight))
                }
            }
            return
        }
        let router = try AutoSwitchRouter(
            query: q, k: k, distance: distance)
        let m = mode
        let w = try router.weights(f, mode: m, batchSize: batch)
        let score = f.labels == nil ? nil : try router.score(f, mode: m, batchSize: batch)
        if format.json {
            print(try ReportJSON.text(RoutingReport(router: router, mode: m, weights: w, score: score), pretty: true))
            return
        }
        let step = m == .perExample ? 1 : batch
        print(
            "example  "
                + q.tasks.map { String($0.prefix(11)).padding(toLength: 12, withPad: " ", startingAt: 0) }.joined()
                + "-> switch")
        for i in stride(from: 0, to: w.count, by: step) {
            let cells = w[i].map { String(format: "%-12.3f", $0) }.joined()
            let label = m == .perExample ? String(i) : "\(i)-\(min(w.count, i + step) - 1)"
            print(
                label.padding(toLength: 9, withPad: " ", startingAt: 0) + cells + "-> "
                    + q.tasks[AutoSwitchRouter.argmax(w[i])])
        }
        if let score {
            print(
                String(
                    format: "routing accuracy %.2f%% (%d examples), mean own-task weight %.4f", 100 * score.accuracy,
                    score.examples, score.ownWeight))
        }
    }
}

/// `tswitch route ROUTER.tsr FEATURES --json`: the task (or "base") of each example.
private struct LDARoutingReport: Encodable {
    let kind: String
    let tasks: [String]
    let routes: [String]
    let toBase: Int
    let accuracy: Double?
    /// Whether lexical evidence was added (the router has it and the texts were given).
    let lexical: Bool
    let taskAccuracy: [String: Double]?
    let meanTaskAccuracy: Double?
    var ldaScores: [[Double]]?
    /// Per example, the naive Bayes log-likelihood of its text under each task (before the weight and length power).
    var lexicalLogLikelihoods: [[Double]]?

    enum CodingKeys: String, CodingKey {
        case kind, tasks, routes, accuracy, lexical
        case toBase = "to_base"
        case taskAccuracy = "task_accuracy"
        case meanTaskAccuracy = "mean_task_accuracy"
        case ldaScores = "lda_scores"
        case lexicalLogLikelihoods = "lexical_log_likelihoods"
    }
}
