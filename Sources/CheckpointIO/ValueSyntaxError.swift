/// A command-line or config value that does not have the expected form (`5GB`, `a.tsw:0.5`, `task=file`).
///
/// The message is a full sentence saying what was given and what was expected; the command line shows it as is.
public struct ValueSyntaxError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
