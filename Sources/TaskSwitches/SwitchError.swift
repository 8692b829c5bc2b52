import CheckpointIO

/// An error raised while building, reading or applying switch packs, or routing.
///
/// Every message is a full sentence naming the file, the tensor where there is one, and what was expected.
/// `code` is stable; tests and scripts match on it.
public struct SwitchError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// A checkpoint could not be read or written (the message carries the underlying `CheckpointError`).
        case checkpoint
        case io
        case notAPack
        case truncatedPack
        case corruptPack
        case unsupportedVersion
        /// A pack exceeds a size limit of `PackFile.Limits` (sections, rank, elements, kept entries, META size).
        case limitExceeded
        case wrongBase
        case shapeMismatch
        case missingTensor
        case invalidDropRatio
        case emptyTaskVector
        case nonFiniteValue
        case unsupportedTensor
        case invalidWeight
        case invalidHead
        case invalidQuerySet
        case invalidFeatures
        case invalidArgument
        case outputExists
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Wraps a checkpoint error, keeping its message.
    public init(_ error: CheckpointError) {
        self.code = error.code == .outputExists ? .outputExists : .checkpoint
        self.message = error.message
    }

    public var description: String { message }
}

/// Runs `body`, turning a `CheckpointError` into a `SwitchError`.
@inline(__always)
func io<T>(_ body: () throws(CheckpointError) -> T) throws(SwitchError) -> T {
    do { return try body() } catch { throw SwitchError(error) }
}
