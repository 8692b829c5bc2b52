/// The one shape of every error this package throws: a stable `code`, a full-sentence `message`, and the
/// underlying error kept as `cause` when one module wraps another's (swift-nio's `FileSystemError` is the model).
///
/// Each module has its own conforming struct (`CheckpointError`, `MergeError`, `SwitchError`, `EvaluationError`),
/// so a module's codes stay its own and no module has to know another's. `Code` is a struct over a private enum
/// (see `ErrorCode`): codes can be added without breaking a client's `switch`, which needs a `default`.
///
/// `message` names the file, the tensor and the value involved, never a command-line flag: the `tswitch`
/// executable adds flag hints where a library error corresponds to one.
public protocol CodedError: Error, CustomStringConvertible, CustomDebugStringConvertible, Equatable {
    associatedtype Code: ErrorCode
    /// Stable; what tests and scripts match on.
    var code: Code { get }
    /// A full sentence a user can act on without a debugger.
    var message: String { get }
    /// The error this one wraps (e.g. the `CheckpointError` behind a `MergeError` with code `.checkpoint`).
    var cause: (any Error)? { get }
}

extension CodedError {
    /// The message alone: it is what the command-line tool prints.
    public var description: String { message }

    /// `Type.code: message`, then the chain of causes, one per line.
    public var debugDescription: String {
        var s = "\(Self.self).\(code): \(message)"
        var next = cause
        while let c = next {
            if let coded = c as? any CodedError {
                s += "\n└─ cause: \(type(of: coded)).\(coded.codeName): \(coded.message)"
                next = coded.cause
            } else {
                s += "\n└─ cause: \(String(reflecting: c))"
                next = nil
            }
        }
        return s
    }

    var codeName: String { code.rawValue }

    /// The first error along the chain of causes (this one included) of type `E`.
    public func underlying<E: CodedError>(_ type: E.Type) -> E? {
        var next: (any Error)? = self
        while let e = next {
            if let hit = e as? E { return hit }
            next = (e as? any CodedError)?.cause
        }
        return nil
    }

    /// Two errors are equal when code and message are; the cause is not compared.
    public static func == (a: Self, b: Self) -> Bool { a.code == b.code && a.message == b.message }
}

/// A stable error code: a struct over a private enum, spelled by its raw value (`"invalidConfig"`), which is what
/// `--json` output, scripts and tests use.
public protocol ErrorCode: RawRepresentable<String>, Hashable, Sendable, CustomStringConvertible {}

extension ErrorCode {
    public var description: String { rawValue }
}
