import CheckpointIO
import Foundation
import TaskSwitches

/// A linear classification head: `logits = weight · feature + bias`, read from a safetensors file with `weight`
/// (classes × hidden, F32) and `bias` (classes), next to the task's `labels.json`.
///
/// A cosine head (the zero-shot heads of `ZeroShotHead`, CLIP's protocol) also carries a logit scale, stored as the
/// string `logit_scale` in the file's `__metadata__`: its logits are `logitScale · (weight · f / |f|) + bias`, the
/// features L2-normalized first. A file without `logit_scale` is a plain linear head, as before.
public struct LinearHead: Sendable, Equatable {
    /// The `__metadata__` key of the logit scale of a cosine head.
    public static let logitScaleKey = DenseTensor.logitScaleName

    public let classes: Int
    public let hidden: Int
    /// Row-major `classes × hidden`.
    public let weight: [Float]
    public let bias: [Float]
    /// Class names from `labels.json`, when the file is there.
    public let labels: [String]?
    /// A cosine head's logit scale (features are L2-normalized before the product); nil for a plain linear head.
    public let logitScale: Float?

    public init(
        weight: [Float], bias: [Float], classes: Int, hidden: Int, labels: [String]? = nil, logitScale: Float? = nil
    ) {
        precondition(weight.count == classes * hidden && bias.count == classes)
        precondition(logitScale.map { $0.isFinite && $0 > 0 } ?? true, "a logit scale is finite and positive")
        self.weight = weight
        self.bias = bias
        self.classes = classes
        self.hidden = hidden
        self.labels = labels
        self.logitScale = logitScale
    }

    /// The head a pack carries (`weight` [classes, hidden], `bias` [classes], and a cosine head's `logit_scale` [1]),
    /// with the pack's labels; nil when the pack has no head.
    ///
    /// - Throws: `EvaluationError` `.shapeMismatch` naming the pack's task when the tensors do not form a head of
    ///   this hidden size or the labels do not match its classes.
    public static func of(pack: SwitchPack, hidden: Int) throws(EvaluationError) -> LinearHead? {
        guard !pack.head.isEmpty else { return nil }
        let tensor = { (name: String) in pack.head.first { $0.name == name } }
        guard let w = tensor("weight"), let b = tensor("bias"), w.shape.count == 2, w.shape[1] == hidden,
            b.shape == [w.shape[0]], w.shape[0] > 0
        else {
            throw EvaluationError(
                .shapeMismatch,
                "the head of pack '\(pack.task)' must be 'weight' [classes, \(hidden)] and 'bias' [classes]; it has \(pack.head.map { "\($0.name) \($0.shape)" })."
            )
        }
        guard pack.labels.isEmpty || pack.labels.count == w.shape[0] else {
            throw EvaluationError(
                .shapeMismatch,
                "the head of pack '\(pack.task)' has \(w.shape[0]) classes but \(pack.labels.count) labels.")
        }
        var scale: Float?
        if let s = tensor(DenseTensor.logitScaleName) {
            guard s.values.count == 1, let v = s.values.first, v.isFinite, v > 0 else {
                throw EvaluationError(
                    .shapeMismatch,
                    "the head of pack '\(pack.task)' has '\(DenseTensor.logitScaleName)' \(s.shape) \(s.values.prefix(4)); expected one finite positive number."
                )
            }
            scale = v
        }
        return LinearHead(
            weight: w.values, bias: b.values, classes: w.shape[0], hidden: hidden,
            labels: pack.labels.isEmpty ? nil : pack.labels, logitScale: scale)
    }

