import Foundation

/// Which task folders of a folder of tasks (`data/tasks`) an evaluation takes.
public enum TaskFolders {
    /// The tasks of `data` (sorted folder names with a `test.jsonl`) that also have `<heads>/<task>/head.safetensors`,
    /// and those left out for having no head. A heads folder made for some of the tasks (the eight linear-probe
    /// heads of `data/heads` beside twenty tasks) thus evaluates exactly those.
    public static func withHeads(data: String, heads: String) -> (tasks: [String], withoutHead: [String]) {
        let fm = FileManager.default
        let all = ((try? fm.contentsOfDirectory(atPath: data)) ?? []).sorted()
            .filter { fm.fileExists(atPath: "\(data)/\($0)/test.jsonl") }
        var tasks: [String] = []
        var withoutHead: [String] = []
        for task in all {
            if fm.fileExists(atPath: "\(heads)/\(task)/head.safetensors") {
                tasks.append(task)
            } else {
                withoutHead.append(task)
            }
        }
        return (tasks, withoutHead)
    }
}
