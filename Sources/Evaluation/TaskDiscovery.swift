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

    /// Every sub-folder of `dataFolder` holding a `test.jsonl` and a head `<headFolder>/<task>/head.safetensors`,
    /// sorted by name. A heads folder made for some of the tasks (the eight linear-probe heads of `data/heads`
    /// beside twenty tasks) thus evaluates exactly those; `withoutHead` names the others.
    ///
    /// - Throws: `EvaluationError` `.invalidData` when `dataFolder` cannot be listed, holds no task folder, or
    ///   no task folder has a head.
    public static func tasks(dataFolder: String, headFolder: String) throws(EvaluationError) -> [Task] {
        let found = try split(dataFolder: dataFolder, headFolder: headFolder)
        guard !found.tasks.isEmpty else {
            throw EvaluationError(
                .invalidData,
                found.withoutHead.isEmpty
                    ? "\(dataFolder): no task folder with a test.jsonl inside."
                    : "\(dataFolder): no task folder has a head in \(headFolder) (<task>/head.safetensors).")
        }
        return found.tasks
    }

    /// The task folders of `dataFolder` (sorted, with a `test.jsonl`) split into those with a head in `headFolder`
    /// and the names of those without one.
    ///
    /// - Throws: `EvaluationError` `.io` when `dataFolder` cannot be listed.
    public static func split(
        dataFolder: String, headFolder: String
    ) throws(EvaluationError) -> (tasks: [Task], withoutHead: [String]) {
        let fm = FileManager.default
        let names: [String]
        do { names = try fm.contentsOfDirectory(atPath: dataFolder) } catch {
            throw EvaluationError(.io, "\(dataFolder): cannot list the task folders: \(error.localizedDescription).")
        }
        var tasks: [Task] = []
        var withoutHead: [String] = []
        for name in names.sorted() where fm.fileExists(atPath: "\(dataFolder)/\(name)/test.jsonl") {
            let head = "\(headFolder)/\(name)/head.safetensors"
            if fm.fileExists(atPath: head) {
                tasks.append(Task(name: name, testPath: "\(dataFolder)/\(name)/test.jsonl", headPath: head))
            } else {
                withoutHead.append(name)
            }
        }
        return (tasks, withoutHead)
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
