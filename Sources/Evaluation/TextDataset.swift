import Foundation

/// One line of a task file: `{"text": ..., "label": <int>}` (the label is optional for embedding inputs), and
/// for mixed-task inputs the task whose pack the text runs on (`"task": "<name>"`).
public struct TextExample: Sendable, Equatable {
    public let text: String
    public let label: Int?
    public let task: String?

    public init(text: String, label: Int?, task: String? = nil) {
        self.text = text
        self.label = label
        self.task = task
    }
}

/// Reading JSONL text files: one JSON object per non-empty line.
public enum TextDataset {
    /// Reads every `{"text": ...}` line of a JSONL file.
    ///
    /// - Throws: `EvaluationError` `.io` when the file cannot be read, `.invalidData` naming the line when a line
    ///   is not an object with a string `text` (and, when present, an integer `label`).
    public static func read(path: String) throws(EvaluationError) -> [TextExample] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EvaluationError(.io, "\(path): cannot read the file.")
        }
        var out: [TextExample] = []
        var lineNumber = 0
        for line in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line)), let row = obj as? [String: Any] else {
                throw EvaluationError(.invalidData, "\(path): line \(lineNumber) is not a JSON object.")
            }
            guard let text = row["text"] as? String else {
                throw EvaluationError(.invalidData, "\(path): line \(lineNumber) has no string \"text\" field.")
            }
            var label: Int?
            if let raw = row["label"] {
                guard let n = raw as? NSNumber, n.doubleValue == n.doubleValue.rounded(), abs(n.doubleValue) < 1e9
                else {
                    throw EvaluationError(
                        .invalidData, "\(path): line \(lineNumber) has a \"label\" that is not an integer.")
                }
                label = n.intValue
            }
            var task: String?
            if let raw = row["task"] {
                guard let name = raw as? String else {
                    throw EvaluationError(
                        .invalidData, "\(path): line \(lineNumber) has a \"task\" that is not a string.")
                }
                task = name
            }
            out.append(TextExample(text: text, label: label, task: task))
        }
        return out
    }
}
