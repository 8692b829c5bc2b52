import CheckpointIO
import Foundation

/// Settings of a `tswitch moe` run that are not in the YAML.
public struct MoEOptions: Sendable {
    /// Seed of the torch generator that `random` and `uniform_random` routers are drawn from: the routers equal
    /// mergekit-moe's with `--random-seed` set to the same value. (Without that option mergekit-moe is not
    /// reproducible: importing it reseeds torch's generator.)
    public var seed: UInt64 = 0
    /// Bound of one output shard in bytes.
    public var outShardSize: Int = ModelWriter.defaultMaxShardBytes
    /// Replace an existing output folder.
    public var overwrite = false
    /// fsync every output file before it is renamed into place.
    public var durable = true
    /// mergekit's `--i-understand-this-is-not-useful-without-training`.
    public var allowAllSame = false
    /// Folder of the local Hugging Face hub cache (default as `MergeOptions.hubCache`).
    public var hubCache: String?
    /// Builds the tokenizer of the base model folder for `cheap_embed` prompts.
    public var loadTokenizer: (@Sendable (URL) throws -> PromptTokenizer)?

    public init() {}
}

/// What a `tswitch moe` run wrote.
public struct MoESummary: Sendable {
    public let architecture: MoEArchitecture
    public let experts: Int
    public let layers: Int
    public let tensors: Int
    public let bytesWritten: Int
    public let seconds: Double
}

/// Builds a sparse mixture-of-experts checkpoint from dense models, as mergekit-moe does (mergekit/moe/): the
/// base model's attention, norms, embeddings and head; each expert model's MLP as expert `i` of every layer; a
/// router per layer from `MoERouter`.
///
/// Streams tensor by tensor from the memory-mapped inputs into a `ModelWriter` (atomic, sharded); every input is
/// checked before the output folder is created: model types, layer counts, each MLP tensor's presence and shape.
public enum MoEBuilder {
    /// Reads `configFile` and builds the mixture into `output`.
    @discardableResult
    public static func run(configFile: String, output: String, options: MoEOptions = MoEOptions()) throws(MergeError)
        -> MoESummary
    {
        let config = try MoEConfigParser.load(configFile, allowAllSame: options.allowAllSame)
        let dir = URL(fileURLWithPath: configFile).deletingLastPathComponent().path
        return try build(config, configDirectory: dir, output: output, options: options)
    }

    /// One output tensor and where its values come from.
    struct Planned {
        enum Source {
            /// A tensor of an input, optionally scaled (mergekit's `residual_scale`, in the input's dtype).
            case copy(ModelFolder, String, scale: Double?)
            case zeros
            case floats([Float])
        }
        let spec: TensorSpec
        let source: Source
    }

    /// The dense shape facts every input must share with the base.
    struct DenseShape {
        let modelType: String
        let layers: Int
        let hidden: Int
        let intermediate: Int
        let heads: Int
        let kvHeads: Int
    }

    static func denseShape(_ config: [String: Any]?, file: String) throws(MergeError) -> DenseShape {
        guard let c = config else {
            throw MergeError(
                .invalidInputs, "\(file): the model has no config.json; mergekit-moe needs its model_type and sizes.")
        }
        func int(_ key: String) throws(MergeError) -> Int {
            guard let v = c[key] as? Int, v > 0 else {
                throw MergeError(.invalidInputs, "\(file)/config.json: '\(key)' is missing or not a positive integer.")
            }
            return v
        }
        guard let type = c["model_type"] as? String else {
            throw MergeError(.invalidInputs, "\(file)/config.json: 'model_type' is missing.")
        }
        let heads = try int("num_attention_heads")
        return DenseShape(
            modelType: type, layers: try int("num_hidden_layers"), hidden: try int("hidden_size"),
            intermediate: try int("intermediate_size"), heads: heads,
            kvHeads: (c["num_key_value_heads"] as? Int) ?? heads)
    }

