import Foundation

/// A PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`): its configuration, validated,
/// and its tensors, read as the changes they make to a base model's tensors; `Writer` writes one atomically.
///
/// An adapted weight W becomes W + (B·A)·s with s = lora_alpha / r (lora_alpha / √r with `use_rslora`), transposed
/// for `fan_in_fan_out` layers and for embeddings (`lora_embedding_A/B`). Other adapter tensors (`modules_to_save`,
/// trained biases, `base_layer` copies of resized embeddings) replace the base tensor of the same name.
///
/// This type holds the file format only; the merge itself, `merged(_:base:dtype:)` (PEFT's `merge_and_unload()`
/// in Float, B·A with fused multiply-adds), is in TensorKernels (`LoRAAdapterFolder+Merge.swift`).
public struct LoRAAdapterFolder: Sendable {
    /// How one base tensor changes.
    public enum Update: Sendable, Equatable {
        /// W += (B·A)·scaling, transposed when `transposed` (embeddings, fan_in_fan_out). For embeddings PEFT
        /// rounds the update to W's dtype before adding it (`delta.to(orig_dtype)`); for linear layers it adds it
        /// as is.
        case lowRank(a: String, b: String, scaling: Float, transposed: Bool, embedding: Bool)
        /// W is replaced by this adapter tensor.
        case replacement(key: String)
        /// A bias b += lora_B.bias·scaling (PEFT's `lora_bias`; `tswitch extract-lora` writes it for a changed bias).
        case biasShift(key: String, scaling: Float)
    }

    /// The adapter folder.
    public let path: String
    public let rank: Int
    public let alpha: Double
    public let useRSLoRA: Bool
    public let fanInFanOut: Bool
    /// Changes by base tensor name.
    public let updates: [String: Update]
    /// `adapter_model.safetensors`, whose tensors the updates name.
    package let file: SafeTensorsFile

    public static let configName = "adapter_config.json"
    public static let weightsName = "adapter_model.safetensors"
    /// What PEFT puts before the base model's tensor names in the adapter's tensor names.
    public static let prefix = "base_model.model."

