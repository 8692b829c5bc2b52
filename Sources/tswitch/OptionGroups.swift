import ArgumentParser
import Evaluation
import TaskSwitches

/// `--json`, shared by every command that prints a report.
struct JSONOption: ParsableArguments {
    @Flag(help: "Print JSON for scripts.")
    var json = false
}

/// `--force`, shared by every command that writes an output.
struct ForceOption: ParsableArguments {
    @Flag(help: "Replace the output if it exists.")
    var force = false
}

/// The defaults of a command's encoder options.
protocol EncoderDefaults {
    static var maxLength: Int { get }
    static var batch: Int { get }
}

/// `tswitch embed`: sentence-transformers' truncation for all-MiniLM-L6-v2.
enum EmbedDefaults: EncoderDefaults {
    static var maxLength: Int { 128 }
    static var batch: Int { 64 }
}

/// `tswitch eval` and `analyze`: the zoo's training protocol.
enum EvalDefaults: EncoderDefaults {
    static var maxLength: Int { 48 }
    static var batch: Int { 64 }
}

/// `--max-length` and `--batch` of the commands that run the encoder.
struct EncoderOptions<Defaults: EncoderDefaults>: ParsableArguments {
    @Option(help: "Truncate texts to this many tokens, [CLS] and [SEP] included.")
    var maxLength: Int = Defaults.maxLength

    @Option(help: "Texts per forward pass.")
    var batch: Int = Defaults.batch

    func validate() throws {
        if maxLength < 2 {
            throw ValidationError("--max-length must be at least 2 ([CLS] and [SEP]); got \(maxLength).")
        }
        if batch < 1 { throw ValidationError("--batch must be at least 1; got \(batch).") }
    }
}

/// Auto-Switch options of `tswitch eval`.
struct RoutingOptions: ParsableArguments {
    @Option(
        name: .customLong("auto-switch"),
        help:
            "Route to the packs with this router: a router file (tswitch route --build, LDA) or a labelled query set (.safetensors, k-NN)."
    )
    var autoSwitch: String?

    @Option(
        help:
            "Auto-Switch: per-example, soft-batch (official ViT code) or hard-batch (official RoBERTa code; the best measured, see docs/bench-switch.md)."
    )
    var routeMode: AutoSwitchRouter.Mode = .hardBatchMean

    @Option(help: "Auto-Switch: neighbours.")
    var routeK = 10

    @Option(help: "Auto-Switch: neighbour distance, cosine (the best measured) or euclidean (the official code's).")
    var routeDistance: AutoSwitchRouter.Distance = .cosine

    @Option(help: "Auto-Switch: examples per routed batch in the batch modes.")
    var routeBatch = 64

    @Option(
        help:
            "Auto-Switch per example: mixed (each text on its own mix in one batch, weights switched tile by tile), mixed-layer (the same, each group's whole layer written to scratch; the earlier mixed path) or regroup (the test set split by mix, the whole model switched per group; the earliest way). Kept for comparison."
    )
    var mixedBatching: SwitchedEncoder.MixedBatching = .mixed

    func validate() throws {
        if routeK < 1 { throw ValidationError("--route-k must be at least 1; got \(routeK).") }
        if routeBatch < 1 { throw ValidationError("--route-batch must be at least 1; got \(routeBatch).") }
    }

    /// The library's settings, when `--auto-switch` is given.
    var settings: RoutingSettings? {
        autoSwitch.map {
            RoutingSettings(
                queryPath: $0, k: routeK, distance: routeDistance, mode: routeMode, batch: routeBatch,
                batching: mixedBatching)
        }
    }
}
