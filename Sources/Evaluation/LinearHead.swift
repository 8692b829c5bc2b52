import CheckpointIO
import Foundation

/// A linear classification head: `logits = weight · feature + bias`, read from a safetensors file with `weight`
/// (classes × hidden, F32) and `bias` (classes), next to the task's `labels.json`.
public struct LinearHead: Sendable, Equatable {
    public let classes: Int
    public let hidden: Int
    /// Row-major `classes × hidden`.
    public let weight: [Float]
    public let bias: [Float]
    /// Class names from `labels.json`, when the file is there.
    public let labels: [String]?

    public init(weight: [Float], bias: [Float], classes: Int, hidden: Int, labels: [String]? = nil) {
        precondition(weight.count == classes * hidden && bias.count == classes)
        self.weight = weight
        self.bias = bias
        self.classes = classes
        self.hidden = hidden
        self.labels = labels
    }

    /// Reads a head file and, when present, the `labels.json` beside it.
    ///
    /// - Throws: `EvaluationError` `.missingTensor` or `.shapeMismatch` naming the file and tensor,
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
                throw EvaluationError(.missingTensor, "\(path): a head needs a tensor '\(name)'; the file has \(file.tensors.map(\.name)).")
            }
            do { return try file.tensor(name) } catch { throw EvaluationError(.checkpoint, error.message, cause: error) }
        }
        let w = try tensor("weight")
        let b = try tensor("bias")
        guard w.shape.count == 2, w.shape[0] > 0, w.shape[1] > 0 else {
            throw EvaluationError(.shapeMismatch, "\(path): tensor 'weight' has shape \(w.shape); expected [classes, hidden].")
        }
        guard b.shape == [w.shape[0]] else {
            throw EvaluationError(.shapeMismatch, "\(path): tensor 'bias' has shape \(b.shape); expected [\(w.shape[0])] to match 'weight'.")
        }
        let weight: [Float]
        let bias: [Float]
        do {
            weight = try w.floats()
            bias = try b.floats()
        } catch {
            throw EvaluationError(.checkpoint, error.message, cause: error)
        }
        var labels: [String]?
        let labelsURL = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("labels.json")
        if let data = FileManager.default.contents(atPath: labelsURL.path) {
            guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let names = obj["labels"] as? [String] else {
                throw EvaluationError(.invalidData, "\(labelsURL.path): expected an object with a \"labels\" list of strings.")
            }
            guard names.count == w.shape[0] else {
                throw EvaluationError(
                    .incompatible, "\(labelsURL.path): \(names.count) labels, but \(path) has \(w.shape[0]) classes.")
            }
            labels = names
        }
        self.init(weight: weight, bias: bias, classes: w.shape[0], hidden: w.shape[1], labels: labels)
    }

    /// The arg-max class of each row of `features` (`rows × hidden`); ties go to the lower class, as `argmax` does.
    public func predict(_ features: [Float]) -> [Int] {
        precondition(features.count % hidden == 0)
        let rows = features.count / hidden
        return (0..<rows).map { r in
            var best = 0
            var bestScore = -Float.infinity
            for c in 0..<classes {
                var s = bias[c]
                for j in 0..<hidden { s += weight[c * hidden + j] * features[r * hidden + j] }
                if s > bestScore {
                    bestScore = s
                    best = c
                }
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
