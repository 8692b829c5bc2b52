/// An error raised by reading or writing a checkpoint.
///
/// Every message is a full sentence that names the file, the tensor where there is one, and what was expected,
/// so a user can act on it without a debugger. `code` is stable and is what tests and scripts match on.
public struct CheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        case io
        case fileTooSmall
        case headerTooLarge
        case headerOutOfBounds
        case invalidUTF8
        case invalidJSON
        case invalidEntry
        case unknownDType
        case invalidShape
        case duplicateTensor
        case byteSpanMismatch
        case offsetGap
        case offsetOverlap
        case trailingBytes
        case invalidMetadata
        case limitExceeded
        case invalidIndex
        case missingShard
        case tensorInTwoShards
        case tensorMissingFromShard
        case tensorNotInIndex
        case notAModel
        case tensorNotFound
        case unsupportedDType
        case writeOrder
        case writeSize
        case outputExists
        /// Two models that should have the same tensors (base and fine-tune) differ in names or shapes.
        case modelMismatch
        /// An input file was modified, truncated or replaced while it was mapped; the output is not committed.
        case inputChanged
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
