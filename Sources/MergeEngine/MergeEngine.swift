import CheckpointIO
import Foundation
import TensorKernels

/// Settings of a merge run that are not in the YAML.
public struct MergeOptions: Sendable {
    /// Bound of one output shard in bytes (`--out-shard-size`).
    public var outShardSize: Int = ModelWriter.defaultMaxShardBytes
    /// `--random-seed`; randomised methods are reproducible for a given seed (see docs/merge.md).
    public var seed: UInt64 = 0
    /// Replace an existing output folder.
    public var overwrite = false
    /// Where named intermediates of a multi-document config go (default: a hidden folder beside the output,
    /// removed at the end).
    public var intermediateDirectory: String?
    /// Folder of the local Hugging Face hub cache (default: `$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`).
    public var hubCache: String?
    /// Use the streamed block-wise path for methods that have one (the default); false forces whole-tensor merging.
    public var streaming = true
    /// fsync every output file before it is renamed into place (`--no-fsync` turns it off). Durable output costs
    /// the disk's write time (2.2 GB at ~0.9-1.2 GB/s here), which early write-back overlaps with the merge.
    public var durable = true
    /// Test hook: an error to raise in place of a tensor's write on the output thread, as a full disk or a failing
    /// device would (a real write failure happens in `FileOutput`, out of a test's deterministic reach).
    var writeFault: (@Sendable (_ tensor: String) -> CheckpointError?)?

    public init() {}
}

/// Where a merge stands, reported after each tensor.
public struct MergeProgress: Sendable {
    public let document: Int
    public let documentCount: Int
    public let tensorsDone: Int
    public let tensorCount: Int
    /// Input + output bytes processed so far and in all.
    public let bytesDone: Int
    public let bytesTotal: Int
    public let seconds: Double
}

/// What a merge did.
public struct MergeSummary: Sendable {
    public let outputs: [String]
    public let tensors: Int
    public let bytesRead: Int
    public let bytesWritten: Int
    public let seconds: Double
}

/// Runs mergekit configurations: plans every output tensor, then streams tensor by tensor through the
/// memory-mapped inputs into a `ModelWriter`.
///
/// Memory: the whole-tensor path holds (inputs + 1) `Float` copies of the largest tensor (reused across tensors);
/// methods with a streamed path (`StreamingMergeMethod`) hold two output tensors in their stored dtype (one being
/// written by `OutputPipeline` while the next is computed) plus per-thread blocks. Input pages are dropped from the
/// resident set after each tensor.
public enum MergeEngine {
    /// Reads a YAML file and runs every document in it; the unnamed (or last) document is written to `output`.
    @discardableResult
    public static func run(
        configFile: String, output: String, options: MergeOptions = MergeOptions(),
        progress: ((MergeProgress) -> Void)? = nil
    ) throws(MergeError) -> MergeSummary {
        let text = try MergeConfigParser.read(configFile)  // refuses a file over MergeConfigParser.Limits.maxBytes
        let configs = try MergeConfigParser.parse(text, file: configFile)
        let dir = URL(fileURLWithPath: configFile).deletingLastPathComponent().path
        return try run(configs: configs, configDirectory: dir, output: output, options: options, progress: progress)
    }

