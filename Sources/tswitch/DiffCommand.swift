import ArgumentParser
import CheckpointIO
import Foundation
import TensorKernels

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract:
            "Per-tensor statistics of the task vector (fine-tune minus base): norm, max, share of mass in the top entries.",
        discussion: """
            Streams both models tensor by tensor (memory bounded by the largest tensor). For each float tensor: \
            L2 norm and max of |tau|, the share of the L1 mass of tau held by its top 1 %, 10 % and 30 % entries, \
            and the fraction of exact zeros. The summary aggregates each tensor's own top-p mass over all tensors.
            """)

    @Argument(help: "The base model (safetensors file or folder, or a .gguf file).")
    var base: String

    @Argument(help: "The fine-tuned model with the same tensors.")
    var finetuned: String

    @OptionGroup
    var format: JSONOption

    @Option(help: "List only the N tensors with the largest task-vector norm (0 lists none).")
    var top: Int?

    func validate() throws {
        if let top, top < 0 { throw ValidationError("--top must be 0 or more.") }
    }

    func run() throws {
        let diff = try ModelDiff(base: openTensorProvider(path: base), finetuned: openTensorProvider(path: finetuned))
        let progress = ProgressBar(total: diff.base.tensorNames.count, label: "diff")
        var entries: [ModelDiff.Entry] = []
        let summary = try diff.run { e in
            entries.append(e)
            progress.update(entries.count, e.name)
        }
        progress.finish()
        var listed = entries
        if let top {
            listed = Array(
                entries.filter { $0.stats != nil }.sorted { ($0.stats?.l2Norm ?? 0) > ($1.stats?.l2Norm ?? 0) }.prefix(
                    top))
        }
        let fractions = TaskVectorStats.topFractions.map { "top\(Int(($0 * 100).rounded()))" }
        if format.json {
            func shares(_ s: [Double]) -> [String: Double] { Dictionary(uniqueKeysWithValues: zip(fractions, s)) }
            let tensors: [[String: Any]] = listed.map { e in
                var d: [String: Any] = ["name": e.name, "dtype": e.typeName, "shape": e.shape]
                if let s = e.stats {
                    d["elements"] = s.elementCount
                    d["l2_norm"] = s.l2Norm
                    d["l1_mass"] = s.l1Mass
                    d["max_abs"] = Double(s.maxAbs)
                    d["zero_fraction"] = s.zeroFraction
                    d["non_finite"] = s.nonFiniteCount
                    d["top_share"] = shares(s.topShares)
                } else {
                    d["bytes_equal"] = e.bytesEqual ?? false
                }
                return d
            }
            let root: [String: Any] = [
                "base": base, "finetuned": finetuned, "tensors": tensors,
                "summary": [
                    "tensors": summary.tensors, "elements": summary.elements, "l2_norm": summary.l2Norm,
                    "l1_mass": summary.l1Mass, "max_abs": Double(summary.maxAbs), "zero_fraction": summary.zeroFraction,
                    "non_finite": summary.nonFiniteCount, "top_share": shares(summary.topShares),
                ] as [String: Any],
            ]
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if !listed.isEmpty {
            let width = min(60, max(6, listed.map(\.name.count).max() ?? 6))
            print(
                pad("tensor", width), pad("shape", 14), pad("l2", 10), pad("max|tau|", 10),
                fractions.map { pad($0, 7) }.joined(separator: " "), "zeros")
            for e in listed {
                guard let s = e.stats else {
                    print(
                        pad(e.name, width), pad(shapeText(e.shape), 14),
                        (e.bytesEqual ?? false) ? "(not float; identical)" : "(not float; differs)")
                    continue
                }
                print(
                    pad(e.name, width), pad(shapeText(e.shape), 14), pad(Format.number(s.l2Norm), 10),
                    pad(Format.number(Double(s.maxAbs)), 10),
                    s.topShares.map { pad(Format.percent($0), 7) }.joined(separator: " "),
                    Format.percent(s.zeroFraction))
            }
            print("")
        }
        let shareText = zip(fractions, summary.topShares).map { "\($0) \(Format.percent($1))" }.joined(separator: ", ")
        print(
            "\(summary.tensors) float tensors, \(Format.count(summary.elements)) entries: |tau|_2 = \(Format.number(summary.l2Norm)), max |tau| = \(Format.number(Double(summary.maxAbs))), L1 mass in each tensor's \(shareText), \(Format.percent(summary.zeroFraction)) exact zeros\(summary.nonFiniteCount > 0 ? ", \(summary.nonFiniteCount) non-finite" : "")"
        )
    }

    private func shapeText(_ s: [Int]) -> String { s.isEmpty ? "scalar" : s.map(String.init).joined(separator: "x") }
    private func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
    }
}