    /// Reads a head file and, when present, the `labels.json` beside it.
    ///
    /// - Throws: `EvaluationError` `.missingTensor` or `.shapeMismatch` naming the file and tensor,
    ///   `.invalidData` when the `logit_scale` metadata is not a finite positive number,
    ///   `.incompatible` when `labels.json` lists a different number of classes.
    public init(path: String) throws(EvaluationError) {
        let file: SafeTensorsFile
        do {
            file = try SafeTensorsFile(path: path)
        } catch {
            throw EvaluationError(.checkpoint, error.message, cause: error)
        }
        func tensor(_ name: String) throws(EvaluationError) -> TensorView {
            guard file.info(name) != nil else {
                throw EvaluationError(
                    .missingTensor,
                    "\(path): a head needs a tensor '\(name)'; the file has \(file.tensors.map(\.name)).")
            }
            do { return try file.tensor(name) } catch {
                throw EvaluationError(.checkpoint, error.message, cause: error)
            }
        }
        let w = try tensor("weight")
        let b = try tensor("bias")
        guard w.shape.count == 2, w.shape[0] > 0, w.shape[1] > 0 else {
            throw EvaluationError(
                .shapeMismatch, "\(path): tensor 'weight' has shape \(w.shape); expected [classes, hidden].")
        }
        guard b.shape == [w.shape[0]] else {
            throw EvaluationError(
                .shapeMismatch,
                "\(path): tensor 'bias' has shape \(b.shape); expected [\(w.shape[0])] to match 'weight'.")
        }
        let weight: [Float]
        let bias: [Float]
        do {
            weight = try w.floats()
            bias = try b.floats()
        } catch {
            throw EvaluationError(.checkpoint, error.message, cause: error)
        }
        var logitScale: Float?
        if let raw = file.metadata[Self.logitScaleKey] {
            guard let v = Float(raw.trimmingCharacters(in: .whitespaces)), v.isFinite, v > 0 else {
                throw EvaluationError(
                    .invalidData,
                    "\(path): metadata '\(Self.logitScaleKey)' is \"\(raw)\"; expected a finite positive number.")
            }
            logitScale = v
        }
        var labels: [String]?
        let labelsURL = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("labels.json")
        if let data = FileManager.default.contents(atPath: labelsURL.path) {
            guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let names = obj["labels"] as? [String]
            else {
                throw EvaluationError(
                    .invalidData, "\(labelsURL.path): expected an object with a \"labels\" list of strings.")
            }
            guard names.count == w.shape[0] else {
                throw EvaluationError(
                    .incompatible, "\(labelsURL.path): \(names.count) labels, but \(path) has \(w.shape[0]) classes.")
            }
            labels = names
        }
        self.init(
            weight: weight, bias: bias, classes: w.shape[0], hidden: w.shape[1], labels: labels, logitScale: logitScale)
    }

    /// Writes `weight` and `bias` as F32 (and `logit_scale` into `__metadata__` for a cosine head) atomically.
    ///
    /// - Parameter metadata: further `__metadata__` entries (a `logit_scale` entry here is overridden).
    /// - Throws: `EvaluationError` `.checkpoint` when the file cannot be written.
    public func write(path: String, metadata: [String: String] = [:]) throws(EvaluationError) {
        var meta = metadata
        meta[Self.logitScaleKey] = logitScale.map { "\($0)" }
        do {
            let writer = try SafeTensorsWriter(
                path: path,
                tensors: [
                    TensorSpec(name: "weight", dtype: .F32, shape: [classes, hidden]),
                    TensorSpec(name: "bias", dtype: .F32, shape: [classes]),
                ], metadata: meta)
            try writer.write("weight", floats: weight)
            try writer.write("bias", floats: bias)
            try writer.finish()
        } catch {
            throw EvaluationError(.checkpoint, error.message)
        }
    }

    /// Logits of each row of `features` (`rows × hidden`), row-major `rows × classes`. A cosine head normalizes
    /// each feature row to unit L2 length (a zero row stays zero) and multiplies the products by its logit scale.
    public func logits(_ features: [Float]) -> [Float] {
        precondition(features.count % hidden == 0)
        let rows = features.count / hidden
        var out = [Float](repeating: 0, count: rows * classes)
        for r in 0..<rows {
            if let logitScale {
                var sq: Float = 0
                for j in 0..<hidden { sq += features[r * hidden + j] * features[r * hidden + j] }
                let factor = logitScale / max(sq.squareRoot(), 1e-12)
                for c in 0..<classes {
                    var s: Float = 0
                    for j in 0..<hidden { s += weight[c * hidden + j] * features[r * hidden + j] }
                    out[r * classes + c] = s * factor + bias[c]
                }
            } else {
                // The bias first, then the products in order: the accumulation the shipped results were made with.
                for c in 0..<classes {
                    var s = bias[c]
                    for j in 0..<hidden { s += weight[c * hidden + j] * features[r * hidden + j] }
                    out[r * classes + c] = s
                }
            }
        }
        return out
    }

    /// The arg-max class of each row of `features` (`rows × hidden`) by `logits`; ties go to the lower class, as
    /// `argmax` does.
    public func predict(_ features: [Float]) -> [Int] {
        let scores = logits(features)
        return (0..<(scores.count / classes)).map { r in
            var best = 0
            var bestScore = -Float.infinity
            for c in 0..<classes where scores[r * classes + c] > bestScore {
                bestScore = scores[r * classes + c]
                best = c
            }
            return best
        }
    }

    /// Share of predictions equal to the labels (0 for an empty set).
    public static func accuracy(predictions: [Int], labels: [Int]) -> Double {
        precondition(predictions.count == labels.count)
        guard !labels.isEmpty else { return 0 }
        return Double(zip(predictions, labels).filter { $0 == $1 }.count) / Double(labels.count)
    }
}
