import CheckpointIO
import Foundation
import TensorKernels

/// Extracts a PEFT LoRA adapter from a base and a fine-tune, as `mergekit-extract-lora` does: per linear weight,
/// the task vector ΔW = W_ft − W_base is cut to its leading singular triplets, A = √S·Vᵀ (r × in) and
/// B = U·√S (out × r), so B·A is the best rank-r approximation of ΔW that the SVD finds (Eckart-Young).
///
/// Per module (tensor name up to its last dot), in the base's tensor order:
/// - listed in `modulesToSave` (full name or last component), or an embedding / `lm_head` without `embedLoRA`:
///   its tensors are stored whole from the fine-tune (PEFT `modules_to_save`);
/// - excluded by the include/exclude patterns: left out;
/// - a 2-D `weight`: LoRA factors (embeddings with `embedLoRA`: `lora_embedding_A/B` of ΔWᵀ, as PEFT lays them
///   out); a changed bias of such a module becomes `lora_B.bias` (PEFT's `lora_bias`);
/// - anything else that changed (norms, biases of modules without a LoRA weight): stored whole, or left out
///   with `skipUndecomposable`.
/// Modules whose tensors are bit-identical in both models are left out (mergekit stores embeddings whole even
/// then). `lora_alpha` equals `r` and `alpha_pattern` equals `rank_pattern`, so every module's scaling is 1.
///
/// Memory: one tensor pair and its factors at a time, plus the factors kept for the write (Σ r·(m+n) floats);
/// whole tensors are copied from the fine-tune's mapping during the write. The adapter folder appears at its
/// path only when complete.
public enum LoRAExtraction {
    public struct Options: Sendable {
        /// The maximum rank (mergekit's `--max-rank`).
        public var rank: Int
        /// Drop singular values ≤ this (mergekit's `--sv-epsilon`, absolute); 0 keeps all.
        public var svEpsilon: Double = 0
        /// Drop singular values below this fraction of the tensor's largest; 0 keeps all.
        public var svRelative: Double = 0
        public var embedLoRA = false
        public var modulesToSave: [String] = []
        /// `re.search` semantics: a module is extracted when it matches some include pattern (if any) and no
        /// exclude pattern.
        public var include: [String] = []
        public var exclude: [String] = []
        public var skipUndecomposable = false
        /// √S on both factors (default, as mergekit); false puts S on A and leaves B orthonormal.
        public var distributeScale = true
        public var svd = TruncatedSVD.Settings()
        /// The factors' dtype; nil keeps each fine-tune tensor's dtype (as mergekit does).
        public var dtype: DType?
        /// `base_model_name_or_path` in the config; nil writes the base's path.
        public var baseModelName: String?

        public init(rank: Int) { self.rank = rank }
    }

    /// What happened to one module.
    public struct ModuleReport: Sendable, Codable, Equatable {
        public enum Kind: String, Sendable, Codable { case lora, loraEmbedding = "lora_embedding", saved, skipped }
        public let module: String
        public let kind: Kind
        public let rank: Int
        /// ‖ΔW‖_F and ‖ΔW − B·A‖_F of the Float factors (LoRA modules; 0 otherwise), summed in Double.
        public let deltaNorm: Double
        public let errorNorm: Double
        public let why: String?
    }

    public struct Report: Sendable, Codable {
        public let output: String
        public let rank: Int
        public let modules: [ModuleReport]
        public let targetModules: [String]
        public let modulesToSave: [String]
        public let loraBias: Bool
        public let seconds: Double
        public let svdMethod: String
        public let bytes: Int

        /// √(Σ‖ΔW − B·A‖²) / √(Σ‖ΔW‖²) over the LoRA modules.
        public var relativeError: Double {
            let lora = modules.filter { $0.kind == .lora || $0.kind == .loraEmbedding }
            let d = lora.reduce(0) { $0 + $1.deltaNorm * $1.deltaNorm }
            let e = lora.reduce(0) { $0 + $1.errorNorm * $1.errorNorm }
            return d == 0 ? 0 : (e / d).squareRoot()
        }
    }

    static let prefix = LoRAAdapterFolder.prefix

    /// Tensor names PEFT and mergekit treat as embeddings (`nn.Embedding`), by the module's last component.
    static func isEmbedding(_ module: String) -> Bool {
        let last = module.split(separator: ".").last.map(String.init) ?? module
        return last.lowercased().contains("embed") && last != "embed_out" || last == "wte" || last == "wpe"
    }

    /// Output embeddings (`get_output_embeddings()`): `lm_head`, GPT-NeoX's `embed_out`.
    static func isOutputEmbedding(_ module: String) -> Bool {
        let last = module.split(separator: ".").last.map(String.init) ?? module
        return last == "lm_head" || last == "embed_out"
    }

    /// Extracted factors of one module, kept until the write.
    struct Factors {
        let a: [Float]
        let b: [Float]
        let aShape: [Int]
        let bShape: [Int]
        let dtype: DType
        let embedding: Bool
        var bias: [Float]?
        var biasDType: DType = .F32
    }

