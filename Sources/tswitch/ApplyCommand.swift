import ArgumentParser
import CheckpointIO
import Foundation
import TaskSwitches

struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Write a full model: base + sum of weight * lambda * mask * sign over the given packs.",
        discussion: """
            Each pack is PATH or PATH:WEIGHT (weight 1 by default; negative weights subtract a task). The output \
            folder is a Hugging Face model (model.safetensors, config and tokenizer files copied from the base), \
            written atomically; with exactly one pack carrying a classification head, head.safetensors and \
            labels.json are added.
            """)

    @Argument(help: "The base model the packs were made from.")
    var base: String

    @Argument(help: "Packs, each PATH or PATH:WEIGHT.", transform: Parse.weightedPath)
    var packs: [WeightedPath]

    @Option(name: .shortAndLong, help: "The output model folder.")
    var output: String

    @Option(help: "Output dtype of float tensors (f32, f16, bf16); default: the base's.")
    var dtype: DType?

    @OptionGroup
    var overwrite: ForceOption

    @OptionGroup
    var format: JSONOption

    func validate() throws {
        if packs.isEmpty { throw ValidationError("Give at least one pack.") }
        if let dtype, ![.F32, .F16, .BF16].contains(dtype) {
            throw ValidationError("--dtype must be f32, f16 or bf16; got \(dtype.rawValue.lowercased()).")
        }
    }

    func run() throws {
        let start = Date()
        let baseModel = try ModelFolder(path: base)
        var loaded: [(pack: SwitchPack, weight: Float)] = []
        for p in packs {
            loaded.append((try PackFile.read(p.path), p.weight))
        }
        let bar = ProgressBar(total: baseModel.tensorNames.count, label: "apply")
        let switched = try SwitchApplier.write(
            base: baseModel, packs: loaded, output: output, dtype: dtype,
            overwrite: overwrite.force
        ) { done, _ in bar.update(done) }
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        if format.json {
            let root: [String: Any] = [
                "output": output, "tensors_switched": switched,
                "packs": loaded.map { ["task": $0.pack.task, "weight": Double($0.weight)] as [String: Any] },
                "seconds": seconds,
            ]
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            let desc = loaded.map { "\($0.pack.task)×\($0.weight)" }.joined(separator: " + ")
            print("\(output): base + \(desc), \(switched) tensors switched, \(String(format: "%.2f", seconds)) s")
        }
    }
}
