import ArgumentParser
import CheckpointIO
import Evaluation
import Foundation
import MergeEngine

struct MoECommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe",
        abstract: "Build a Mixtral or Qwen2-MoE checkpoint from dense models (mergekit-moe's YAML).",
        discussion: """
            CONFIG is mergekit-moe's YAML: base_model, experts (source_model, positive_prompts, negative_prompts, \
            residual_scale), gate_mode (hidden, hidden_avg: the base's hidden states for the prompts, from a \
            float32 forward pass of a llama, mistral or qwen2 base; cheap_embed, random, uniform_random), dtype, experts_per_token, shared_experts, architecture. The base model gives \
            attention, norms, embeddings and head; each expert's MLP becomes expert i of every layer. OUT becomes a \
            Hugging Face model folder (shards + index, config.json, the base's tokenizer), written atomically. \
            See docs/merge.md.
            """)

    @Argument(help: "The mergekit-moe YAML configuration.")
    var config: String

    @Argument(help: "The output model folder.")
    var output: String

    @Option(
        help:
            "Seed of torch's generator for random and uniform_random routers: the same routers as mergekit-moe --random-seed with this value."
    )
    var randomSeed: UInt64 = 0

    @Option(
        help:
            "Largest output shard (default 5B): bytes, or a number with K, M, B (10³, 10⁶, 10⁹, as mergekit), KB, MB, GB or KiB, MiB, GiB.",
        transform: Parse.byteSize)
    var outShardSize = ByteSize(bytes: ModelWriter.defaultMaxShardBytes)

    @Flag(
        name: .customLong("i-understand-this-is-not-useful-without-training"),
        help: "Accept experts that are all the same model (as mergekit-moe's flag).")
    var allowAllSame = false

    @OptionGroup
    var overwrite: ForceOption

    @Flag(help: "Do not fsync the output files before renaming them into place.")
    var noFsync = false

    @OptionGroup
    var format: JSONOption

    func validate() throws {
        guard outShardSize.bytes > 0 else { throw ValidationError("--out-shard-size must be more than 0 bytes.") }
    }

    func run() throws {
        var options = MoEOptions()
        options.seed = randomSeed
        options.outShardSize = outShardSize.bytes
        options.overwrite = overwrite.force
        options.durable = !noFsync
        options.allowAllSame = allowAllSame
        options.loadTokenizer = { folder in
            let t = try ByteLevelBPETokenizer(folder: folder)
            return PromptTokenizer { t.tokenIDs($0) }
        }
        let s = try MoEBuilder.run(configFile: config, output: output, options: options)
        if format.json {
            let root: [String: Any] = [
                "output": output, "architecture": s.architecture.className, "experts": s.experts, "layers": s.layers,
                "tensors": s.tensors, "bytes_written": s.bytesWritten, "seconds": s.seconds,
            ]
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(
                String(
                    format: "wrote %@ (%d experts, %d layers, %d tensors, %@) to %@ in %.2f s",
                    s.architecture.className,
                    s.experts, s.layers, s.tensors, Format.bytes(s.bytesWritten), output, s.seconds))
        }
    }
}
