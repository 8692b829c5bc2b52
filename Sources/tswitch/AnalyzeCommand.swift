import Analysis
import ArgumentParser
import CheckpointIO
import Evaluation
import Foundation
import TaskSwitches

struct AnalyzeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "analyze",
        abstract: "The pulse-like experiment on weight statistics: kept |tau| mass and L2 energy vs drop ratio.",
        discussion: """
            Compares discarding the smallest entries (P-Discard, per sign), the largest, and random entries, over \
            every float tensor of fine-tune - base. With --codings, also measures the pack's coder against zstd \
            and the official group-of-4 layout at several densities, next to the entropy floor H(d)+d.

            With --head and --data, the accuracy side instead, in memory: for each drop ratio of --drops and each \
            strategy, the task vector is cut, optionally binarized to sign x lambda (--scales; the paper's is rms), \
            added to the base and the encoder is scored on the test set. --data may be a folder of tasks (as in \
            `tswitch eval`); FINETUNED is then a folder of per-task fine-tunes (zoo/<task>/) and the accuracy is \
            averaged over the tasks. The pre-trained and fine-tuned accuracy on the same examples are reported too.
            """)

    @Argument(help: "The base model (file or folder).")
    var base: String

    @Argument(help: "The fine-tuned model with the same tensors.")
    var finetuned: String

    @Option(help: "Write an SVG line plot of the kept shares to this file.")
    var plot: String?

    @Flag(help: "Also measure candidate mask/sign codings (slower: one P-Discard per density).")
    var codings = false

    @Option(help: "Seed of the random strategy.")
    var seed: UInt64 = 0

    @OptionGroup
    var format: JSONOption

    @Option(help: "Accuracy sweep: the head (file, or folder of <task>/head.safetensors with a folder --data).")
    var head: String?

    @Option(help: "Accuracy sweep: labelled JSONL test file, or a folder of task folders holding test.jsonl.")
    var data: String?

    @Option(
        help: "Accuracy sweep: drop ratios in [0, 1), comma-separated (default 0.5,0.7,0.9,0.95,0.99).",
        transform: {
            try Parse.list($0, expected: "a drop ratio in [0, 1)") {
                Double($0).flatMap { $0 >= 0 && $0 < 1 ? $0 : nil }
            }
        })
    var drops: [Double] = [0.5, 0.7, 0.9, 0.95, 0.99]

    @Option(
        help: "Accuracy sweep: strategies, comma-separated (default discard-low,discard-high,random).",
        transform: {
            try Parse.list(
                $0, expected: "one of \(DropSweep.Strategy.allCases.map(\.rawValue).joined(separator: ", "))"
            ) {
                DropSweep.Strategy(rawValue: $0)
            }
        })
    var strategies: [DropSweep.Strategy] = DropSweep.Strategy.allCases

    @Option(
        help:
            "Accuracy sweep: scales of the binarized runs, comma-separated (default rms = the paper's; mean-abs, row-rms, row-mean-abs).",
        transform: {
            try Parse.list($0, expected: "one of \(DropSweep.Scale.allCases.map(\.rawValue).joined(separator: ", "))") {
                DropSweep.Scale(rawValue: $0)
            }
        })
    var scales: [DropSweep.Scale] = [.rms]

    @Flag(help: "Accuracy sweep: only the binarized runs (no runs keeping the original values).")
    var binarizedOnly = false

    @Option(help: "Accuracy sweep: tensors (unprefixed BERT names) left at the base values, comma-separated.")
    var exclude = ""

    @Option(help: "Accuracy sweep: at most this many test examples per task, evenly spaced over the file.")
    var limit: Int?

    @Flag(help: "Accuracy sweep: skip the pre-trained and fine-tuned reference runs.")
    var noReferences = false

    @OptionGroup(title: "Accuracy sweep: encoder")
    var encoder: EncoderOptions<EvalDefaults>

    func validate() throws {
        if (head == nil) != (data == nil) {
            throw ValidationError("--head and --data go together (the accuracy sweep).")
        }
        if head != nil && codings {
            throw ValidationError("--codings is part of the weight-statistics analysis, not the accuracy sweep.")
        }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1.") }
    }

    func run() throws {
        if let head, let data {
            try runSweep(head: head, data: data)
            return
        }
        let b = try ModelFolder(path: base)
        let f = try ModelFolder(path: finetuned)
        let bar = ProgressBar(total: b.tensorNames.count, label: "analyze")
        let pulse = try PulseAnalysis(base: b, fineTuned: f, seed: seed) { done, _ in bar.update(done) }
        bar.finish()
        let study =
            codings ? try CodingStudy.run(base: b, fineTuned: f, dropRatios: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]) : []
        if let plot { try writePlot(pulse, to: plot) }
        let strategies = PulseAnalysis.Strategy.allCases
        if format.json {
            var root: [String: Any] = [
                "parameters": pulse.parameters, "tensors": pulse.tensors,
                "points": pulse.points.map { p in
                    [
                        "drop_ratio": p.dropRatio,
                        "mass": Dictionary(uniqueKeysWithValues: strategies.map { ($0.rawValue, p.mass[$0] ?? 0) }),
                        "energy": Dictionary(uniqueKeysWithValues: strategies.map { ($0.rawValue, p.energy[$0] ?? 0) }),
                    ] as [String: Any]
                },
            ]
            if codings {
                root["codings"] = study.map { r in
                    [
                        "drop_ratio": r.dropRatio, "density": r.density, "parameters": r.parameters,
                        "floor_bits_per_parameter": r.floorBits / Double(r.parameters),
                        "bits_per_parameter": Dictionary(
                            uniqueKeysWithValues: r.bits.map { ($0.key, $0.value / Double(r.parameters)) }),
                    ] as [String: Any]
                }
            }
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print(
            "\(pulse.tensors) tensors, \(Format.count(pulse.parameters)) parameters; kept share of sum|tau| (mass) and sum tau^2 (energy)"
        )
        print(
            "drop   " + strategies.map { pad("mass " + $0.rawValue, 20) }.joined()
                + strategies.map { pad("energy " + $0.rawValue, 22) }.joined())
        for p in pulse.points {
            let cells =
                strategies.map { pad(String(format: "%.4f", p.mass[$0] ?? 0), 20) }.joined()
                + strategies.map { pad(String(format: "%.4f", p.energy[$0] ?? 0), 22) }.joined()
            print(String(format: "%.2f   ", p.dropRatio) + cells)
        }
        if codings {
            print("\ncodings, bits per parameter (ratio to the floor H(d)+d):")
            print(
                pad("drop", 6) + pad("density", 9) + pad("floor", 8) + CodingStudy.codings.map { pad($0, 26) }.joined())
            for r in study {
                let n = Double(r.parameters)
                let cells = CodingStudy.codings.map { c in
                    let v = (r.bits[c] ?? 0) / n
                    return pad(String(format: "%.4f (%.3fx)", v, v / (r.floorBits / n)), 26)
                }.joined()
                print(
                    pad(String(format: "%.2f", r.dropRatio), 6) + pad(String(format: "%.4f", r.density), 9)
                        + pad(String(format: "%.4f", r.floorBits / n), 8) + cells)
            }
        }
        if let plot { print("plot: \(plot)") }
    }

    private func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
    }

    private func writePlot(_ pulse: PulseAnalysis, to path: String) throws {
        let colors: [PulseAnalysis.Strategy: String] = [
            .discardLow: "#1f77b4", .discardHigh: "#d62728", .random: "#2ca02c",
        ]
        var series: [LinePlot.Series] = []
        for s in PulseAnalysis.Strategy.allCases {
            series.append(
                .init(
                    label: "\(s.rawValue) |τ| mass", color: colors[s] ?? "#000",
                    points: pulse.points.map { ($0.dropRatio, $0.mass[s] ?? 0) }))
            series.append(
                .init(
                    label: "\(s.rawValue) L2 energy", color: colors[s] ?? "#000", dashed: true,
                    points: pulse.points.map { ($0.dropRatio, $0.energy[s] ?? 0) }))
        }
        let chart = LinePlot(
            title: "Kept share of the task vector vs drop ratio", xLabel: "drop ratio α", yLabel: "kept share",
            xRange: 0...1, yRange: 0...1, series: series)
        let out = try FileOutput(target: path)
        try out.write(Array(chart.svg().utf8))
        try out.commit()
    }

    private func list(_ s: String) -> [String] {
        s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// The accuracy side of the pulse-like experiment (see `DropSweep`).
    private func runSweep(head: String, data: String) throws {
        let ratios = drops
        let strategyList = strategies
        let scaleList = scales
        var settings: [DropSweep.Setting] = []
        for s in strategyList {
            for a in ratios {
                if !binarizedOnly { settings.append(.init(strategy: s, dropRatio: a, scale: nil)) }
                for c in scaleList { settings.append(.init(strategy: s, dropRatio: a, scale: c)) }
            }
        }
        let tasks: [(name: String, test: String, head: String, model: String)]
        if TaskDiscovery.isDirectory(data) {
            tasks = try TaskDiscovery.tasks(dataFolder: data, headFolder: head).map {
                ($0.name, $0.testPath, $0.headPath, $0.modelPath(in: finetuned))
            }
        } else {
            tasks = [(URL(fileURLWithPath: data).deletingLastPathComponent().lastPathComponent, data, head, finetuned)]
        }
        let sweep = try DropSweep(basePath: base)
        let excluded = Set(list(exclude))
        // Per setting: per task (correct, n), and the footprint summed over the tasks' vectors.
        var results = [[(correct: Int, n: Int)]](repeating: [], count: settings.count)
        var footprints = [DropSweep.Footprint](repeating: .init(), count: settings.count)
        var pre: [(correct: Int, n: Int)] = []
        var fine: [(correct: Int, n: Int)] = []
        for task in tasks {
            let linear = try LinearHead(path: task.head)
            let examples = try TextDataset.read(path: task.test)
            let rows = DropSweep.subsample(examples.count, limit: limit)
            var labels: [Int] = []
            for i in rows {
                guard let l = examples[i].label, l >= 0, l < linear.classes else {
                    throw ValidationError(
                        "\(task.test): line \(i + 1) needs an integer \"label\" in 0..<\(linear.classes).")
                }
                labels.append(l)
            }
            let texts = rows.map { examples[$0].text }
            func score(_ encoder: SentenceEncoder) -> (correct: Int, n: Int) {
                let predictions = linear.predict(
                    encoder.embed(texts, maxLength: self.encoder.maxLength, batchSize: self.encoder.batch))
                return (zip(predictions, labels).filter { $0 == $1 }.count, labels.count)
            }
            let bar = ProgressBar(total: settings.count + 2, label: task.name)
            if !noReferences {
                pre.append(score(try sweep.encoder(nil, setting: nil).0))
                fine.append(score(try SentenceEncoder(path: task.model)))
            }
            bar.update(2)
            let vector = try sweep.taskVector(fineTunedPath: task.model, excluding: excluded, seed: seed)
            for (j, setting) in settings.enumerated() {
                let (encoder, footprint) = try sweep.encoder(vector, setting: setting)
                results[j].append(score(encoder))
                footprints[j].parameters += footprint.parameters
                footprints[j].kept += footprint.kept
                footprints[j].floorBits += footprint.floorBits
                footprints[j].scaleCount += footprint.scaleCount
                bar.update(j + 3)
            }
            bar.finish()
        }
        func mean(_ r: [(correct: Int, n: Int)]) -> Double {
            r.isEmpty ? 0 : r.map { Double($0.correct) / Double($0.n) }.reduce(0, +) / Double(r.count)
        }
        func perTask(_ r: [(correct: Int, n: Int)]) -> [String: Any] {
            Dictionary(
                uniqueKeysWithValues: zip(tasks, r).map {
                    (
                        $0.name,
                        ["accuracy": Double($1.correct) / Double($1.n), "correct": $1.correct, "n": $1.n]
                            as [String: Any]
                    )
                })
        }
        if let plot {
            try writeAccuracyPlot(
                settings: settings, accuracy: results.map(mean), pre: mean(pre), fine: mean(fine), to: plot)
        }
        if format.json {
            var root: [String: Any] = [
                "tasks": tasks.map(\.name), "limit": limit as Any, "excluded": excluded.sorted(),
                "settings": settings.enumerated().map { j, s in
                    let f = footprints[j]
                    return [
                        "strategy": s.strategy.rawValue, "values": s.scale?.rawValue ?? "original",
                        "drop_ratio": s.dropRatio,
                        "mean_accuracy": mean(results[j]), "tasks": perTask(results[j]),
                        "density": f.parameters == 0 ? 0 : Double(f.kept) / Double(f.parameters),
                        "floor_bits_per_parameter": f.parameters == 0 ? 0 : f.floorBits / Double(f.parameters),
                        "scales_per_task": f.scaleCount / tasks.count,
                        "parameters_per_task": f.parameters / tasks.count,
                    ] as [String: Any]
                },
            ]
            if !noReferences {
                root["pretrained"] = ["mean_accuracy": mean(pre), "tasks": perTask(pre)]
                root["finetuned"] = ["mean_accuracy": mean(fine), "tasks": perTask(fine)]
                root["mean_accuracy"] = mean(fine)
            }
            let out = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: out, as: UTF8.self))
            return
        }
        print("\(tasks.count) task(s)\(limit.map { ", at most \($0) test examples each" } ?? ""); mean accuracy")
        if !noReferences {
            print(String(format: "pre-trained %.4f, fine-tuned %.4f", mean(pre), mean(fine)))
        }
        print(pad("strategy", 14) + pad("values", 26) + pad("drop", 7) + pad("accuracy", 10) + "floor bits/param")
        for (j, s) in settings.enumerated() {
            let f = footprints[j]
            print(
                pad(s.strategy.rawValue, 14) + pad(s.valuesLabel, 26) + pad(String(format: "%.2f", s.dropRatio), 7)
                    + pad(String(format: "%.4f", mean(results[j])), 10)
                    + String(format: "%.3f", f.parameters == 0 ? 0 : f.floorBits / Double(f.parameters)))
        }
        if let plot { print("plot: \(plot)") }
    }

    private func writeAccuracyPlot(
        settings: [DropSweep.Setting], accuracy: [Double], pre: Double, fine: Double, to path: String
    ) throws {
        let colors: [DropSweep.Strategy: String] = [
            .discardLow: "#1f77b4", .discardHigh: "#d62728", .random: "#2ca02c",
        ]
        // Percent, so that the axis labels (one decimal) stay distinct over a range of a few points.
        let accuracy = accuracy.map { 100 * $0 }
        let pre = 100 * pre
        let fine = 100 * fine
        var groups: [(key: String, color: String, dashed: Bool, points: [(x: Double, y: Double)])] = []
        for (j, s) in settings.enumerated() {
            let key = "\(s.strategy.rawValue), \(s.scale.map { "sign×λ \($0.rawValue)" } ?? "original")"
            if let g = groups.firstIndex(where: { $0.key == key }) {
                groups[g].points.append((s.dropRatio, accuracy[j]))
            } else {
                groups.append((key, colors[s.strategy] ?? "#000", s.scale != nil, [(s.dropRatio, accuracy[j])]))
            }
        }
        var series = groups.map {
            LinePlot.Series(label: $0.key, color: $0.color, dashed: $0.dashed, points: $0.points)
        }
        let lo = settings.map(\.dropRatio).min() ?? 0
        let hi = settings.map(\.dropRatio).max() ?? 1
        if pre > 0 || fine > 0 {
            series.append(.init(label: "fine-tuned", color: "#555", dashed: true, points: [(lo, fine), (hi, fine)]))
            series.append(.init(label: "pre-trained", color: "#999", dashed: true, points: [(lo, pre), (hi, pre)]))
        }
        let all = accuracy + [pre, fine].filter { $0 > 0 }
        let yLow = max(0, (((all.min() ?? 0) - 0.5) / 5).rounded(.down) * 5)
        let yHigh = min(100, (((all.max() ?? 100) + 0.5) / 5).rounded(.up) * 5)
        let chart = LinePlot(
            title: "Accuracy vs drop ratio (solid: original values, dashed: sign × λ)", xLabel: "drop ratio α",
            yLabel: "mean accuracy (%)", xRange: lo...max(hi, lo + 0.01), yRange: yLow...max(yHigh, yLow + 5),
            series: series)
        let out = try FileOutput(target: path)
        try out.write(Array(chart.svg().utf8))
        try out.commit()
    }
}
