import Foundation

/// The tasks of a folder of task folders (`data/tasks/<task>/test.jsonl`), with the files each task's evaluation
/// reads: its test set, its head (`<heads>/<task>/head.safetensors`) and, for per-task models, its model folder.
public enum TaskDiscovery {
    public struct Task: Sendable, Equatable {
        public let name: String
        public let testPath: String
        public let headPath: String

        public init(name: String, testPath: String, headPath: String) {
            self.name = name
            self.testPath = testPath
            self.headPath = headPath
        }

        /// `<models>/<task>`: the task's own model in a folder of per-task models (zoo/<task>/).
        public func modelPath(in models: String) -> String { "\(models)/\(name)" }
    }

    /// Every sub-folder of `dataFolder` holding a `test.jsonl`, sorted by name, with its head in `headFolder`.
    ///
    /// - Throws: `EvaluationError` `.invalidData` when `dataFolder` cannot be listed or holds no such task folder.
    public static func tasks(dataFolder: String, headFolder: String) throws(EvaluationError) -> [Task] {
        let fm = FileManager.default
        let names: [String]
        do { names = try fm.contentsOfDirectory(atPath: dataFolder) } catch {
            throw EvaluationError(.io, "\(dataFolder): cannot list the task folders: \(error.localizedDescription).")
        }
        let tasks = names.sorted().filter { fm.fileExists(atPath: "\(dataFolder)/\($0)/test.jsonl") }.map {
            Task(name: $0, testPath: "\(dataFolder)/\($0)/test.jsonl", headPath: "\(headFolder)/\($0)/head.safetensors")
        }
        guard !tasks.isEmpty else {
            throw EvaluationError(.invalidData, "\(dataFolder): no task folder with a test.jsonl inside.")
        }
        return tasks
    }

    /// Whether `path` is an existing folder.
    public static func isDirectory(_ path: String) -> Bool {
        var d: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &d) && d.boolValue
    }

    /// Whether `path` is a folder of per-task models rather than one model folder (it has no `config.json`).
    public static func isFolderOfModels(_ path: String) -> Bool {
        isDirectory(path) && !FileManager.default.fileExists(atPath: "\(path)/config.json")
    }
}
