import ArgumentParser
import Evaluation

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Sentence embeddings of a JSONL file of texts with a BERT encoder (masked mean pooling).",
        discussion: """
            Reads one {"text": ...} object per line and writes one F32 tensor `embeddings` (N x hidden) to a \
            safetensors file, in input order. --normalize scales each row to unit length, which is what \
            sentence-transformers returns for all-MiniLM-L6-v2. Matrix products run through OpenBLAS \
            (OPENBLAS_NUM_THREADS sets its threads).
            """)

    @Argument(help: "A Hugging Face BERT folder (config.json, model.safetensors, vocab.txt).")
    var model: String

    @Option(help: "JSONL file with one {\"text\": ...} object per line.")
    var input: String

    @Option(help: "Output safetensors file.")
    var output: String

    @Flag(help: "Scale every embedding to unit L2 length.")
    var normalize = false

    @Option(
        name: .customLong("pack"),
        help:
            "Switch packs for MODEL (their base): each line's \"task\" picks its pack (none or \"base\": the base alone); texts of every task share mixed batches."
    )
    var packs: [String] = []

    @Option(
        help: ArgumentHelp(
            "Write the features a router on these base layers reads instead (0 = embeddings, e.g. 3-6 or 1,3,6; final = the sentence embedding): each layer's mean-pooled states at unit length, concatenated, scaled by 1/sqrt(n). For `tswitch route ROUTER FEATURES` and `route --build`; not with --pack.",
            valueName: "layers"),
        transform: Parse.layers)
    var layers: [Int]?

    @OptionGroup(title: "Encoder")
    var encoder: EncoderOptions<EmbedDefaults>

    @OptionGroup
    var format: JSONOption

    func validate() throws {
        if let layers, !layers.isEmpty, !packs.isEmpty {
            throw ValidationError(
                "--layers writes the base's layer features (what a router reads); it does not combine with --pack.")
        }
    }

    func run() throws {
        var bar: ProgressBar?
        let report = try EmbeddingRun.run(
            model: model, input: input, output: output, maxLength: encoder.maxLength, batchSize: encoder.batch,
            normalize: normalize, packs: packs, layers: layers ?? [],
            started: { bar = ProgressBar(total: $0, label: "embed") },
            progress: { bar?.update($0) })
        bar?.finish()
        if format.json {
            print(try ReportJSON.text(report))
        } else {
            print(
                "\(report.n) embeddings of \(report.hidden) floats -> \(output) (\(String(format: "%.1f", report.seconds)) s, \(String(format: "%.0f", Double(report.n) / max(report.seconds, 1e-9))) sentences/s)"
            )
        }
    }
}
