import Foundation

/// Writes a whole model folder the way Hugging Face lays it out: `model.safetensors`, or shards named
/// `model-00001-of-0000N.safetensors` with `model.safetensors.index.json` when the data exceeds `maxShardBytes`,
/// plus `config.json` (dtype updated) and tokenizer files.
///
/// Everything is written into a hidden temporary folder beside the target and renamed into place by `finish()`:
/// an interrupted run leaves no half-written model at the target (only the hidden folder, removed on deinit; one
/// left by a killed process is swept by the next run writing the same target, see `StaleTemporaries`).
public final class ModelWriter {
    /// The output folder and its hidden temporary, moved into place by `finish()`.
    private let output: FolderOutput
    public var target: URL { output.target }
    public var temporary: URL { output.temporary }
    public let specs: [TensorSpec]
    /// Shard file name for each planned tensor's shard, in order.
    public let shardNames: [String]
    private let shardOf: [Int]
    private var writers: [SafeTensorsWriter?]
    private var current = 0
    private var nextTensor = 0

    /// Hugging Face's default shard bound (5 GB).
    public static let defaultMaxShardBytes = 5_000_000_000

    /// - Parameters:
    ///   - directory: the output folder; replaced as a whole if it exists and `overwrite` is set.
    ///   - tensors: every tensor, in the order they will be written.
    ///   - maxShardBytes: a shard closes before a tensor that would take it past this size (a single larger
    ///     tensor gets a shard of its own).
    public init(
        directory: String, tensors: [TensorSpec], maxShardBytes: Int = ModelWriter.defaultMaxShardBytes,
        metadata: [String: String] = ["format": "pt"], overwrite: Bool = false
    ) throws(CheckpointError) {
        let output = try FolderOutput(target: directory, overwrite: overwrite)
        // Checked before the temporary folder exists, so a refused plan touches no disk.
        var names = Set<String>()
        for t in tensors where !names.insert(t.name).inserted {
            throw CheckpointError(.duplicateTensor, "\(output.target.path): tensor '\(t.name)' is planned twice.")
        }
        try output.create()
        self.output = output
        specs = tensors
        // Greedy sharding in write order.
        var shardOf: [Int] = []
        var shard = 0
        var filled = 0
        for t in tensors {
            if filled > 0, filled + t.byteCount > maxShardBytes {
                shard += 1
                filled = 0
            }
            shardOf.append(shard)
            filled += t.byteCount
        }
        let count = tensors.isEmpty ? 1 : shard + 1
        self.shardOf = shardOf
        shardNames =
            count == 1
            ? ["model.safetensors"]
            : (1...count).map { String(format: "model-%05d-of-%05d.safetensors", $0, count) }
        writers = Array(repeating: nil, count: count)
        self.metadata = metadata
        if tensors.isEmpty { try openShard(0) }
    }

    private let metadata: [String: String]

    /// fsync every shard before it is renamed (default true). False leaves write-back to the OS, as mergekit does:
    /// faster when the disk is slower than the merge, not safe against a power loss right after (see FileOutput).
    public var durable = true

    private func openShard(_ s: Int) throws(CheckpointError) {
        let specsHere = zip(specs, shardOf).filter { $0.1 == s }.map(\.0)
        let w = try SafeTensorsWriter(
            path: temporary.appendingPathComponent(shardNames[s]).path, tensors: specsHere, metadata: metadata)
        w.durable = durable
        writers[s] = w
    }