    /// Builds `config` into `output`; relative model paths resolve against `configDirectory`.
    @discardableResult
    public static func build(
        _ config: MoEConfig, configDirectory: String?, output: String, options: MoEOptions = MoEOptions()
    ) throws(MergeError) -> MoESummary {
        let start = Date()
        let file = config.file
        // A parsed configuration passed these already; one built in code has not.
        try MoEConfigParser.check(config, file: file, expertsLine: 0, allowAllSame: options.allowAllSame)
        let resolver = ModelResolver(configDirectory: configDirectory, hubCache: options.hubCache)
        var folders: [String: ModelFolder] = [:]
        func open(_ reference: String) throws(MergeError) -> ModelFolder {
            let path = try resolver.resolve(reference, file: file)
            if let f = folders[path] { return f }
            let f = try checkpoint { () throws(CheckpointError) in try ModelFolder(path: path) }
            folders[path] = f
            return f
        }
        let base = try open(config.baseModel)
        let experts = try config.experts.map { (e) throws(MergeError) in try open(e.sourceModel) }
        let shared = try config.sharedExperts.map { (e) throws(MergeError) in try open(e.sourceModel) }

        let baseConfig = try checkpoint { () throws(CheckpointError) in try base.config() }
        let shape = try denseShape(baseConfig, file: base.path)
        var types = [shape.modelType]
        for m in experts + shared {
            let s = try denseShape(try checkpoint { () throws(CheckpointError) in try m.config() }, file: m.path)
            types.append(s.modelType)
            guard s.hidden == shape.hidden, s.intermediate == shape.intermediate, s.layers >= shape.layers else {
                throw MergeError(
                    .shapeMismatch,
                    "\(m.path): hidden_size \(s.hidden), intermediate_size \(s.intermediate), \(s.layers) layers; the base '\(base.path)' has \(shape.hidden), \(shape.intermediate), \(shape.layers) (an expert needs the same sizes and at least as many layers)."
                )
            }
        }
        let arch = try MoEArchitecture.select(for: config, modelTypes: types)
        let outDType = try outputDType(config, baseConfig: baseConfig ?? [:], file: base.path)

        // Routers: every expert, then the shared experts when they have prompts or the rows are random.
        var gates = config.experts
        let sharedGated =
            config.sharedExperts.contains { !$0.positivePrompts.isEmpty } || config.gateMode == .random
            || config.gateMode == .uniformRandom
        if sharedGated { gates += config.sharedExperts }
        let rows = try routerRows(
            config, gates: gates, base: base, layers: shape.layers, hidden: shape.hidden, options: options)

        let plan = try planTensors(
            config, arch: arch, base: base, experts: experts, shared: shared, shape: shape, outDType: outDType,
            rows: rows, gates: gates.count)

        let outConfig = arch.outputConfig(
            base: baseConfig ?? [:], experts: config.experts.count, expertsPerToken: config.expertsPerToken,
            dtype: outDType)
        let configData: Data
        do {
            configData =
                try JSONSerialization.data(withJSONObject: outConfig, options: [.prettyPrinted, .sortedKeys])
                + Data("\n".utf8)
        } catch {
            throw MergeError(.invalidInputs, "\(base.path)/config.json: cannot be written back as JSON: \(error).")
        }

        var written = 0
        try checkpoint { () throws(CheckpointError) in
            let writer = try ModelWriter(
                directory: output, tensors: plan.map(\.spec), maxShardBytes: options.outShardSize,
                overwrite: options.overwrite)
            writer.durable = options.durable
            for p in plan {
                try write(p, to: writer)
                written += p.spec.byteCount
            }
            try writer.addFile("config.json", contents: configData)
            for url in base.supportFiles where tokenizerFiles.contains(url.lastPathComponent) {
                guard let data = FileManager.default.contents(atPath: url.path) else {
                    throw CheckpointError(.io, "\(url.path): cannot read it to copy into the output.")
                }
                try writer.addFile(url.lastPathComponent, contents: data)
            }
            if !config.yaml.isEmpty { try writer.addFile("mergekit_moe_config.yml", contents: Data(config.yaml.utf8)) }
            try writer.finish()
        }
        return MoESummary(
            architecture: arch, experts: config.experts.count, layers: shape.layers, tensors: plan.count,
            bytesWritten: written, seconds: Date().timeIntervalSince(start))
    }

    /// The files of the base's tokenizer that the output carries (mergekit saves the base tokenizer).
    static let tokenizerFiles: Set<String> = [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
        "tokenizer.model", "added_tokens.json", "chat_template.jinja",
    ]

    /// `dtype` of the configuration, else the base's `torch_dtype` (or `dtype`), else nil (tensors keep theirs).
    static func outputDType(_ config: MoEConfig, baseConfig: [String: Any], file: String) throws(MergeError) -> DType? {
        if let d = config.dtype { return d }
        guard let name = (baseConfig["torch_dtype"] ?? baseConfig["dtype"]) as? String else { return nil }
        guard let d = DType(userName: name), d.isConvertibleFloat else {
            throw MergeError(
                .invalidInputs,
                "\(file)/config.json: torch_dtype '\(name)' is not a float type; set 'dtype' in the configuration.")
        }
        return d
    }

