import CheckpointIO

/// An error raised while building, reading or applying switch packs, or routing.
///
/// Every message is a full sentence naming the file, the tensor where there is one, and what was expected.
/// `code` is stable; tests and scripts match on it.
public struct SwitchError: CodedError, Sendable {
    public struct Code: ErrorCode, CaseIterable {
        private enum Wrapped: String, Sendable, CaseIterable {
            case checkpoint, io, notAPack, truncatedPack, corruptPack, unsupportedVersion, limitExceeded, wrongBase,
                shapeMismatch, missingTensor, invalidDropRatio, emptyTaskVector, nonFiniteValue, unsupportedTensor,
                invalidWeight, invalidHead, invalidQuerySet, invalidFeatures, invalidArgument, outputExists
        }

        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        public init?(rawValue: String) {
            guard let wrapped = Wrapped(rawValue: rawValue) else { return nil }
            self.wrapped = wrapped
        }

        public var rawValue: String { wrapped.rawValue }

        public static var allCases: [Code] { Wrapped.allCases.map(Code.init) }

        /// A checkpoint could not be read or written (the message carries the underlying `CheckpointError`).
        public static let checkpoint = Code(.checkpoint)
        public static let io = Code(.io)
        public static let notAPack = Code(.notAPack)
        public static let truncatedPack = Code(.truncatedPack)
        public static let corruptPack = Code(.corruptPack)
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// A pack exceeds a size limit of `PackFile.Limits` (sections, rank, elements, kept entries, META size).
        public static let limitExceeded = Code(.limitExceeded)
        public static let wrongBase = Code(.wrongBase)
        public static let shapeMismatch = Code(.shapeMismatch)
        public static let missingTensor = Code(.missingTensor)
        public static let invalidDropRatio = Code(.invalidDropRatio)
        public static let emptyTaskVector = Code(.emptyTaskVector)
        public static let nonFiniteValue = Code(.nonFiniteValue)
        public static let unsupportedTensor = Code(.unsupportedTensor)
        public static let invalidWeight = Code(.invalidWeight)
        public static let invalidHead = Code(.invalidHead)
        public static let invalidQuerySet = Code(.invalidQuerySet)
        public static let invalidFeatures = Code(.invalidFeatures)
        public static let invalidArgument = Code(.invalidArgument)
        public static let outputExists = Code(.outputExists)
    }

    public let code: Code
    public let message: String
    public let cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// Wraps a checkpoint error, keeping its message and the error itself as `cause`.
    public init(_ error: CheckpointError) {
        self.init(error.code == .outputExists ? .outputExists : .checkpoint, error.message, cause: error)
    }
}

/// Runs `body`, turning a `CheckpointError` into a `SwitchError`.
@inline(__always)
package func io<T>(_ body: () throws(CheckpointError) -> T) throws(SwitchError) -> T {
    do { return try body() } catch { throw SwitchError(error) }
}
