import ArgumentParser
import CheckpointIO
import Foundation
import MergeEngine

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Run a mergekit YAML configuration (all 20 mergekit methods), streaming tensor by tensor.",
        discussion: """
            CONFIG is mergekit's YAML: merge_method, models or slices, base_model, parameters (with filters and \
            gradients), dtype, out_dtype, tokenizer_source; several '---' documents with 'name:' make named \
            intermediates that later documents use as models. Models are local folders or files, or Hugging Face \
            ids already in the local cache (nothing is downloaded), or llama or qwen2 GGUF files (seen under \
            Hugging Face names, dequantized one tensor at a time). OUT becomes a Hugging Face model folder \
            (shards + index, config.json, tokenizer files, README.md model card), written atomically. \
            See docs/merge.md.
            """)

    @Argument(help: "The mergekit YAML configuration.")
    var config: String

    @Argument(help: "The output model folder.")
    var output: String

    @Option(help: "Seed of the randomised methods (DARE, DELLA); the same seed gives the same model.")
    var randomSeed: UInt64 = 0

    @Option(
        help:
            "Largest output shard (default 5B): bytes, or a number with K, M, B (10³, 10⁶, 10⁹, as mergekit), KB, MB, GB or KiB, MiB, GiB.",
        transform: Parse.byteSize)
    var outShardSize = ByteSize(bytes: ModelWriter.defaultMaxShardBytes)

    @Option(help: "Folder for the named intermediates of a multi-document config (default: temporary).")
    var intermediateDir: String?

    @OptionGroup
    var overwrite: ForceOption

    @Flag(help: "Merge every tensor as whole Float buffers instead of streaming blocks (for comparison).")
    var wholeTensors = false

    @Flag(
        help:
            "Do not fsync the output files before renaming them into place (as mergekit): faster on a slow disk, not safe against a power loss right after."
    )
    var noFsync = false

    @OptionGroup
    var format: JSONOption

    func validate() throws {
        guard outShardSize.bytes > 0 else { throw ValidationError("--out-shard-size must be more than 0 bytes.") }
    }

    func run() throws {
        var options = MergeOptions()
        options.seed = randomSeed
        options.outShardSize = outShardSize.bytes
        options.overwrite = overwrite.force
        options.intermediateDirectory = intermediateDir
        options.streaming = !wholeTensors
        options.durable = !noFsync
        // One bar per document of the config (tensors done, input+output GB/s, time left by bytes).
        var bar: ProgressBar?
        var barDocument = -1
        let summary = try MergeEngine.run(configFile: config, output: output, options: options) { p in
            if p.document != barDocument {
                bar?.finish()
                let label = p.documentCount > 1 ? "merge \(p.document + 1)/\(p.documentCount)" : "merge"
                bar = ProgressBar(total: p.tensorCount, label: label)
                barDocument = p.document
            }
            let fraction = Double(p.bytesDone) / Double(max(1, p.bytesTotal))
            let rate = p.seconds > 0 ? Double(p.bytesDone) / p.seconds / 1e9 : 0
            let eta = fraction > 0 ? p.seconds * (1 - fraction) / fraction : 0
            bar?.update(p.tensorsDone, String(format: "%.2f GB/s, %.0f s left", rate, eta))
        }
        bar?.finish()
        if format.json {
            let root: [String: Any] = [
                "output": output, "outputs": summary.outputs, "tensors": summary.tensors,
                "bytes_read": summary.bytesRead, "bytes_written": summary.bytesWritten, "seconds": summary.seconds,
            ]
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            let gbps = Double(summary.bytesRead + summary.bytesWritten) / max(summary.seconds, 1e-9) / 1e9
            print(
                String(
                    format: "merged %d tensors into %@ in %.2f s (%@ read, %@ written, %.2f GB/s)", summary.tensors,
                    output,
                    summary.seconds, Format.bytes(summary.bytesRead), Format.bytes(summary.bytesWritten), gbps))
        }
    }
}
