import CheckpointIO
import Foundation

/// A PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`), read as the weight changes it
/// makes to a base model.
///
/// An adapted weight W becomes W + (B·A)·s with s = lora_alpha / r (lora_alpha / √r with `use_rslora`), transposed
/// for `fan_in_fan_out` layers and for embeddings (`lora_embedding_A/B`). Other adapter tensors (`modules_to_save`,
/// trained biases, `base_layer` copies of resized embeddings) replace the base tensor of the same name.
///
/// `merged` reproduces PEFT's `merge_and_unload()` in Float: B·A summed over the rank in order with fused
/// multiply-adds (as a CPU sgemm micro-kernel does), times s, rounded to the adapter's dtype, added to W and
/// rounded to W's dtype. So the task vector of an adapter equals the one of PEFT's merged model, and a pack or a
/// merge made from `base + adapter` equals the one made from the merged model (checked against PEFT and mergekit
/// by the fixtures of `scripts/fixtures/lora_fixtures.py`).
public struct LoRAAdapter: Sendable {
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
    let file: SafeTensorsFile

    static let configName = "adapter_config.json"
    static let weightsName = "adapter_model.safetensors"
    static let prefix = "base_model.model."

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

    /// The base tensor `name` after merging the adapter, given its current values and dtype; nil when the adapter
    /// leaves it unchanged. Call `check(against:)` first.
    public func merged(_ name: String, base values: [Float], dtype: DType) throws(CheckpointError) -> [Float]? {
        guard let update = updates[name] else { return nil }
        switch update {
        case .replacement(let key):
            let v = try file.tensor(key).floats()
            guard v.count == values.count else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(path): tensor '\(key)' has \(v.count) elements; the base's '\(name)' has \(values.count).")
            }
            return Self.rounded(v, to: dtype)
        case .biasShift(let key, let scaling):
            let v = try file.tensor(key).floats()
            guard v.count == values.count else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(path): tensor '\(key)' has \(v.count) elements; the base's '\(name)' has \(values.count).")
            }
            // PEFT: base_layer.bias + lora_B.bias * scaling.
            return Self.rounded(zip(values, v).map { $0 + $1 * scaling }, to: dtype)
        case .lowRank(let a, let b, let scaling, let transposed, let embedding):
            let av = try file.tensor(a)
            let bv = try file.tensor(b)
            let r = av.shape[0]
            let (A, B) = (try av.floats(), try bv.floats())
            let (m, n) = (bv.shape[0], av.shape[1])
            // Δ = B·A (m × n), or its transpose (n × m) = Aᵀ·Bᵀ with the same sum order per element.
            let rows = transposed ? n : m
            let cols = transposed ? m : n
            guard rows * cols == values.count else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(path): the update of '\(name)' has \(rows * cols) elements; the base has \(values.count).")
            }
            let left = transposed ? Self.transpose(A, rows: r, cols: n) : B  // rows × r
            let right = transposed ? Self.transpose(B, rows: m, cols: r) : A  // r × cols
            var delta = Self.lowRankProduct(left, right, rows: rows, rank: r, cols: cols, scaling: scaling)
            let factorDType = bv.dtype
            if factorDType != .F32 && factorDType != .F64 { delta = Self.rounded(delta, to: factorDType) }
            if embedding { delta = Self.rounded(delta, to: dtype) }
            delta.withUnsafeMutableBufferPointer { d in
                values.withUnsafeBufferPointer { w in Elementwise.axpy(1, w, d) }  // Δ + 1·W == W + Δ exactly
            }
            return Self.rounded(delta, to: dtype)
        }
    }

    /// Writes `base` with the adapter merged into it to the model folder `output` (base dtypes, config and
    /// tokenizer files kept; atomic), as mergekit does before merging a `model+lora` input.
    public func writeMerged(base: ModelFolder, to output: String, overwrite: Bool = false) throws(CheckpointError) {
        try check(against: base)
        let infos = base.tensorInfos
        let writer = try ModelWriter(
            directory: output, tensors: infos.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) },
            overwrite: overwrite)
        for info in infos {
            let view = try base.tensor(info.name)
            if updates[info.name] != nil, let m = try merged(info.name, base: try view.floats(), dtype: info.dtype) {
                try writer.write(info.name, floats: m)
            } else {
                try writer.write(info.name, from: view)
            }
            view.release()
        }
        try writer.copySupportFiles(from: base, dtype: nil)
        try writer.finish()
    }

    /// (L·R)·scaling for L (rows × rank) and R (rank × cols), row-major: per output row, Σ_k L[i,k]·R[k,:] in k
    /// order with fused multiply-adds, 8 columns at a time; rows split across cores.
    public static func lowRankProduct(
        _ left: [Float], _ right: [Float], rows: Int, rank: Int, cols: Int, scaling: Float
    ) -> [Float] {
        precondition(left.count == rows * rank && right.count == rank * cols, "factor sizes do not match")
        return [Float](unsafeUninitializedCapacity: rows * cols) { out, count in
            left.withUnsafeBufferPointer { lb in
                right.withUnsafeBufferPointer { rb in
                    let L = UncheckedSendable(lb)
                    let R = UncheckedSendable(rb)
                    let O = UncheckedSendable(out)
                    Parallel.forEachChunk(rows, minChunk: max(1, (1 << 15) / max(1, cols * rank))) { range in
                        guard let rp = R.value.baseAddress, let op = O.value.baseAddress else { return }
                        let rr = UnsafeRawPointer(rp)
                        let orr = UnsafeMutableRawPointer(op)
                        let sv = SIMD8<Float>(repeating: scaling)
                        for i in range {
                            var j = 0
                            while j + 8 <= cols {
                                var acc = SIMD8<Float>(repeating: 0)
                                for k in 0..<rank {
                                    let x = rr.loadUnaligned(fromByteOffset: (k * cols + j) * 4, as: SIMD8<Float>.self)
                                    acc = acc.addingProduct(SIMD8(repeating: L.value[i * rank + k]), x)
                                }
                                orr.storeBytes(of: acc * sv, toByteOffset: (i * cols + j) * 4, as: SIMD8<Float>.self)
                                j += 8
                            }
                            while j < cols {
                                var acc: Float = 0
                                for k in 0..<rank {
                                    acc = acc.addingProduct(L.value[i * rank + k], R.value[k * cols + j])
                                }
                                O.value[i * cols + j] = acc * scaling
                                j += 1
                            }
                        }
                    }
                }
            }
            count = rows * cols
        }
    }

    static func transpose(_ x: [Float], rows: Int, cols: Int) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        for i in 0..<rows { for j in 0..<cols { out[j * rows + i] = x[i * cols + j] } }
        return out
    }

    /// Rounds Float values to what `dtype` can hold (round to nearest even), kept as Float.
    static func rounded(_ v: [Float], to dtype: DType) -> [Float] {
        switch dtype {
        case .BF16: return v.map { DTypeConversion.floatFromBFloat16Bits(DTypeConversion.bfloat16Bits($0)) }
        case .F16: return v.map { DTypeConversion.floatFromHalfBits(DTypeConversion.halfBits($0)) }
        default: return v
        }
    }
}
