import ArgumentParser
import Evaluation
import Foundation

struct HeadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "head",
        abstract: "Writes a task's zero-shot head: each class's row is the base model's embedding of its description.",
        discussion: """
            tswitch head BASE --labels data/tasks/TASK/labels.json -o head.safetensors

            Row c of the head (tensor `weight`, classes x hidden, F32) is the L2-normalized sentence embedding of \
            class c's description (`descriptions` in labels.json) put into --template, where {} stands for the \
            description; `bias` is 0. The logit scale goes into the file's metadata as `logit_scale`: `tswitch \
            eval` then scores cos(feature, row) x scale on L2-normalized features (CLIP's zero-shot protocol). \
            The file is written atomically; put the task's labels.json beside it to keep the class names.
            """)

    @Argument(help: "The base model: a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt).")
    var base: String

    @Option(help: "The task's labels.json, with a \"descriptions\" list (one phrase per class).")
    var labels: String

    @Option(name: .shortAndLong, help: "The head file to write (.safetensors).")
    var output: String

    @Option(help: "Prompt template; {} is replaced by each class's description.")
    var template = ZeroShotHead.defaultTemplate

    @Option(help: "Logit scale applied to the cosine (stored in the head's metadata).")
    var logitScale = ZeroShotHead.defaultLogitScale

    @Flag(help: "Replace the output file if it exists.")
    var force = false

    @Flag(help: "Print a JSON summary for scripts.")
    var json = false

    func validate() throws {
        if !template.contains(ZeroShotHead.placeholder) {
            throw ValidationError("--template must contain {} (where each description goes); got \"\(template)\".")
        }
        if !(logitScale.isFinite && logitScale > 0) {
            throw ValidationError("--logit-scale must be a finite positive number.")
        }
    }

    func run() throws {
        if !force, FileManager.default.fileExists(atPath: output) {
            throw ValidationError("\(output): already exists; pass --force to replace it.")
        }
        let classes = try ZeroShotHead.readClasses(labelsPath: labels)
        let encoder = try SentenceEncoder(path: base)
        let head = ZeroShotHead.make(encoder: encoder, classes: classes, template: template, logitScale: logitScale)
        try head.write(path: output, metadata: ["kind": "zero-shot", "template": template])
        if json {
            let root: [String: Any] = [
                "output": output, "classes": head.classes, "hidden": head.hidden, "logit_scale": Double(logitScale),
                "template": template,
            ]
            let data = try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("\(output): zero-shot head, \(head.classes) classes x \(head.hidden), logit scale \(logitScale)")
        }
    }
}