    /// Extracts the adapter and writes it to the folder `output` (atomically).
    ///
    /// - Throws: `MergeError`: `.missingTensor` when the models' tensor names differ, `.shapeMismatch` for
    ///   different shapes, `.invalidInputs` for a rank above min(out, in) of a LoRA weight, a non-float tensor, or
    ///   nothing to extract; `.numerical` for non-finite task vectors; `.checkpoint` for read/write failures.
    public static func extract(
        base: ModelFolder, fineTuned: ModelFolder, to output: String, options: Options, overwrite: Bool = false,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws(MergeError) -> Report {
        let start = Date()
        precondition(options.rank >= 1, "rank must be positive")
        let include = try compile(options.include)
        let exclude = try compile(options.exclude)
        if FileManager.default.fileExists(atPath: output), !overwrite {
            throw MergeError(
                .checkpoint, "\(output): already exists.",
                cause: CheckpointError(.outputExists, "\(output): already exists."))
        }
        // Inputs: the same tensor names, shapes and float dtypes.
        let baseNames = Set(base.tensorNames)
        if let extra = fineTuned.tensorNames.first(where: { !baseNames.contains($0) }) {
            throw MergeError(
                .missingTensor,
                "\(fineTuned.path): tensor '\(extra)' is not in the base \(base.path); both models need the same tensors."
            )
        }
        var modules: [(name: String, tensors: [TensorInfo])] = []
        var index: [String: Int] = [:]
        for info in base.tensorInfos {
            guard let ft = fineTuned.info(info.name) else {
                throw MergeError(
                    .missingTensor,
                    "\(fineTuned.path): tensor '\(info.name)' of the base \(base.path) is missing; both models need the same tensors."
                )
            }
            guard ft.shape == info.shape else {
                throw MergeError(
                    .shapeMismatch,
                    "\(fineTuned.path): tensor '\(info.name)' is \(ft.shapeDescription); the base \(base.path) has \(info.shapeDescription)."
                )
            }
            let module = info.name.split(separator: ".").dropLast().joined(separator: ".")
            if let i = index[module] {
                modules[i].tensors.append(info)
            } else {
                index[module] = modules.count
                modules.append((module, [info]))
            }
        }

        var reports: [ModuleReport] = []
        var factors: [String: Factors] = [:]
        var saved: [(module: String, tensors: [TensorInfo])] = []
        for (done, entry) in modules.enumerated() {
            defer { progress(done + 1, modules.count) }
            let (module, tensors) = entry
            let last = module.split(separator: ".").last.map(String.init) ?? module
            var changed: [TensorInfo] = []
            for info in tensors where try differs(info.name, base, fineTuned) { changed.append(info) }
            if changed.isEmpty {
                reports.append(
                    .init(module: module, kind: .skipped, rank: 0, deltaNorm: 0, errorNorm: 0, why: "unchanged"))
                continue
            }
            let embedding = isEmbedding(module) || isOutputEmbedding(module)
            let excluded = !matches(module, include: include, exclude: exclude)
            let forcedSave = embedding && !options.embedLoRA && !exclude.contains { search($0, module) }
            if options.modulesToSave.contains(module) || options.modulesToSave.contains(last) || forcedSave {
                saved.append((module, tensors))
                reports.append(
                    .init(
                        module: module, kind: .saved, rank: 0, deltaNorm: 0, errorNorm: 0,
                        why: forcedSave ? "embedding (not decomposed without embedding LoRA)" : "listed to save"))
                continue
            }
            if excluded {
                reports.append(
                    .init(module: module, kind: .skipped, rank: 0, deltaNorm: 0, errorNorm: 0, why: "excluded"))
                continue
            }
            let weight = tensors.first { $0.name == module + ".weight" && $0.shape.count == 2 }
            let others = changed.filter { $0.name != weight?.name }
            let biasOnly = others.count == 1 && others[0].name == module + ".bias"
            if let weight, changed.contains(where: { $0.name == weight.name }), others.isEmpty || biasOnly {
                if var f = try decompose(
                    weight, module: module, base: base, fineTuned: fineTuned, options: options,
                    asEmbedding: isEmbedding(module), reports: &reports)
                {
                    if biasOnly, let bias = others.first {
                        f.bias = try delta(bias.name, base, fineTuned)
                        f.biasDType = options.dtype ?? fineTuned.info(bias.name)?.dtype ?? bias.dtype
                    }
                    factors[module] = f
                    continue
                }
                reports.removeLast()  // rank 0: no singular value passed the thresholds
                if others.isEmpty {
                    reports.append(
                        .init(
                            module: module, kind: .skipped, rank: 0, deltaNorm: 0, errorNorm: 0,
                            why: "no singular value above the threshold"))
                    continue
                }
            }
            // Not representable as LoRA factors: a 1-D or n-D tensor changed, or a weight's delta fell below the
            // thresholds while other tensors of the module changed.
            if options.skipUndecomposable {
                reports.append(
                    .init(module: module, kind: .skipped, rank: 0, deltaNorm: 0, errorNorm: 0, why: "undecomposable"))
            } else {
                saved.append((module, tensors))
                reports.append(
                    .init(module: module, kind: .saved, rank: 0, deltaNorm: 0, errorNorm: 0, why: "undecomposable"))
            }
        }

        let loraModules = factors.keys.sorted()
        guard !loraModules.isEmpty || !saved.isEmpty else {
            throw MergeError(
                .invalidInputs,
                "\(fineTuned.path): nothing to extract against the base \(base.path) (no tensor differs, or every changed module was excluded or skipped)."
            )
        }
        let loraBias = factors.values.contains { $0.bias != nil }
        if loraBias, let e = factors.first(where: { $0.value.embedding }) {
            throw MergeError(
                .invalidInputs,
                "\(fineTuned.path): module '\(e.key)' is an embedding LoRA and other modules need LoRA biases (their bias changed); PEFT's lora_bias does not support embedding layers. Save the embedding whole or leave the bias changes out."
            )
        }
        let r = factors.values.map { $0.aShape[0] }.max() ?? options.rank

        // Tensors in module order; factors A then B then the bias.
        var specs: [TensorSpec] = []
        for (module, _) in modules {
            if let f = factors[module] {
                let (a, b) = f.embedding ? ("lora_embedding_A", "lora_embedding_B") : ("lora_A.weight", "lora_B.weight")
                specs.append(TensorSpec(name: "\(prefix)\(module).\(a)", dtype: f.dtype, shape: f.aShape))
                specs.append(TensorSpec(name: "\(prefix)\(module).\(b)", dtype: f.dtype, shape: f.bShape))
                if let bias = f.bias {
                    specs.append(
                        TensorSpec(name: "\(prefix)\(module).lora_B.bias", dtype: f.biasDType, shape: [bias.count]))
                }
            } else if let s = saved.first(where: { $0.module == module }) {
                for t in s.tensors { specs.append(TensorSpec(name: prefix + t.name, dtype: t.dtype, shape: t.shape)) }
            }
        }
        var rankPattern: [String: Int] = [:]
        for (module, f) in factors where f.aShape[0] != r {
            rankPattern[NSRegularExpression.escapedPattern(for: module)] = f.aShape[0]
        }
        let config: [String: Any] = [
            "peft_type": "LORA", "base_model_name_or_path": options.baseModelName ?? base.path, "r": r,
            "lora_alpha": r, "rank_pattern": rankPattern, "alpha_pattern": rankPattern,
            "target_modules": loraModules, "modules_to_save": saved.isEmpty ? NSNull() : saved.map(\.module) as Any,
            "lora_dropout": 0.0, "fan_in_fan_out": false, "bias": "none", "lora_bias": loraBias,
            "use_rslora": false, "use_dora": false, "inference_mode": true, "init_lora_weights": true,
            "task_type": NSNull(), "revision": NSNull(),
        ]
        let configData: Data
        do {
            configData = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        } catch {
            throw MergeError(.invalidInputs, "\(output): cannot encode adapter_config.json: \(error).")
        }

        let bytes = try checkpoint { () throws(CheckpointError) -> Int in
            let writer = try LoRAAdapterFolder.Writer(
                directory: output, tensors: specs, config: configData + Data("\n".utf8), overwrite: overwrite)
            for (module, _) in modules {
                if let f = factors[module] {
                    let (a, b) =
                        f.embedding ? ("lora_embedding_A", "lora_embedding_B") : ("lora_A.weight", "lora_B.weight")
                    try writer.write("\(prefix)\(module).\(a)", floats: f.a)
                    try writer.write("\(prefix)\(module).\(b)", floats: f.b)
                    if let bias = f.bias { try writer.write("\(prefix)\(module).lora_B.bias", floats: bias) }
                } else if let s = saved.first(where: { $0.module == module }) {
                    for t in s.tensors {
                        let view = try fineTuned.tensor(t.name)
                        try writer.write(prefix + t.name, from: view)
                        view.release()
                    }
                }
            }
            try writer.finish()
            return specs.reduce(0) { $0 + $1.byteCount }
        }
        return Report(
            output: output, rank: r, modules: reports, targetModules: loraModules, modulesToSave: saved.map(\.module),
            loraBias: loraBias, seconds: Date().timeIntervalSince(start), svdMethod: options.svd.method.rawValue,
            bytes: bytes)
    }

    static func compile(_ patterns: [String]) throws(MergeError) -> [NSRegularExpression] {
        var out: [NSRegularExpression] = []
        for p in patterns {
            do { out.append(try NSRegularExpression(pattern: p)) } catch {
                throw MergeError(.invalidConfig, "module pattern '\(p)' is not a valid regular expression.")
            }
        }
        return out
    }

    static func search(_ re: NSRegularExpression, _ s: String) -> Bool {
        re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
    }

    static func matches(_ module: String, include: [NSRegularExpression], exclude: [NSRegularExpression]) -> Bool {
        if !include.isEmpty, !include.contains(where: { search($0, module) }) { return false }
        return !exclude.contains { search($0, module) }
    }
}
