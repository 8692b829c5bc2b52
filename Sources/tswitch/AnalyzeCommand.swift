import ArgumentParser
import CheckpointIO
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

    @Flag(help: "Print JSON for scripts.")
    var json = false

    func run() throws {
        let b = try ModelFolder(path: base)
        let f = try ModelFolder(path: finetuned)
        let bar = ProgressBar(total: b.tensorNames.count, label: "analyze")
        let pulse = try PulseAnalysis(base: b, fineTuned: f, seed: seed) { done, _ in bar.update(done) }
        bar.finish()
        let study =
            codings ? try CodingStudy.run(base: b, fineTuned: f, dropRatios: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]) : []
        if let plot { try writePlot(pulse, to: plot) }
        let strategies = PulseAnalysis.Strategy.allCases
        if json {
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
}