    /// Router rows (layers, gates, hidden) for the configuration's gate mode.
    static func routerRows(
        _ config: MoEConfig, gates: [MoEExpert], base: ModelFolder, layers: Int, hidden: Int, options: MoEOptions
    ) throws(MergeError) -> [Float] {
        switch config.gateMode {
        case .random:
            return MoERouter.random(layers: layers, gates: gates.count, hidden: hidden, seed: options.seed)
        case .uniformRandom:
            return MoERouter.uniformRandom(layers: layers, gates: gates.count, hidden: hidden, seed: options.seed)
        case .hidden, .hiddenAverage:
            let tokenizer = try promptTokenizer(config, base: base, options: options)
            return try MoERouter.hiddenStates(
                gates: gates, layers: layers, base: base, tokenizer: tokenizer,
                bos: MoERouter.bosToken(folder: base.directory),
                reduction: config.gateMode == .hidden ? .lastToken : .mean, file: config.file)
        case .cheapEmbed:
            let name = "model.embed_tokens.weight"
            let embedding = try checkpoint { () throws(CheckpointError) in try base.tensor(name) }
            guard embedding.shape.count == 2, embedding.shape[1] == hidden else {
                throw MergeError(
                    .shapeMismatch,
                    "\(base.path): tensor '\(name)' has shape \(embedding.shape); expected [vocab, \(hidden)].")
            }
            let tokenizer = try promptTokenizer(config, base: base, options: options)
            defer { embedding.release() }
            return try MoERouter.cheapEmbed(
                gates: gates, layers: layers, embedding: embedding, tokenizer: tokenizer,
                bos: MoERouter.bosToken(folder: base.directory), file: config.file)
        }
    }

    /// The base's tokenizer for the prompts of `cheap_embed` and `hidden`.
    static func promptTokenizer(
        _ config: MoEConfig, base: ModelFolder, options: MoEOptions
    ) throws(MergeError) -> PromptTokenizer {
        guard let load = options.loadTokenizer else {
            throw MergeError(
                .invalidInputs,
                "\(config.file): gate_mode \(config.gateMode.rawValue) needs the base model's tokenizer, and none was given."
            )
        }
        do {
            return try load(base.directory)
        } catch {
            throw MergeError(
                .invalidInputs,
                "\(base.path): cannot build the tokenizer for \(config.gateMode.rawValue) prompts: \(error)",
                cause: error)
        }
    }