    /// Runs parsed documents in order; named ones become intermediates that later documents reference by name.
    @discardableResult
    public static func run(
        configs: [MergeConfig], configDirectory: String?, output: String, options: MergeOptions = MergeOptions(),
        progress: ((MergeProgress) -> Void)? = nil
    ) throws(MergeError) -> MergeSummary {
        let unnamed = configs.filter { $0.name == nil }
        if unnamed.count > 1 {
            throw MergeError(
                .invalidConfig,
                "\(configs[0].file): \(unnamed.count) documents have no 'name'; only the final merge may be unnamed.")
        }
        let finalIndex = configs.firstIndex { $0.name == nil } ?? configs.count - 1
        let outURL = URL(fileURLWithPath: output).standardizedFileURL
        let temporaryIntermediates = options.intermediateDirectory == nil && configs.count > 1
        let interDir =
            options.intermediateDirectory
            ?? outURL.deletingLastPathComponent().appendingPathComponent(
                ".\(outURL.lastPathComponent).intermediates-\(getpid())"
            ).path
        defer { if temporaryIntermediates { try? FileManager.default.removeItem(atPath: interDir) } }

        var resolver = ModelResolver(configDirectory: configDirectory, hubCache: options.hubCache)
        var order = Array(configs.indices.filter { $0 != finalIndex })
        order.append(finalIndex)
        var outputs: [String] = []
        var tensors = 0
        var read = 0
        var written = 0
        let start = Date()
        for (n, i) in order.enumerated() {
            let config = configs[i]
            let target =
                i == finalIndex
                ? output : URL(fileURLWithPath: interDir).appendingPathComponent(config.name ?? "merge-\(i)").path
            let plan = try MergePlan(config: config, resolver: resolver)
            var opts = options
            if i != finalIndex { opts.overwrite = true }
            try execute(plan, output: target, options: opts) { p in
                progress?(
                    MergeProgress(
                        document: n, documentCount: configs.count, tensorsDone: p.tensorsDone,
                        tensorCount: p.tensorCount,
                        bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, seconds: p.seconds))
            }
            if let name = config.name { resolver.intermediates[name] = target }
            outputs.append(target)
            tensors += plan.tensors.count
            read += plan.bytesRead
            written += plan.bytesWritten
        }
        return MergeSummary(
            outputs: outputs, tensors: tensors, bytesRead: read, bytesWritten: written,
            seconds: Date().timeIntervalSince(start))
    }

    /// Executes one plan into the folder `output`.
    public static func execute(
        _ plan: MergePlan, output: String, options: MergeOptions, progress: ((MergeProgress) -> Void)? = nil
    ) throws(MergeError) {
        // Checkpoint failures are wrapped where they happen (`checkpoint { }`); a method's own `MergeError`
        // (`.numerical`, `.invalidInputs`, …) passes through with its code.
        try executeChecked(plan, output: output, options: options, progress: progress)
    }

