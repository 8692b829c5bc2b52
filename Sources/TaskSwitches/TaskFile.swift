import CheckpointIO

/// A task name and a file for it, written `TASK=FILE` on a command line (`tswitch route --build`).
///
/// The name ends at the first `=`; the file may contain `=` itself. Both must be non-empty.
public struct TaskFile: Sendable, Equatable {
    public let task: String
    public let path: String

    public init(task: String, path: String) {
        self.task = task
        self.path = path
    }

    public init(parsing text: String) throws(ValueSyntaxError) {
        guard let eq = text.firstIndex(of: "=") else {
            throw ValueSyntaxError("'\(text)' is not TASK=FILE (a task name, '=', then its features file).")
        }
        let task = String(text[..<eq])
        let path = String(text[text.index(after: eq)...])
        guard !task.isEmpty else { throw ValueSyntaxError("'\(text)' has no task name before '='; give TASK=FILE.") }
        guard !path.isEmpty else { throw ValueSyntaxError("'\(text)' has no file after '='; give TASK=FILE.") }
        self.init(task: task, path: path)
    }
}
