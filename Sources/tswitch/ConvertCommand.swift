import ArgumentParser
import CheckpointIO
import Foundation

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Rewrite a model in another float dtype and/or shard size, streaming tensor by tensor.",
        discussion: """
            Float tensors (F32, F16, BF16, F64) are converted to --dtype (round to nearest even); other tensors are \
            copied unchanged. The output is a Hugging Face folder (model.safetensors, or shards with \
            model.safetensors.index.json) with config.json (dtype updated), tokenizer files and sentence-transformers \
            module folders copied; it appears \
            at OUT only when complete.
            A GGUF input (architecture llama: Llama, SmolLM, Mistral; or qwen2) is dequantized and written as a \
            Hugging Face LlamaForCausalLM or Qwen2ForCausalLM folder: tensor names mapped (Qwen2's q/k/v biases \
            included), a llama's Q/K rows un-permuted, config.json from the metadata \
            (default dtype F32), and for byte-level BPE vocabularies tokenizer.json, tokenizer_config.json and \
            chat_template.jinja. See docs/gguf.md.
            """)

    @Argument(help: "The input model (file or folder, or a llama or qwen2 .gguf file).")
    var input: String

    @Argument(help: "The output folder.")
    var output: String

    @Option(help: "Float dtype of the output (default: keep each tensor's dtype).")
    var dtype: DType?

    @Option(
        help:
            "Largest shard (default 5GB): bytes, or a number with K, M, B (10³, 10⁶, 10⁹, as mergekit), KB, MB, GB or KiB, MiB, GiB.",
        transform: Parse.byteSize)
    var maxShardSize = ByteSize(bytes: ModelWriter.defaultMaxShardBytes)

    @OptionGroup
    var overwrite: ForceOption

    func validate() throws {
        guard maxShardSize.bytes > 0 else { throw ValidationError("--max-shard-size must be more than 0 bytes.") }
    }

    func run() throws {
        if GGUFFile.hasMagic(path: input) { return try runGGUF() }
        let target = dtype
        let maxShard = maxShardSize.bytes
        let model = try ModelFolder(path: input)
        let specs = model.tensorInfos.map { t in
            TensorSpec(name: t.name, dtype: t.dtype.isConvertibleFloat ? (target ?? t.dtype) : t.dtype, shape: t.shape)
        }
        let metadata = model.files.first?.metadata ?? [:]
        let writer = try ModelWriter(
            directory: output, tensors: specs, maxShardBytes: maxShard,
            metadata: metadata.isEmpty ? ["format": "pt"] : metadata, overwrite: overwrite.force)
        try writer.copySupportFiles(from: model, dtype: target)
        let progress = ProgressBar(total: specs.count, label: "convert")
        for (i, s) in specs.enumerated() {
            let view = try model.tensor(s.name)
            try writer.write(s.name, from: view)
            view.release()
            progress.update(i + 1, s.name)
        }
        try writer.finish()
        progress.finish()
        print(
            "\(output): \(specs.count) tensors in \(writer.shardNames.count) file(s), \(Format.bytes(specs.reduce(0) { $0 + $1.byteCount }))"
        )
    }

    /// A llama or qwen2 GGUF file to a Hugging Face folder: dequantized tensors under Hugging Face names, config.json.
    private func runGGUF() throws {
        let target = dtype ?? .F32
        guard target.isConvertibleFloat, let torchName = target.torchName else {
            throw ValidationError("--dtype must be a float type (f32, bf16, f16) for a GGUF input.")
        }
        let mapping = try GGUFLlamaMapping(file: GGUFFile(path: input))
        let specs = mapping.tensors.map { TensorSpec(name: $0.hfName, dtype: target, shape: $0.shape) }
        let writer = try ModelWriter(
            directory: output, tensors: specs, maxShardBytes: maxShardSize.bytes, metadata: ["format": "pt"],
            overwrite: overwrite.force)
        try writer.addFile("config.json", contents: mapping.configJSON(torchDType: torchName))
        let tokenizer = try GGUFTokenizerFiles.build(mapping.file.header, file: input)
        for (name, data) in tokenizer.files.sorted(by: { $0.key < $1.key }) { try writer.addFile(name, contents: data) }
        let progress = ProgressBar(total: specs.count, label: "convert")
        for (i, t) in mapping.tensors.enumerated() {
            try writer.write(t.hfName, floats: mapping.floats(t))
            progress.update(i + 1, t.hfName)
        }
        try writer.finish()
        progress.finish()
        print(
            "\(output): \(specs.count) tensors in \(writer.shardNames.count) file(s), \(Format.bytes(specs.reduce(0) { $0 + $1.byteCount }))"
        )
        if let skipped = tokenizer.skipped { print("no tokenizer written: \(skipped)") }
    }
}
