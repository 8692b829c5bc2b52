import CheckpointIO

/// An error raised while reading a merge configuration, planning a merge or merging a tensor.
///
/// `code` is stable (tests and scripts match on it); `message` is a full sentence naming the config line, the
/// tensor and the models involved, and what was expected.
public struct MergeError: CodedError, Sendable {
    public struct Code: ErrorCode, CaseIterable {
        private enum Wrapped: String, Sendable, CaseIterable {
            case invalidConfig, unknownKey, unknownMethod, missingParameter, modelNotFound, missingTensor,
                shapeMismatch, invalidInputs, numerical, checkpoint, limitExceeded, unsupported
        }

        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        public init?(rawValue: String) {
            guard let wrapped = Wrapped(rawValue: rawValue) else { return nil }
            self.wrapped = wrapped
        }

        public var rawValue: String { wrapped.rawValue }

        public static var allCases: [Code] { Wrapped.allCases.map(Code.init) }

        /// The YAML does not parse, or a value has the wrong type.
        public static let invalidConfig = Code(.invalidConfig)
        /// A key that mergekit does not know (or this method does not take).
        public static let unknownKey = Code(.unknownKey)
        /// A `merge_method` that is not registered.
        public static let unknownMethod = Code(.unknownMethod)
        /// A required key or parameter is missing.
        public static let missingParameter = Code(.missingParameter)
        /// A model path or Hugging Face id that resolves to nothing local.
        public static let modelNotFound = Code(.modelNotFound)
        /// An input lacks a tensor the output needs.
        public static let missingTensor = Code(.missingTensor)
        /// Inputs disagree on a tensor's shape.
        public static let shapeMismatch = Code(.shapeMismatch)
        /// The method's input contract (base, number of models) is not met.
        public static let invalidInputs = Code(.invalidInputs)
        /// A numerical precondition of a method fails (e.g. antipodal vectors with balancing weights).
        public static let numerical = Code(.numerical)
        /// Reading or writing a checkpoint failed.
        public static let checkpoint = Code(.checkpoint)
        /// The configuration exceeds a size limit of `MergeConfigParser.Limits` (bytes, depth, nodes, models).
        public static let limitExceeded = Code(.limitExceeded)
        /// A mergekit option or model kind this implementation does not provide (named in the message).
        public static let unsupported = Code(.unsupported)
    }

    public let code: Code
    public let message: String
    public let cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }
}

/// Runs `body`, turning a `CheckpointError` into a `MergeError` with code `.checkpoint` that keeps it as `cause`.
@inline(__always)
func checkpoint<T>(_ body: () throws(CheckpointError) -> T) throws(MergeError) -> T {
    do { return try body() } catch { throw MergeError(.checkpoint, error.message, cause: error) }
}