    /// Every output tensor in write order, each input tensor checked for presence and shape.
    static func planTensors(
        _ config: MoEConfig, arch: MoEArchitecture, base: ModelFolder, experts: [ModelFolder], shared: [ModelFolder],
        shape: DenseShape, outDType: DType?, rows: [Float], gates: Int
    ) throws(MergeError) -> [Planned] {
        var plan: [Planned] = []
        func copy(
            _ m: ModelFolder, _ name: String, as out: String? = nil, shape expected: [Int]? = nil, scale: Double? = nil,
            optional: Bool = false
        ) throws(MergeError) {
            guard let info = m.info(name) else {
                if optional { return }
                throw MergeError(.missingTensor, "\(m.path): no tensor named '\(name)', which the mixture needs.")
            }
            if let expected, info.shape != expected {
                throw MergeError(
                    .shapeMismatch, "\(m.path): tensor '\(name)' has shape \(info.shape); expected \(expected).")
            }
            if outDType != nil || scale != nil, !info.dtype.isConvertibleFloat {
                throw MergeError(
                    .invalidInputs, "\(m.path): tensor '\(name)' is \(info.dtype.rawValue); expected a float type.")
            }
            plan.append(
                Planned(
                    spec: TensorSpec(name: out ?? name, dtype: outDType ?? info.dtype, shape: info.shape),
                    source: .copy(m, name, scale: scale)))
        }
        let h = shape.hidden
        let i = shape.intermediate
        let mlp: [(source: String, mixtral: String, shape: [Int], residual: Bool)] = [
            ("gate_proj", "w1", [i, h], false), ("down_proj", "w2", [h, i], true), ("up_proj", "w3", [i, h], false),
        ]
        try copy(base, "model.embed_tokens.weight")
        for l in 0..<shape.layers {
            let p = "model.layers.\(l)"
            try copy(base, "\(p).input_layernorm.weight", shape: [h])
            try copy(base, "\(p).post_attention_layernorm.weight", shape: [h])
            for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] { try copy(base, "\(p).self_attn.\(proj).weight") }
            let layerRows = Array(rows[(l * gates * h)..<((l + 1) * gates * h)])
            let routerDType = outDType ?? .F32
            switch arch {
            case .mixtral:
                for (e, m) in experts.enumerated() {
                    for t in mlp {
                        try copy(
                            m, "\(p).mlp.\(t.source).weight",
                            as: "\(p).block_sparse_moe.experts.\(e).\(t.mixtral).weight",
                            shape: t.shape, scale: t.residual ? config.experts[e].residualScale : nil)
                    }
                }
                plan.append(
                    Planned(
                        spec: TensorSpec(
                            name: "\(p).block_sparse_moe.gate.weight", dtype: routerDType, shape: [experts.count, h]),
                        source: .floats(Array(layerRows[0..<(experts.count * h)]))))
            case .qwen2MoE:
                // Qwen2-MoE attention always has q/k/v biases; mergekit writes zeros when the base has none, sized
                // with hidden_size / num_attention_heads as the head size.
                let headDim = h / shape.heads
                for (proj, heads) in [("q_proj", shape.heads), ("k_proj", shape.kvHeads), ("v_proj", shape.kvHeads)] {
                    let name = "\(p).self_attn.\(proj).bias"
                    if base.info(name) != nil {
                        try copy(base, name)
                    } else {
                        plan.append(
                            Planned(
                                spec: TensorSpec(name: name, dtype: outDType ?? .F32, shape: [heads * headDim]),
                                source: .zeros))
                    }
                }
                for (e, m) in experts.enumerated() {
                    for t in mlp {
                        try copy(
                            m, "\(p).mlp.\(t.source).weight", as: "\(p).mlp.experts.\(e).\(t.source).weight",
                            shape: t.shape, scale: t.residual ? config.experts[e].residualScale : nil)
                    }
                }
                for t in mlp {
                    try copy(
                        shared[0], "\(p).mlp.\(t.source).weight", as: "\(p).mlp.shared_expert.\(t.source).weight",
                        shape: t.shape, scale: t.residual ? config.sharedExperts[0].residualScale : nil)
                }
                plan.append(
                    Planned(
                        spec: TensorSpec(name: "\(p).mlp.gate.weight", dtype: routerDType, shape: [experts.count, h]),
                        source: .floats(Array(layerRows[0..<(experts.count * h)]))))
                // The shared expert's gate: its router row (selection guarantees one: Qwen MoE needs the shared
                // expert's prompts unless the rows are random); zeros only as a defensive fallback.
                let sharedRow =
                    gates > experts.count ? Array(layerRows[(experts.count * h)..<((experts.count + 1) * h)]) : nil
                plan.append(
                    Planned(
                        spec: TensorSpec(
                            name: "\(p).mlp.shared_expert_gate.weight", dtype: routerDType, shape: [1, h]),
                        source: sharedRow.map { .floats($0) } ?? .zeros))
            }
        }
        try copy(base, "model.norm.weight", shape: [h])
        try copy(base, "lm_head.weight", optional: true)
        return plan
    }

    /// Writes one planned tensor, dropping its input pages afterwards.
    static func write(_ p: Planned, to writer: ModelWriter) throws(CheckpointError) {
        switch p.source {
        case .copy(let m, let name, let scale):
            let view = try m.tensor(name)
            defer { view.release() }
            guard let scale else {
                try writer.write(p.spec.name, from: view)
                return
            }
            // torch multiplies in float and rounds to the tensor's dtype, then `.to(out_dtype)` rounds again.
            let s = Float(scale)
            var values = try view.floats().map { $0 * s }
            if view.dtype == .BF16 || view.dtype == .F16 {
                values = roundTrip(values, through: view.dtype)
            }
            try writer.write(p.spec.name, floats: values)
        case .zeros:
            try writer.write(p.spec.name, floats: [Float](repeating: 0, count: p.spec.elementCount))
        case .floats(let values):
            try writer.write(p.spec.name, floats: values)
        }
    }

    /// `values` rounded to `dtype` and widened back: the value a torch tensor of that dtype holds.
    static func roundTrip(_ values: [Float], through dtype: DType) -> [Float] {
        var bytes = [UInt8](repeating: 0, count: values.count * dtype.bitWidth / 8)
        var out = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { src in
            bytes.withUnsafeMutableBytes { DTypeConversion.fromFloat(src, to: dtype, into: $0) }
        }
        bytes.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { DTypeConversion.toFloat(raw, dtype: dtype, into: $0) }
        }
        return out
    }
}
