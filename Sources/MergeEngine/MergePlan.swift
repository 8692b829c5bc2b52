import CheckpointIO
import Foundation
import TensorKernels

/// One input of one output tensor.
public struct PlannedInput: Sendable {
    /// Index into `MergePlan.models`.
    public let model: Int
    /// The tensor's name in that model (differs from the output name in layer stacks).
    public let tensor: String
    public let isBase: Bool
    public let parameters: [String: ParameterValue]
}

/// One output tensor: what to read, how to merge, how to store.
public struct PlannedTensor: Sendable {
    public let name: String
    public let shape: [Int]
    public let outDType: DType
    public let inputs: [PlannedInput]
    public let parameters: [String: ParameterValue]
    /// Non-float tensors (integer buffers) are copied from the first input unchanged.
    public let copyRaw: Bool

    public var spec: TensorSpec { TensorSpec(name: name, dtype: outDType, shape: shape) }
    public var elementCount: Int { shape.reduce(1, *) }
}

/// An input model, opened (headers validated, nothing read).
public struct PlannedModel: Sendable {
    public let reference: String
    public let path: String
    public let folder: ModelFolder
    /// For `model+lora`: the temporary folder holding the merged model, deleted when the plan is released.
    let scratch: ScratchFolder?

    init(reference: String, path: String, folder: ModelFolder, scratch: ScratchFolder? = nil) {
        self.reference = reference
        self.path = path
        self.folder = folder
        self.scratch = scratch
    }

    /// A temporary folder removed with its last reference.
    final class ScratchFolder: Sendable {
        let path: String
        init(_ path: String) { self.path = path }
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    /// Opens `reference`; `model+lora` (mergekit's syntax, a PEFT adapter folder after the `+`) is merged first
    /// into a temporary folder (`$TMPDIR`), as mergekit merges it into its LoRA cache before planning.
    static func open(_ reference: String, resolver: ModelResolver, file: String) throws(MergeError) -> PlannedModel {
        let parts = reference.split(separator: "+", omittingEmptySubsequences: false).map(String.init)
        let whole = try? resolver.resolve(reference, file: file)
        if whole == nil, parts.count == 2 {
            let modelPath = try resolver.resolve(parts[0], file: file)
            let loraPath = try resolver.resolve(parts[1], file: file)
            let out = FileManager.default.temporaryDirectory
                .appendingPathComponent("tswitch-lora-\(getpid())-\(UInt64.random(in: 0...UInt64.max))").path
            do throws(CheckpointError) {
                let adapter = try LoRAAdapterFolder(path: loraPath)
                try adapter.writeMerged(base: try ModelFolder(path: modelPath), to: out)
                let scratch = ScratchFolder(out)
                return PlannedModel(
                    reference: reference, path: out, folder: try ModelFolder(path: out), scratch: scratch)
            } catch {
                try? FileManager.default.removeItem(atPath: out)
                throw MergeError(
                    .checkpoint, "\(file): model '\(reference)' (LoRA adapter merged into the model): \(error.message)",
                    cause: error)
            }
        }
        var path = whole ?? ""
        if whole == nil { path = try resolver.resolve(reference, file: file) }
        do throws(CheckpointError) {
            return PlannedModel(reference: reference, path: path, folder: try ModelFolder(path: path))
        } catch {
            throw MergeError(.checkpoint, "\(file): model '\(reference)': \(error.message)", cause: error)
        }
    }
}

/// The complete list of output tensors, computed before any tensor data is read, so that shape and name errors
/// surface before work starts and the writer can lay out shards up front.
public struct MergePlan: Sendable {
    public let config: MergeConfig
    public let method: any MergeMethod.Type
    public let models: [PlannedModel]
    public let tensors: [PlannedTensor]
    /// The model whose config.json and tokenizer files the output carries (the base, else the first model).
    public let supportModel: Int
    /// Output layer count when slices change it (written to config.json), else nil.
    public let outputLayerCount: Int?
    /// The tokenizer merge (`tokenizer_source` / `tokenizer:`), nil when the config asks for none.
    public let vocabulary: VocabularyAlignment?

    /// Bytes the merge reads (every input of every tensor) and writes.
    public var bytesRead: Int {
        tensors.reduce(0) { acc, t in
            acc + t.inputs.reduce(0) { $0 + (models[$1.model].folder.info($1.tensor)?.byteCount ?? 0) }
        }
    }
    public var bytesWritten: Int { tensors.reduce(0) { $0 + $1.spec.byteCount } }