    private static func executeChecked(
        _ plan: MergePlan, output: String, options: MergeOptions, progress: ((MergeProgress) -> Void)?
    ) throws(MergeError) {
        let writer = try checkpoint { () throws(CheckpointError) in
            try ModelWriter(
                directory: output, tensors: plan.tensors.map(\.spec), maxShardBytes: options.outShardSize,
                overwrite: options.overwrite)
        }
        writer.durable = options.durable
        let maxElements = plan.tensors.filter { !$0.copyRaw }.map(\.elementCount).max() ?? 0
        // The streamed path writes the output dtype's bytes (2 per element for BF16), not 8.
        let maxOutputBytes = plan.tensors.filter { !$0.copyRaw }.map(\.spec.byteCount).max() ?? 0
        let maxInputs = plan.tensors.map(\.inputs.count).max() ?? 0
        let streaming = options.streaming ? plan.method as? any StreamingMergeMethod.Type : nil
        // Buffers reused across tensors: pages are touched once, and RSS stays at (inputs + 1) x largest tensor.
        var pool: [UnsafeMutableBufferPointer<Float>] = []
        // Two output buffers of the streamed path: one is being written while the next tensor fills the other.
        var outBuffers: [UnsafeMutableRawBufferPointer] = []
        // Bytes of each output buffer already faulted in, and the buffer the write in flight may still read.
        var touched = [0, 0]
        var lastBuffer = 1
        let pipeline = OutputPipeline()
        let sendableWriter = UncheckedSendable(writer)
        let writeFault = options.writeFault
        defer {
            // Declared after the buffers' owner so it runs first: no write may still read a buffer being freed.
            try? pipeline.drain()
            for b in pool { b.deallocate() }
            for b in outBuffers { b.deallocate() }
        }
        let totalBytes = plan.bytesRead + plan.bytesWritten
        var done = 0
        let start = Date()
        for (ti, t) in plan.tensors.enumerated() {
            let n = t.elementCount
            var views: [TensorView] = []
            for inp in t.inputs {
                views.append(
                    try checkpoint { () throws(CheckpointError) in try plan.models[inp.model].folder.tensor(inp.tensor)
                    })
            }
            let inputBytes = views.reduce(0) { $0 + $1.bytes.count }
            if let vocabulary = plan.vocabulary, vocabulary.aligns(t.name) {
                // Tokenizer merge: rows re-laid out into the output vocabulary (VocabularyAlignment.swift).
                defer { for v in views { v.release() } }
                try checkpoint { () throws(CheckpointError) in try pipeline.drain() }
                let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
                defer { out.deallocate() }
                try vocabulary.merge(t, plan: plan, views: views, seed: options.seed, into: out)
                try checkpoint { () throws(CheckpointError) in
                    try writer.write(t.name, floats: UnsafeBufferPointer(out))
                }
            } else if t.copyRaw {
                // The write thread reads the mapping and drops its pages afterwards.
                let view = views[0]
                let name = t.name
                try checkpoint { () throws(CheckpointError) in
                    try pipeline.submit { () throws(CheckpointError) in
                        if let fault = writeFault?(name) { throw fault }
                        try sendableWriter.value.write(name, bytes: view.bytes)
                        view.release()
                    }
                }
            } else if let streaming, views.allSatisfy({ $0.dtype.isConvertibleFloat }) {
                defer { for v in views { v.release() } }
                if outBuffers.isEmpty {
                    outBuffers = [outputBuffer(bytes: maxOutputBytes), outputBuffer(bytes: maxOutputBytes)]
                }
                let outBytes = t.spec.byteCount
                var k = 1 - lastBuffer
                if outBytes > touched[k], touched[lastBuffer] >= outBytes {
                    // A fresh page costs more than waiting for the last write (on this project's VM, 262 MB of first
                    // touches took ~0.5 CPU-s): a large tensor reuses the buffer whose pages are already in.
                    try checkpoint { () throws(CheckpointError) in try pipeline.drain() }
                    k = lastBuffer
                }
                touched[k] = max(touched[k], outBytes)
                lastBuffer = k
                let dst = UnsafeMutableRawBufferPointer(rebasing: outBuffers[k][0..<outBytes])
                let sources = views.map { TensorSource(bytes: $0.bytes, dtype: $0.dtype, count: n) }
                let context = StreamingMergeContext(
                    tensorName: t.name, shape: t.shape,
                    inputs: zip(plan.tensorModels(t), zip(t.inputs, sources)).map { model, pair in
                        StreamingInput(
                            model: model, isBase: pair.0.isBase, source: pair.1, parameters: pair.0.parameters)
                    },
                    parameters: t.parameters, seed: options.seed)
                try streaming.mergeStreaming(context, into: TensorSink(bytes: dst, dtype: t.outDType, count: n))
                let name = t.name
                let bytes = UncheckedSendable(UnsafeRawBufferPointer(dst))
                try checkpoint { () throws(CheckpointError) in
                    try pipeline.submit { () throws(CheckpointError) in
                        if let fault = writeFault?(name) { throw fault }
                        try sendableWriter.value.write(name, bytes: bytes.value)
                    }
                }
            } else {
                defer { for v in views { v.release() } }
                // The whole-tensor path writes from the shared pool: let earlier writes finish first.
                try checkpoint { () throws(CheckpointError) in try pipeline.drain() }
                while pool.count < maxInputs + 1 { pool.append(.allocate(capacity: max(1, maxElements))) }
                var inputs: [MergeInput] = []
                for (i, (inp, view)) in zip(t.inputs, views).enumerated() {
                    let buf = UnsafeMutableBufferPointer(rebasing: pool[i][0..<n])
                    try checkpoint { () throws(CheckpointError) in try view.copyFloats(into: buf) }
                    view.release()
                    inputs.append(
                        MergeInput(
                            model: plan.models[inp.model].reference, isBase: inp.isBase,
                            values: UnsafeBufferPointer(buf),
                            parameters: inp.parameters))
                }
                let out = UnsafeMutableBufferPointer(rebasing: pool[maxInputs][0..<n])
                let context = TensorMergeContext(
                    tensorName: t.name, shape: t.shape, inputs: inputs, parameters: t.parameters, seed: options.seed)
                try plan.method.merge(context, into: out)
                try checkpoint { () throws(CheckpointError) in
                    try writer.write(t.name, floats: UnsafeBufferPointer(out))
                }
            }
            done += inputBytes + t.spec.byteCount
            progress?(
                MergeProgress(
                    document: 0, documentCount: 1, tensorsDone: ti + 1, tensorCount: plan.tensors.count,
                    bytesDone: done,
                    bytesTotal: totalBytes, seconds: Date().timeIntervalSince(start)))
        }
        try checkpoint { () throws(CheckpointError) in try pipeline.drain() }
        try writeSupportFiles(plan, writer: writer)
        try checkpoint { () throws(CheckpointError) in try writer.finish() }
    }