    /// The writer for the next tensor, opening its shard (and closing the previous one) as needed.
    private func writer(for name: String) throws(CheckpointError) -> SafeTensorsWriter {
        guard nextTensor < specs.count else {
            throw CheckpointError(.writeOrder, "\(target.path): tensor '\(name)' written after all planned tensors.")
        }
        let s = shardOf[nextTensor]
        if s != current, let w = writers[current] {
            try w.finish()
            writers[current] = nil
            current = s
        }
        if writers[s] == nil { try openShard(s) }
        guard let w = writers[s] else { preconditionFailure("shard writer missing") }
        return w
    }

    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        try writer(for: name).write(name, bytes: bytes)
        nextTensor += 1
    }

    public func write(_ name: String, floats: UnsafeBufferPointer<Float>) throws(CheckpointError) {
        try writer(for: name).write(name, floats: floats)
        nextTensor += 1
    }

    public func write(_ name: String, floats: [Float]) throws(CheckpointError) {
        try writer(for: name).write(name, floats: floats)
        nextTensor += 1
    }

    public func write(_ name: String, from view: TensorView) throws(CheckpointError) {
        try writer(for: name).write(name, from: view)
        nextTensor += 1
    }

    /// Adds a file (model card, config) to the output folder.
    public func addFile(_ name: String, contents: Data) throws(CheckpointError) {
        try output.add(name, contents: contents)
    }

    /// Copies `config.json` (with `torch_dtype` set to `dtype`), the tokenizer files and the sentence-transformers
    /// module folders (`ModelFolder.supportFolders`) from `source`.
    public func copySupportFiles(from source: ModelFolder, dtype: DType?) throws(CheckpointError) {
        // A GGUF model's files come from its metadata; its config.json (torch_dtype float32) takes the output dtype.
        for (name, data) in source.generatedFiles.sorted(by: { $0.key < $1.key }) {
            if name == "config.json", let torchName = dtype?.torchName, var config = try source.config() {
                config["torch_dtype"] = torchName
                try addJSON(name, config, origin: source.path)
            } else {
                try addFile(name, contents: data)
            }
        }
        for url in source.supportFolders {
            do {
                try FileManager.default.copyItem(at: url, to: temporary.appendingPathComponent(url.lastPathComponent))
            } catch {
                throw CheckpointError(.io, "\(url.path): cannot copy into the output: \(error.localizedDescription).")
            }
        }
        for url in source.supportFiles {
            let name = url.lastPathComponent
            if name == "config.json", let dtype, let torchName = dtype.torchName, var config = try source.config() {
                config["torch_dtype"] = torchName
                if config["dtype"] != nil { config["dtype"] = torchName }
                try addJSON(name, config, origin: url.path)
                continue
            }
            do {
                try FileManager.default.copyItem(at: url, to: temporary.appendingPathComponent(name))
            } catch {
                throw CheckpointError(.io, "\(url.path): cannot copy into the output: \(error.localizedDescription).")
            }
        }
    }

    /// Writes a JSON object as a support file (pretty-printed, sorted keys, final newline).
    private func addJSON(_ name: String, _ object: [String: Any], origin: String) throws(CheckpointError) {
        let data: Data
        do {
            data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        } catch {
            throw CheckpointError(.io, "\(origin): cannot rewrite \(name): \(error.localizedDescription).")
        }
        try addFile(name, contents: data + Data("\n".utf8))
    }

    /// Closes the last shard, writes the index when there are several shards, and moves the folder into place.
    public func finish() throws(CheckpointError) {
        guard nextTensor == specs.count else {
            throw CheckpointError(
                .writeOrder,
                "\(target.path): \(specs.count - nextTensor) planned tensors were not written (next: '\(specs[nextTensor].name)')."
            )
        }
        for case let w? in writers { try w.finish() }
        if shardNames.count > 1 {
            var json =
                "{\n  \"metadata\": {\n    \"total_size\": \(specs.reduce(0) { $0 + $1.byteCount })\n  },\n  \"weight_map\": {\n"
            let entries = zip(specs, shardOf).sorted { $0.0.name < $1.0.name }
            json += entries.map { "    \(jsonQuoted($0.0.name)): \(jsonQuoted(shardNames[$0.1]))" }.joined(
                separator: ",\n")
            json += "\n  }\n}\n"
            try addFile("model.safetensors.index.json", contents: Data(json.utf8))
        }
        try output.commit("the finished model")
    }
}