    /// True when `path` is a folder holding `adapter_config.json` (a PEFT adapter, not a model).
    public static func isAdapterFolder(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: URL(fileURLWithPath: path).appendingPathComponent(configName).path)
    }

    /// Reads the adapter's configuration and tensor index (no tensor data).
    ///
    /// - Throws: `CheckpointError` naming the file for a missing or malformed config, a `.bin`-only adapter, a
    ///   PEFT method other than plain LoRA (DoRA; LoRA biases are read with `lora_bias` only), or A/B factors whose
    ///   shapes disagree.
    public init(path: String) throws(CheckpointError) {
        self.path = path
        let dir = URL(fileURLWithPath: path)
        let configPath = dir.appendingPathComponent(Self.configName).path
        let weightsPath = dir.appendingPathComponent(Self.weightsName).path
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw CheckpointError(.notAModel, "\(path): expected a PEFT adapter folder with \(Self.configName).")
        }
        guard let config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw CheckpointError(.invalidJSON, "\(configPath): not a JSON object.")
        }
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            throw CheckpointError(
                .notAModel,
                "\(path): expected \(Self.weightsName) next to \(Self.configName) (pickled adapter_model.bin files are not read; re-save with safe_serialization=True)."
            )
        }
        if let type = config["peft_type"] as? String, type != "LORA" {
            throw CheckpointError(
                .invalidMetadata, "\(configPath): peft_type is \(type); only LORA adapters are supported.")
        }
        if config["use_dora"] as? Bool == true {
            throw CheckpointError(.invalidMetadata, "\(configPath): use_dora is true; DoRA adapters are not supported.")
        }
        let loraBias = config["lora_bias"] as? Bool == true
        guard let r = (config["r"] as? NSNumber)?.intValue, r > 0,
            let alpha = (config["lora_alpha"] as? NSNumber)?.doubleValue, alpha.isFinite
        else {
            throw CheckpointError(
                .invalidMetadata, "\(configPath): expected a positive integer 'r' and a number 'lora_alpha'.")
        }
        rank = r
        self.alpha = alpha
        useRSLoRA = config["use_rslora"] as? Bool ?? false
        fanInFanOut = config["fan_in_fan_out"] as? Bool ?? false
        let rankPattern = (config["rank_pattern"] as? [String: Any] ?? [:]).compactMapValues {
            ($0 as? NSNumber)?.intValue
        }
        let alphaPattern = (config["alpha_pattern"] as? [String: Any] ?? [:]).compactMapValues {
            ($0 as? NSNumber)?.doubleValue
        }
        let file = try SafeTensorsFile(path: weightsPath)
        self.file = file

        var updates: [String: Update] = [:]
        var factors: [String: (a: String?, b: String?, embedding: Bool)] = [:]
        var biases: [String: String] = [:]
        for info in file.tensors {
            let key = info.name
            guard key.hasPrefix(Self.prefix) else {
                throw CheckpointError(
                    .invalidEntry,
                    "\(weightsPath): tensor '\(key)' does not start with '\(Self.prefix)' as PEFT names its tensors.")
            }
            let name = String(key.dropFirst(Self.prefix.count))
            if loraBias, name.hasSuffix(".lora_B.bias") {
                biases[String(name.dropLast(".lora_B.bias".count))] = key
                continue
            }
            if key.contains("lora_magnitude_vector") || key.contains(".lora_A.bias") || key.contains(".lora_B.bias") {
                throw CheckpointError(
                    .invalidEntry,
                    "\(weightsPath): tensor '\(key)' belongs to DoRA or to LoRA biases without lora_bias in the config, which are not supported."
                )
            }
            let factor = [
                (".lora_A.weight", true, false), (".lora_B.weight", false, false), (".lora_embedding_A", true, true),
                (".lora_embedding_B", false, true),
            ].first { name.hasSuffix($0.0) }
            if let (suffix, isA, embedding) = factor {
                let module = String(name.dropLast(suffix.count))
                var f = factors[module] ?? (nil, nil, embedding)
                if isA { f.a = key } else { f.b = key }
                factors[module] = f
                continue
            }
            // A full tensor: modules_to_save, a trained bias, or the saved base layer of an adapted embedding.
            updates[name.replacingOccurrences(of: ".base_layer.", with: ".")] = .replacement(key: key)
        }
        for (module, f) in factors {
            guard let a = f.a, let b = f.b, let ai = file.info(a), let bi = file.info(b), ai.shape.count == 2,
                bi.shape.count == 2, ai.shape[0] == bi.shape[1]
            else {
                throw CheckpointError(
                    .invalidShape,
                    "\(weightsPath): module '\(module)' needs lora A (r × in) and B (out × r) factors with the same r; found \(f.a.flatMap { file.info($0)?.shapeDescription } ?? "no A") and \(f.b.flatMap { file.info($0)?.shapeDescription } ?? "no B")."
                )
            }
            guard ai.dtype.isConvertibleFloat, bi.dtype.isConvertibleFloat else {
                throw CheckpointError(
                    .unsupportedDType,
                    "\(weightsPath): module '\(module)' has \(ai.dtype.rawValue) LoRA factors; expected floats.")
            }
            let r = Self.pattern(rankPattern, module) ?? rank
            let alpha = Self.pattern(alphaPattern, module) ?? alpha
            let scaling = Float(useRSLoRA ? alpha / Double(r).squareRoot() : alpha / Double(r))
            updates[module + ".weight"] = .lowRank(
                a: a, b: b, scaling: scaling, transposed: f.embedding || fanInFanOut, embedding: f.embedding)
            if let key = biases.removeValue(forKey: module) {
                guard let info = file.info(key), info.shape == [bi.shape[0]], info.dtype.isConvertibleFloat else {
                    throw CheckpointError(
                        .invalidShape,
                        "\(weightsPath): tensor '\(key)' must be a float vector of \(bi.shape[0]) entries (lora_B's rows)."
                    )
                }
                updates[module + ".bias"] = .biasShift(key: key, scaling: scaling)
            }
        }
        if let (module, key) = biases.min(by: { $0.key < $1.key }) {
            throw CheckpointError(
                .invalidEntry,
                "\(weightsPath): tensor '\(key)' is a LoRA bias of '\(module)', which has no lora_A/lora_B factors.")
        }
        self.updates = updates
    }

    /// PEFT's `get_pattern_key`: the first pattern matching the module name whole or after a dot.
    static func pattern<V>(_ patterns: [String: V], _ module: String) -> V? {
        for key in patterns.keys.sorted() {
            if module == key || module.hasSuffix("." + key) { return patterns[key] }
            if let re = try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$"),
                re.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil
            {
                return patterns[key]
            }
        }
        return nil
    }

    /// Checks that every tensor the adapter changes exists in `base` as a float tensor of the right shape.
    public func check(against base: ModelFolder) throws(CheckpointError) {
        for (name, update) in updates.sorted(by: { $0.key < $1.key }) {
            guard let info = base.info(name) else {
                throw CheckpointError(
                    .tensorNotFound,
                    "\(path): the adapter changes tensor '\(name)', which the base \(base.path) does not have.")
            }
            let shape = try shape(of: update)
            guard shape == info.shape, info.dtype.isConvertibleFloat else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(path): the adapter changes tensor '\(name)' to shape \(shape); the base \(base.path) has \(info.shapeDescription) \(info.dtype.rawValue)."
                )
            }
        }
    }

    /// The shape of the weight an update produces.
    public func shape(of update: Update) throws(CheckpointError) -> [Int] {
        switch update {
        case .replacement(let key), .biasShift(let key, _): return file.info(key)?.shape ?? []
        case .lowRank(let a, let b, _, let transposed, _):
            let out = file.info(b)?.shape[0] ?? 0
            let inner = file.info(a)?.shape[1] ?? 0
            return transposed ? [inner, out] : [out, inner]
        }
    }
}

