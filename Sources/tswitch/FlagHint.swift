import CheckpointIO
import Evaluation
import MergeEngine
import TaskSwitches

/// A library error with the command-line flag that addresses it appended to its message.
///
/// Library messages name files, tensors and values, never flags (a library has no flags); the tool knows which of
/// its flags corresponds to an error code and says so here, in one place.
struct FlagHint: Error, CustomStringConvertible {
    let error: any Error
    let hint: String

    var description: String { "\(error) \(hint)" }

    /// `error` with its hint, or `error` itself when no flag corresponds to it.
    static func adding(to error: any Error) -> any Error {
        if let hint = hint(for: error) { return FlagHint(error: error, hint: hint) }
        return error
    }

    static func hint(for error: any Error) -> String? {
        let exists =
            (error as? CheckpointError)?.code == .outputExists
            || (error as? SwitchError)?.code == .outputExists
            || (error as? MergeError)?.underlying(CheckpointError.self)?.code == .outputExists
            || (error as? EvaluationError)?.underlying(CheckpointError.self)?.code == .outputExists
        return exists ? "Pass --force to replace it." : nil
    }
}
