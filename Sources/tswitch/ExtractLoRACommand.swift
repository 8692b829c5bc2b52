import ArgumentParser
import CheckpointIO
import Foundation
import MergeEngine
import TensorKernels

extension TruncatedSVD.Method: ExpressibleByArgument {}

struct ExtractLoRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract-lora",
        abstract: "Extract a PEFT LoRA adapter (rank-r SVD of each task vector) from a base and a fine-tune.",
        discussion: """
            As mergekit-extract-lora: per 2-D weight, dW = fine-tune - base is cut to its r leading singular \
            triplets, A = sqrt(S) V^T and B = U sqrt(S), lora_alpha = r (scaling 1). Embeddings and lm_head are \
            stored whole (modules_to_save) unless --embed-lora; other changed tensors (norms) are stored whole \
            unless --skip-undecomposable; a changed bias of a LoRA module becomes lora_B.bias (PEFT lora_bias). \
            Unchanged modules are left out. The SVD is randomized (range finder, --power-iterations, \
            --oversampling; within 0.2 % of the exact error on MiniLM deltas) or --svd exact (LAPACK sgesdd). \
            The adapter loads in PEFT and is accepted by `tswitch pack BASE ADAPTER` and `base+adapter` in merge \
            configs. See docs/merge.md.
            """)

    @Argument(help: "The base model (file or folder).")
    var base: String

    @Argument(help: "The fine-tuned model with the same tensors.")
    var finetuned: String

    @Option(name: .shortAndLong, help: "The adapter folder to write (adapter_config.json, adapter_model.safetensors).")
    var output: String

    @Option(
        name: [.customLong("rank"), .customLong("max-rank")],
        help: "The LoRA rank r (the largest; thresholds may cut it per module).")
    var rank: Int

    @Option(help: "Drop singular values at or below this absolute value (mergekit's --sv-epsilon).")
    var svEpsilon: Double = 0

    @Option(help: "Drop singular values below this fraction of each tensor's largest, in [0, 1).")
    var svRelative: Double = 0

    @Flag(
        name: .customLong("embed-lora"),
        help: "Decompose embeddings (lora_embedding_A/B) and lm_head too, instead of storing them whole.")
    var embedLoRA = false

    @Option(
        name: .customLong("save-module"),
        help: "Store this module whole (modules_to_save); full name or last component; repeatable.")
    var modulesToSave: [String] = []

    @Option(
        name: [.customShort("i"), .customLong("include-regex")],
        help: "Extract only modules matching this regular expression; repeatable.")
    var include: [String] = []

    @Option(
        name: [.customShort("e"), .customLong("exclude-regex")],
        help: "Leave out modules matching this regular expression; repeatable.")
    var exclude: [String] = []

    @Flag(help: "Leave out changed tensors that are not 2-D weights (norms), instead of storing them whole.")
    var skipUndecomposable = false

    @Flag(inversion: .prefixedNo, help: "Put sqrt(S) on both factors (default) or S on A only.")
    var distributeScale = true

    @Option(help: "SVD: randomized (default) or exact (LAPACK sgesdd on the whole matrix).")
    var svd: TruncatedSVD.Method = .randomized

    @Option(help: "Randomized SVD: power iterations.")
    var powerIterations = 3

    @Option(help: "Randomized SVD: extra sampled columns beyond the rank.")
    var oversampling = 16

    @Option(help: "Randomized SVD: seed of the test matrices.")
    var seed: UInt64 = 0

    @Option(help: "Dtype of the factors: f32, f16 or bf16 (default: each fine-tune tensor's).")
    var dtype: DType?

    @Option(help: "base_model_name_or_path written to adapter_config.json (default: the base's path).")
    var baseModelName: String?

    @OptionGroup
    var overwrite: ForceOption

    @OptionGroup
    var format: JSONOption

    func validate() throws {
        guard rank >= 1 else { throw ValidationError("--rank must be at least 1; got \(rank).") }
        guard svEpsilon >= 0, svEpsilon.isFinite else {
            throw ValidationError("--sv-epsilon must be a finite number at least 0; got \(svEpsilon).")
        }
        guard svRelative >= 0, svRelative < 1 else {
            throw ValidationError("--sv-relative must be at least 0 and below 1; got \(svRelative).")
        }
        guard powerIterations >= 0, powerIterations <= 20 else {
            throw ValidationError("--power-iterations must be in 0...20; got \(powerIterations).")
        }
        guard oversampling >= 0, oversampling <= 1024 else {
            throw ValidationError("--oversampling must be in 0...1024; got \(oversampling).")
        }
        if let dtype, ![DType.F32, .F16, .BF16].contains(dtype) {
            throw ValidationError("--dtype must be f32, f16 or bf16; got \(dtype.rawValue).")
        }
    }

    func run() throws {
        let baseModel = try ModelFolder(path: base)
        let fineModel = try ModelFolder(path: finetuned)
        var options = LoRAExtraction.Options(rank: rank)
        options.svEpsilon = svEpsilon
        options.svRelative = svRelative
        options.embedLoRA = embedLoRA
        options.modulesToSave = modulesToSave
        options.include = include
        options.exclude = exclude
        options.skipUndecomposable = skipUndecomposable
        options.distributeScale = distributeScale
        options.svd = TruncatedSVD.Settings(
            method: svd, oversampling: oversampling, powerIterations: powerIterations, seed: seed)
        options.dtype = dtype
        options.baseModelName = baseModelName
        let bar = ProgressBar(total: baseModel.tensorNames.count, label: "extract-lora")
        let report = try LoRAExtraction.extract(
            base: baseModel, fineTuned: fineModel, to: output, options: options, overwrite: overwrite.force
        ) { done, total in bar.update(done, "\(done)/\(total) modules") }
        bar.finish()
        let lora = report.modules.filter { $0.kind == .lora || $0.kind == .loraEmbedding }
        if format.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            struct Out: Encodable {
                let report: LoRAExtraction.Report
                let relativeError: Double
                func encode(to encoder: any Encoder) throws {
                    try report.encode(to: encoder)
                    var c = encoder.container(keyedBy: K.self)
                    try c.encode(relativeError, forKey: .relativeError)
                }
                enum K: String, CodingKey { case relativeError }
            }
            let data = try encoder.encode(Out(report: report, relativeError: report.relativeError))
            print(String(decoding: data, as: UTF8.self))
        } else {
            let saved = report.modules.filter { $0.kind == .saved }.count
            let skipped = report.modules.filter { $0.kind == .skipped }
            print(
                "\(output): \(lora.count) LoRA modules at rank \(report.rank), \(saved) stored whole, \(skipped.count) left out (\(skipped.filter { $0.why == "unchanged" }.count) unchanged)"
            )
            print(
                String(
                    format: "  %@, relative reconstruction error ||dW - BA|| / ||dW|| = %.4f (%@ SVD), %.2f s",
                    Format.bytes(report.bytes), report.relativeError, report.svdMethod, report.seconds))
        }
    }
}