    /// Plans `config`; models are resolved with `resolver`.
    public init(config: MergeConfig, resolver: ModelResolver) throws(MergeError) {
        guard let method = MergeMethodRegistry.method(named: config.mergeMethod) else {
            throw MergeError(
                .unknownMethod,
                "\(config.file):\(config.mergeMethodLine): unknown merge_method '\(config.mergeMethod)'.")
        }
        self.config = config
        self.method = method
        let file = config.file

        // Open every model once.
        var models: [PlannedModel] = []
        var indexOf: [String: Int] = [:]
        for ref in config.referencedModels {
            indexOf[ref] = models.count
            models.append(try PlannedModel.open(ref, resolver: resolver, file: file))
        }
        self.models = models
        let vocabulary = try VocabularyAlignment.build(config: config, models: models)
        self.vocabulary = vocabulary

        try Self.checkParameterNames(config, method: method)

        // models: -> one slice over all layers, base appended when not listed (as mergekit's planner does).
        var slices: [SliceDefinition]
        if let list = config.models {
            var sources: [SourceDefinition] = []
            for m in list {
                var s = m
                s.layerRange = 0..<Self.layerCount(models[indexOf[m.model] ?? 0].folder)
                sources.append(s)
            }
            if let b = config.baseModel, method.basePolicy != .ignored, !list.contains(where: { $0.model == b }) {
                sources.append(
                    SourceDefinition(model: b, layerRange: 0..<Self.layerCount(models[indexOf[b] ?? 0].folder), line: 0)
                )
            }
            let lengths = Set(sources.map { $0.layerRange?.count ?? 0 })
            guard lengths.count == 1 else {
                let desc = sources.map { "\($0.model): \($0.layerRange?.count ?? 0)" }.joined(separator: ", ")
                throw MergeError(
                    .shapeMismatch,
                    "\(file): the models have different layer counts (\(desc)); use slices to pick equal ranges.")
            }
            slices = [SliceDefinition(sources: sources, line: list.first?.line ?? 0)]
        } else {
            slices = config.slices ?? []
        }

        // Method contract per slice.
        for s in slices {
            let base = method.basePolicy == .ignored ? nil : (s.baseModel ?? config.baseModel)
            let hasBase = base.map { b in s.sources.contains { $0.model == b } } ?? false
            if method.basePolicy == .required, !hasBase {
                throw MergeError(
                    .invalidInputs,
                    "\(file):\(s.line): merge method '\(method.name)' needs a base_model among the inputs\(base.map { "; '\($0)' is not one of this slice's sources" } ?? "")."
                )
            }
            let nonBase = s.sources.count - (hasBase ? 1 : 0)
            guard method.nonBaseCount.contains(nonBase) else {
                let r = method.nonBaseCount
                let want =
                    r.lowerBound == r.upperBound
                    ? "exactly \(r.lowerBound)"
                    : (r.upperBound == Int.max ? "at least \(r.lowerBound)" : "\(r.lowerBound) to \(r.upperBound)")
                throw MergeError(
                    .invalidInputs,
                    "\(file):\(s.line): merge method '\(method.name)' takes \(want) non-base model(s); this merge has \(nonBase)."
                )
            }
            var seen = Set<String>()
            for src in s.sources where !seen.insert(src.model).inserted {
                throw MergeError(
                    .invalidInputs,
                    "\(file):\(src.line): model '\(src.model)' appears twice among the inputs of one merge.")
            }
        }

        // Enumerate output tensors: pre-layer weights, layer stacks, post-layer weights.
        var out: [PlannedTensor] = []
        func sliceBase(_ s: SliceDefinition) -> String? {
            method.basePolicy == .ignored ? nil : (s.baseModel ?? config.baseModel)
        }
        func referenceSource(_ s: SliceDefinition) -> SourceDefinition {
            if let b = sliceBase(s), let src = s.sources.first(where: { $0.model == b }) { return src }
            return s.sources[0]
        }
        let firstRef = models[indexOf[referenceSource(slices[0]).model] ?? 0].folder
        let lastRef = models[indexOf[referenceSource(slices[slices.count - 1]).model] ?? 0].folder
        let tied = Self.tiesEmbeddings(firstRef)
        func nonLayer(_ f: ModelFolder, pre: Bool) -> [String] {
            f.tensorNames.filter { LayerName($0) == nil && LayerName.isPreLayer($0) == pre }
                .filter { !(tied && $0 == "lm_head.weight") }
        }
        func plan(_ outName: String, slice s: SliceDefinition, inputNames: [String], t: Double) throws(MergeError) {
            out.append(
                try Self.planTensor(
                    outName, slice: s, inputNames: inputNames, t: t, base: sliceBase(s), config: config, method: method,
                    models: models, indexOf: indexOf, vocabulary: vocabulary))
        }
        for name in nonLayer(firstRef, pre: true) {
            try plan(name, slice: slices[0], inputNames: Array(repeating: name, count: slices[0].sources.count), t: 0)
        }
        var outLayer = 0
        for s in slices {
            let ref = referenceSource(s)
            let refFolder = models[indexOf[ref.model] ?? 0].folder
            let count = ref.layerRange?.count ?? 0
            for idx in 0..<count {
                let t = count > 1 ? Double(idx) / Double(count - 1) : 1
                let refLayer = (ref.layerRange?.lowerBound ?? 0) + idx
                let template = refFolder.tensorNames.compactMap { n -> LayerName? in
                    guard let l = LayerName(n), l.index == refLayer else { return nil }
                    return l
                }
                if template.isEmpty {
                    throw MergeError(
                        .missingTensor, "\(file):\(s.line): model '\(ref.model)' has no tensors for layer \(refLayer).")
                }
                for l in template {
                    let names = s.sources.map { l.with(index: ($0.layerRange?.lowerBound ?? 0) + idx) }
                    try plan(l.with(index: outLayer), slice: s, inputNames: names, t: t)
                }
                outLayer += 1
            }
        }
        let last = slices[slices.count - 1]
        for name in nonLayer(lastRef, pre: false) {
            try plan(name, slice: last, inputNames: Array(repeating: name, count: last.sources.count), t: 0)
        }
        tensors = out
        supportModel = indexOf[referenceSource(slices[0]).model] ?? 0
        outputLayerCount = config.slices != nil ? outLayer : nil
    }