    /// An output buffer of the streamed path on 2 MB pages where the kernel allows (transparent huge pages on
    /// `madvise`): first filling 2 × 131 MB took 64 K page faults on 4 KB pages, about all of a merge's faults.
    static func outputBuffer(bytes: Int) -> UnsafeMutableRawBufferPointer {
        let huge = 2 << 20
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes), alignment: bytes >= huge ? huge : 64)
        #if os(Linux)
            if bytes >= huge, let p = b.baseAddress { _ = madvise(p, bytes / huge * huge, MADV_HUGEPAGE) }
        #endif
        return b
    }

    /// config.json (dtype, layer count), tokenizer files, the YAML and a model card.
    static func writeSupportFiles(_ plan: MergePlan, writer: ModelWriter) throws(MergeError) {
        try checkpoint { () throws(CheckpointError) in try copySupportFiles(plan, writer: writer) }
        if let vocabulary = plan.vocabulary {
            try vocabulary.writeTokenizer(to: writer)
        }
        try checkpoint { () throws(CheckpointError) in
            if let template = plan.config.chatTemplate {
                try writer.addFile("chat_template.jinja", contents: Data(template.utf8))
            }
            try writer.addFile("mergekit_config.yml", contents: Data(plan.config.yaml.utf8))
            try writer.addFile("README.md", contents: Data(modelCard(plan).utf8))
        }
    }

    /// The support model's config.json (dtype, layer count, vocabulary size) and tokenizer files.
    static func copySupportFiles(_ plan: MergePlan, writer: ModelWriter) throws(CheckpointError) {
        let config = plan.config
        let support = plan.models[plan.supportModel].folder
        let dtypes = plan.tensors.filter { !$0.copyRaw }.map(\.outDType)
        let outDType = config.outDType ?? config.dtype ?? mostCommon(dtypes)
        try writer.copySupportFiles(from: support, dtype: outDType)
        let configURL = writer.temporary.appendingPathComponent("config.json")
        if plan.outputLayerCount != nil || plan.vocabulary != nil, let data = try? Data(contentsOf: configURL),
            var json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        {
            if let layers = plan.outputLayerCount {
                for key in ["num_hidden_layers", "n_layer", "num_layers"] where json[key] != nil { json[key] = layers }
            }
            plan.vocabulary?.updateConfig(&json)
            if let d = try? JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys]) {
                try writer.addFile("config.json", contents: d + Data("\n".utf8))
            }
        }
    }

    static func mostCommon(_ d: [DType]) -> DType? {
        var counts: [DType: Int] = [:]
        for x in d { counts[x, default: 0] += 1 }
        return counts.max { $0.value < $1.value || ($0.value == $1.value && $0.key.rawValue > $1.key.rawValue) }?.key
    }

    /// A Hugging Face model card: front matter tags, the method, the inputs and the configuration.
    static func modelCard(_ plan: MergePlan) -> String {
        let c = plan.config
        let base = c.baseModel.map { "`\($0)`" } ?? "none"
        var s = "---\nbase_model:\n"
        for m in plan.models { s += "- \(m.reference)\n" }
        s += "library_name: transformers\ntags:\n- mergekit\n- merge\n- taskswitch\n---\n"
        s += "# \(c.name ?? "Merged model")\n\n"
        s += "This model was merged with TaskSwitch (`tswitch merge`), which runs mergekit configurations.\n\n"
        s += "## Merge details\n\n"
        s += "- **Method:** `\(plan.method.name)` (\(plan.method.summary))\n"
        s += "- **Base model:** \(base)\n"
        s += "- **Models merged:**\n"
        for m in plan.models where m.reference != c.baseModel { s += "  - `\(m.reference)`\n" }
        s += "- **Tensors:** \(plan.tensors.count)\n\n"
        s += "## Configuration\n\n```yaml\n\(c.yaml.trimmingCharacters(in: .whitespacesAndNewlines))\n```\n"
        return s
    }
}

extension MergePlan {
    /// Model references of a tensor's inputs, in order.
    func tensorModels(_ t: PlannedTensor) -> [String] { t.inputs.map { models[$0.model].reference } }
}
