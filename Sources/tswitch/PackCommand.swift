import ArgumentParser
import CheckpointIO
import Foundation
import TaskSwitches
import TensorKernels

struct PackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Make a switch pack from a base and a fine-tune: T-Switch (default) or a seeded random mask.",
        discussion: """
            Per tensor of the task vector tau = fine-tune - base, P-Discard keeps the floor((1-drop)*n) largest \
            positive and the floor((1-drop)*n) largest-magnitude negative entries; the pack stores their mask and \
            signs (context-coded near H(d)+d bits per entry) and lambda = RMS of the kept entries. The pack is \
            refused on any base but this one (fingerprint). FINETUNED may be a PEFT LoRA adapter folder: tau is then \
            what merging the adapter into the base changes ((B*A)*lora_alpha/r per adapted tensor, modules_to_save \
            replaced), the same pack as from PEFT's merged model. See docs/pack-format.md.

            --kind random-mask (beyond the paper: DARE on one task vector) keeps each entry with probability \
            1-drop by a mask regenerated from --seed and the tensor name, and stores tau at the kept entries \
            (--values f16, f32 or int8); applying adds tau/(1-drop) there. The pack is format version 2: older \
            readers refuse it.
            """)

    @Argument(help: "The base model (file or folder, or a llama .gguf file, dequantized as it is read).")
    var base: String

    @Argument(
        help:
            "The fine-tuned model with the same tensors (a .gguf file too), or a PEFT LoRA adapter folder (adapter_config.json)."
    )
    var finetuned: String

    @Option(name: .shortAndLong, help: "The pack file to write (.tsw).")
    var output: String

    @Option(help: "Drop ratio alpha in [0, 1): the share of each sign's entries discarded per tensor.")
    var drop: Double = 0.7

    @Option(help: "Task name stored in the pack (default: the fine-tune's folder name).")
    var task: String?

    @Option(help: "A safetensors file with the task's classification head (stored dense, F32).")
    var head: String?

    @Option(help: "Class names: a JSON file with a \"labels\" array (data/tasks/*/labels.json) or a JSON array.")
    var labels: String?

    @Option(
        help:
            "Pack kind: t-switch (the paper's method: mask, signs, one scale) or random-mask (alias random: seeded mask, kept values)."
    )
    var kind: SwitchPack.Kind = .tSwitch

    @Option(help: "random-mask: the pack seed (default 0; each tensor's mask derives from it and the tensor name).")
    var seed: UInt64?

    @Option(
        help: "random-mask: how kept values are stored: f16 (default; f32 per tensor if any would flush), f32, int8.")
    var values: KeptValues.Code?

    @Option(help: "Ties at the threshold: lowest-index (exactly k kept) or keep-all-tied (the official code).")
    var ties: PDiscard.TieRule = .lowestIndex

    @OptionGroup
    var overwrite: ForceOption

    @OptionGroup
    var format: JSONOption

    func validate() throws {
        guard drop.isFinite, drop >= 0, drop < 1 else {
            throw ValidationError("--drop must be at least 0 and below 1 (0.7 drops 70 % of each sign); got \(drop).")
        }
        if kind == .tSwitch, seed != nil || values != nil {
            throw ValidationError("--seed and --values apply to --kind random-mask only.")
        }
    }

    func run() throws {
        if !overwrite.force, FileManager.default.fileExists(atPath: output) {
            throw SwitchError(.outputExists, "\(output): already exists.")
        }
        let baseModel = try ModelFolder(path: base)
        // A PEFT adapter folder (adapter_config.json) is packed as the weights merging it would change.
        let adapter = LoRAAdapterFolder.isAdapterFolder(finetuned) ? try LoRAAdapterFolder(path: finetuned) : nil
        let headTensors = try head.map { try SwitchApplier.readHead($0) } ?? []
        let labelNames = try labels.map(Self.readLabels) ?? []
        let name = task ?? URL(fileURLWithPath: finetuned).standardizedFileURL.lastPathComponent
        let bar = ProgressBar(total: baseModel.tensorNames.count, label: "pack")
        let barBox = UncheckedSendable(bar)
        let lock = NSLock()
        let start = Date()
        let report: @Sendable (Int, Int) -> Void = { done, _ in lock.withLock { barBox.value.update(done) } }
        let rounding = RoundingLog()
        let code = values ?? .f16
        let random: RandomMaskSettings? =
            kind == .randomMask ? RandomMaskSettings(seed: seed ?? 0, code: code) { rounding.add($0, $1) } : nil
        let pack =
            if let adapter {
                try SwitchPack.build(
                    base: baseModel, adapter: adapter, dropRatio: drop, task: name, tieRule: ties, head: headTensors,
                    labels: labelNames, randomMask: random, progress: report)
            } else {
                try SwitchPack.build(
                    base: baseModel, fineTuned: ModelFolder(path: finetuned), dropRatio: drop, task: name,
                    tieRule: ties, head: headTensors,
                    labels: labelNames, randomMask: random, progress: report)
            }
        bar.finish()
        let (flushed, overflowed, subnormal, fellBack) = rounding.totals
        let bytes = try PackFile.write(pack, to: output, overwrite: overwrite.force)
        let seconds = Date().timeIntervalSince(start)
        let params = pack.parameterCount
        let kept = pack.keptCount
        let d = params == 0 ? 0 : Double(kept) / Double(params)
        let floorBits = params == 0 || d == 0 || d == 1 ? 0 : (entropy(d) + d) * Double(params)
        let f32Bytes = baseModel.tensorInfos.filter { $0.dtype.isConvertibleFloat }.reduce(0) {
            $0 + $1.elementCount * 4
        }
        let bitsPerParam = Double(bytes * 8) / Double(max(1, params))
        if format.json {
            var root: [String: Any] = [
                "output": output, "task": name, "drop_ratio": drop, "tensors": pack.tensors.count,
                "parameters": params, "kept": kept, "density": d, "bytes": bytes, "bits_per_parameter": bitsPerParam,
                "entropy_floor_bits_per_parameter": floorBits / Double(max(1, params)),
                "fraction_of_f32": Double(bytes) / Double(max(1, f32Bytes)),
                "base_fingerprint": pack.baseFingerprint.description, "seconds": seconds, "kind": pack.kind.rawValue,
            ]
            if random != nil {
                root["seed"] = seed ?? 0
                root["values"] = code.rawValue
                root["values_flushed"] = flushed
                root["values_overflowed"] = overflowed
                root["values_subnormal"] = subnormal
                root["tensors_stored_f32"] = fellBack
            }
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(
                "\(output): task '\(name)', \(pack.tensors.count) tensors, \(Format.count(kept)) of \(Format.count(params)) entries kept (density \(String(format: "%.4f", d)))"
            )
            if random != nil {
                print(
                    String(
                        format: "  %@, %.4f bits/parameter, %.2f%% of the F32 fine-tune, %.2f s", Format.bytes(bytes),
                        bitsPerParam, 100 * Double(bytes) / Double(max(1, f32Bytes)), seconds))
            } else {
                print(
                    String(
                        format:
                            "  %@, %.4f bits/parameter (floor H(d)+d = %.4f, ratio %.3f), %.2f%% of the F32 fine-tune, %.2f s",
                        Format.bytes(bytes), bitsPerParam, floorBits / Double(max(1, params)),
                        Double(bytes * 8) / max(1, floorBits),
                        100 * Double(bytes) / Double(max(1, f32Bytes)), seconds))
            }
            if random != nil {
                // Each code has its own rounding hazards: f16 flushes, overflows and subnormals (a tensor with any
                // flush or overflow falls back to f32), int8 rounds entries below half a step to 0.
                let rounding =
                    code == .int8
                    ? "\(flushed) non-zero entries rounded to 0"
                    : code == .f16
                        ? "\(subnormal) stored as f16 subnormals, \(flushed) would flush to 0 and \(overflowed) overflow"
                        : "exact"
                print(
                    "  random mask, seed \(seed ?? 0), values \(code.rawValue): \(rounding); \(fellBack) tensors stored as f32 instead"
                )
            }
        }
    }

    private func entropy(_ d: Double) -> Double { -(d * log2(d)) - (1 - d) * log2(1 - d) }

    /// Reads class names from `{"labels": [...]}` or a bare JSON array.
    static func readLabels(_ path: String) throws -> [String] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw SwitchError(.io, "\(path): cannot read the labels file: \(error.localizedDescription).")
        }
        let obj = try? JSONSerialization.jsonObject(with: data)
        if let a = obj as? [String] { return a }
        if let d = obj as? [String: Any], let a = d["labels"] as? [String] { return a }
        throw SwitchError(
            .invalidArgument, "\(path): expected a JSON array of class names or an object with a \"labels\" array.")
    }
}

/// Sums the per-tensor rounding reports of a random-mask pack (called from the build's worker threads).
final class RoundingLog: @unchecked Sendable {
    private let lock = NSLock()
    private var reports: [String: KeptValues.Rounding] = [:]

    func add(_ name: String, _ r: KeptValues.Rounding) { lock.withLock { reports[name] = r } }

    /// (flushed, overflowed, subnormal, tensors that fell back to f32), summed over tensors.
    var totals: (Int, Int, Int, Int) {
        lock.withLock {
            reports.values.reduce((0, 0, 0, 0)) {
                ($0.0 + $1.flushed, $0.1 + $1.overflowed, $0.2 + $1.subnormal, $0.3 + ($1.fellBack ? 1 : 0))
            }
        }
    }
}