    /// Rejects parameter keys the method does not take, naming the line.
    static func checkParameterNames(_ config: MergeConfig, method: any MergeMethod.Type) throws(MergeError) {
        let known = Set(method.parameters.map(\.name))
        var blocks: [ParameterBlock] = [config.parameters]
        for m in config.models ?? [] { blocks.append(m.parameters) }
        for s in config.slices ?? [] {
            blocks.append(s.parameters)
            for src in s.sources { blocks.append(src.parameters) }
        }
        for b in blocks {
            for key in b.settings.keys.sorted() where !known.contains(key) {
                let expected =
                    known.isEmpty ? "it takes none" : "expected one of \(known.sorted().joined(separator: ", "))"
                throw MergeError(
                    .unknownKey,
                    "\(config.file):\(b.lines[key] ?? 0): merge method '\(method.name)' has no parameter '\(key)'; \(expected)."
                )
            }
        }
    }

    static func layerCount(_ f: ModelFolder) -> Int {
        if let c = try? f.config() {
            for key in ["num_hidden_layers", "n_layer", "num_layers"] {
                if let n = c[key] as? Int { return n }
            }
        }
        return (f.tensorNames.compactMap { LayerName($0)?.index }.max() ?? -1) + 1
    }

    static func tiesEmbeddings(_ f: ModelFolder) -> Bool {
        guard f.contains("lm_head.weight"), f.tensorNames.contains(where: { $0.hasSuffix("embed_tokens.weight") }),
            let c = try? f.config(), let tie = c["tie_word_embeddings"] as? Bool
        else { return false }
        return tie
    }