extension LoRAAdapterFolder {
    /// Writes an adapter folder: `adapter_model.safetensors` with the planned tensors, then `adapter_config.json`,
    /// in a hidden temporary folder moved into place by `finish()` (`FolderOutput`, as `ModelWriter` does), so
    /// the folder appears at its path only when complete.
    public final class Writer {
        private let output: FolderOutput
        private let weights: SafeTensorsWriter
        private let config: Data

        /// - Parameters:
        ///   - directory: the adapter folder; replaced as a whole if it exists and `overwrite` is set.
        ///   - tensors: every tensor, named as PEFT names them (`prefix` + module + `.lora_A.weight`, …), in the
        ///     order they will be written.
        ///   - config: the contents of `adapter_config.json`, written by `finish()`.
        /// - Throws: `CheckpointError` naming the folder: `.outputExists`, `.io`, or the safetensors writer's
        ///   errors for the planned tensors.
        public init(directory: String, tensors: [TensorSpec], config: Data, overwrite: Bool = false)
            throws(CheckpointError)
        {
            let output = try FolderOutput(target: directory, overwrite: overwrite)
            try output.create()
            weights = try SafeTensorsWriter(
                path: output.path(of: LoRAAdapterFolder.weightsName), tensors: tensors, metadata: ["format": "pt"])
            self.output = output
            self.config = config
        }

        public func write(_ name: String, floats: [Float]) throws(CheckpointError) {
            try weights.write(name, floats: floats)
        }

        public func write(_ name: String, from view: TensorView) throws(CheckpointError) {
            try weights.write(name, from: view)
        }

        /// Closes `adapter_model.safetensors`, writes `adapter_config.json` and moves the folder into place.
        ///
        /// - Throws: `.writeOrder` when planned tensors were not written, `.inputChanged`, `.io`.
        public func finish() throws(CheckpointError) {
            try weights.finish()
            try output.add(LoRAAdapterFolder.configName, contents: config)
            try output.commit("the adapter")
        }
    }
}
