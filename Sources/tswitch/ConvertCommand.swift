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
            """)

    @Argument(help: "The input model (file or folder).")
    var input: String

    @Argument(help: "The output folder.")
    var output: String

    @Option(help: "Float dtype of the output: f32, f16, bf16 or f64 (default: keep each tensor's dtype).")
    var dtype: String?

    @Option(help: "Largest shard, e.g. 5GB, 500MB, 2000000 (bytes).")
    var maxShardSize = "5GB"

    @Flag(help: "Replace OUT if it exists.")
    var force = false

    func run() throws {
        var target: DType?
        if let dtype {
            guard let d = DType(userName: dtype), d.isConvertibleFloat else {
                throw ValidationError("--dtype '\(dtype)' is not one of f32, f16, bf16, f64.")
            }
            target = d
        }
        guard let maxShard = Self.parseSize(maxShardSize), maxShard > 0 else {
            throw ValidationError("--max-shard-size '\(maxShardSize)' is not a size like 5GB, 500MB or 1000000.")
        }
        let model = try ModelFolder(path: input)
        let specs = model.tensorInfos.map { t in
            TensorSpec(name: t.name, dtype: t.dtype.isConvertibleFloat ? (target ?? t.dtype) : t.dtype, shape: t.shape)
        }
        let metadata = model.files.first?.metadata ?? [:]
        let writer = try ModelWriter(
            directory: output, tensors: specs, maxShardBytes: maxShard,
            metadata: metadata.isEmpty ? ["format": "pt"] : metadata, overwrite: force)
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
        print("\(output): \(specs.count) tensors in \(writer.shardNames.count) file(s), \(Format.bytes(specs.reduce(0) { $0 + $1.byteCount }))")
    }

    /// `5GB` -> 5_000_000_000 (decimal units, as Hugging Face's `max_shard_size`), `2GiB` -> 2 << 30.
    static func parseSize(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Int)] = [("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("B", 1)]
        for (suffix, scale) in units where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v >= 0 else { return nil }
            return Int(v * Double(scale))
        }
        return Int(t)
    }
}