    static func planTensor(
        _ name: String, slice s: SliceDefinition, inputNames: [String], t: Double, base: String?, config: MergeConfig,
        method: any MergeMethod.Type, models: [PlannedModel], indexOf: [String: Int],
        vocabulary: VocabularyAlignment? = nil
    ) throws(MergeError) -> PlannedTensor {
        let file = config.file
        // Integer buffers (e.g. BERT's `embeddings.position_ids`) are not weights: transformers omits them when it
        // saves a fine-tune, so one present in some inputs is copied from the first that has it.
        let holders = zip(s.sources, inputNames).compactMap { src, tname in
            models[indexOf[src.model] ?? 0].folder.info(tname).map { (src: src, tensor: tname, info: $0) }
        }
        if holders.count < s.sources.count, let first = holders.first, !first.info.dtype.isConvertibleFloat {
            let input = PlannedInput(
                model: indexOf[first.src.model] ?? 0, tensor: first.tensor, isBase: first.src.model == base,
                parameters: [:])
            return PlannedTensor(
                name: name, shape: first.info.shape, outDType: first.info.dtype, inputs: [input], parameters: [:],
                copyRaw: true)
        }
        var infos: [TensorInfo] = []
        for (src, tname) in zip(s.sources, inputNames) {
            let folder = models[indexOf[src.model] ?? 0].folder
            guard let info = folder.info(tname) else {
                throw MergeError(
                    .missingTensor,
                    "\(file): model '\(src.model)' has no tensor '\(tname)' (needed for output tensor '\(name)').")
            }
            infos.append(info)
        }
        var shape = infos[0].shape
        if let vocabulary, vocabulary.aligns(name) {
            // Token-indexed rows are re-laid out into the output vocabulary; the other axes must agree.
            if shape.isEmpty
                || infos.contains(where: { $0.shape.dropFirst() != shape.dropFirst() || !$0.dtype.isConvertibleFloat })
            {
                let desc = zip(s.sources, infos).map { "\($0.model): \($1.shapeDescription)" }.joined(separator: ", ")
                throw MergeError(
                    .shapeMismatch,
                    "\(file): vocabulary tensor '\(name)' must be a float tensor with equal non-vocabulary dimensions in every input (\(desc))."
                )
            }
            for (src, info) in zip(s.sources, infos) {
                try vocabulary.check(tensor: name, model: src.model, shape: info.shape)
            }
            shape[0] = vocabulary.rows
        } else if infos.contains(where: { $0.shape != shape }) {
            let desc = zip(zip(s.sources, inputNames), infos).map { pair, info in
                // A GGUF input also names the tensor as the file spells it.
                let stored =
                    models[indexOf[pair.0.model] ?? 0].folder.ggufName(pair.1).map { " (GGUF tensor '\($0)')" } ?? ""
                return "\(pair.0.model): \(info.shapeDescription)\(stored)"
            }.joined(separator: ", ")
            throw MergeError(.shapeMismatch, "\(file): tensor '\(name)' has different shapes in the inputs (\(desc)).")
        }
        let reference = base.flatMap { b in s.sources.firstIndex { $0.model == b } } ?? 0
        let refDType = infos[reference].dtype
        let copyRaw = !infos.allSatisfy { $0.dtype.isConvertibleFloat }
        let outDType = copyRaw ? refDType : (config.outDType ?? config.dtype ?? refDType)

        var shared: [String: ParameterValue] = [:]
        for p in method.parameters where p.scope == .shared {
            shared[p.name] = try resolve(
                p, scopes: [s.parameters, config.parameters], tensor: name, t: t, model: nil, file: file)
        }
        var inputs: [PlannedInput] = []
        for (src, tname) in zip(s.sources, inputNames) {
            let isBase = src.model == base
            var params: [String: ParameterValue] = [:]
            for p in method.parameters where p.scope == .input || (p.scope == .nonBase && !isBase) {
                params[p.name] = try resolve(
                    p, scopes: [src.parameters, s.parameters, config.parameters], tensor: tname, t: t, model: src.model,
                    file: file)
            }
            inputs.append(
                PlannedInput(model: indexOf[src.model] ?? 0, tensor: tname, isBase: isBase, parameters: params))
        }
        return PlannedTensor(
            name: name, shape: shape, outDType: outDType, inputs: inputs, parameters: shared, copyRaw: copyRaw)
    }

    /// mergekit's precedence: the first scope whose setting evaluates (filters may not match) wins; then the default.
    static func resolve(
        _ p: ParameterSpec, scopes: [ParameterBlock], tensor: String, t: Double, model: String?, file: String
    ) throws(MergeError) -> ParameterValue {
        for scope in scopes {
            if let s = scope.settings[p.name], let v = s.evaluate(tensorName: tensor, t: t) {
                switch (p.kind, v) {
                case (.number, .bool):
                    throw MergeError(
                        .invalidConfig,
                        "\(file):\(scope.lines[p.name] ?? 0): parameter '\(p.name)' must be a number, not a boolean.")
                default: return v
                }
            }
        }
        guard let d = p.defaultValue else {
            let whom = model.map { " for model '\($0)'" } ?? ""
            throw MergeError(
                .missingParameter,
                "\(file): parameter '\(p.name)' is required\(whom) (tensor '\(tensor)') but is not set at any level.")
        }
        return d
    }
}
