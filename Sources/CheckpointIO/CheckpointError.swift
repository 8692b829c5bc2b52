/// An error raised by reading or writing a checkpoint.
///
/// Every message is a full sentence that names the file, the tensor where there is one, and what was expected,
/// so a user can act on it without a debugger. `code` is stable and is what tests and scripts match on.
public struct CheckpointError: CodedError, Sendable {
    public struct Code: ErrorCode, CaseIterable {
        private enum Wrapped: String, Sendable, CaseIterable {
            case io, fileTooSmall, headerTooLarge, headerOutOfBounds, invalidUTF8, invalidJSON, invalidEntry,
                unknownDType, invalidShape, duplicateTensor, byteSpanMismatch, offsetGap, offsetOverlap,
                trailingBytes, invalidMetadata, limitExceeded, invalidIndex, missingShard, tensorInTwoShards,
                tensorMissingFromShard, tensorNotInIndex, notAModel, tensorNotFound, unsupportedDType, writeOrder,
                writeSize, outputExists, modelMismatch, inputChanged, notGGUF, unsupportedVersion, misalignedOffset
        }

        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        public init?(rawValue: String) {
            guard let wrapped = Wrapped(rawValue: rawValue) else { return nil }
            self.wrapped = wrapped
        }

        public var rawValue: String { wrapped.rawValue }

        public static var allCases: [Code] { Wrapped.allCases.map(Code.init) }

        public static let io = Code(.io)
        public static let fileTooSmall = Code(.fileTooSmall)
        public static let headerTooLarge = Code(.headerTooLarge)
        public static let headerOutOfBounds = Code(.headerOutOfBounds)
        public static let invalidUTF8 = Code(.invalidUTF8)
        public static let invalidJSON = Code(.invalidJSON)
        public static let invalidEntry = Code(.invalidEntry)
        public static let unknownDType = Code(.unknownDType)
        public static let invalidShape = Code(.invalidShape)
        public static let duplicateTensor = Code(.duplicateTensor)
        public static let byteSpanMismatch = Code(.byteSpanMismatch)
        public static let offsetGap = Code(.offsetGap)
        public static let offsetOverlap = Code(.offsetOverlap)
        public static let trailingBytes = Code(.trailingBytes)
        public static let invalidMetadata = Code(.invalidMetadata)
        public static let limitExceeded = Code(.limitExceeded)
        public static let invalidIndex = Code(.invalidIndex)
        public static let missingShard = Code(.missingShard)
        public static let tensorInTwoShards = Code(.tensorInTwoShards)
        public static let tensorMissingFromShard = Code(.tensorMissingFromShard)
        public static let tensorNotInIndex = Code(.tensorNotInIndex)
        public static let notAModel = Code(.notAModel)
        public static let tensorNotFound = Code(.tensorNotFound)
        public static let unsupportedDType = Code(.unsupportedDType)
        public static let writeOrder = Code(.writeOrder)
        public static let writeSize = Code(.writeSize)
        public static let outputExists = Code(.outputExists)
        /// Two models that should have the same tensors (base and fine-tune) differ in names or shapes.
        public static let modelMismatch = Code(.modelMismatch)
        /// An input file was modified, truncated or replaced while it was mapped; the output is not committed.
        public static let inputChanged = Code(.inputChanged)
        /// A file given as GGUF does not start with the magic `GGUF`.
        public static let notGGUF = Code(.notGGUF)
        /// A GGUF file of a version other than 2 or 3.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// A GGUF tensor offset (or `general.alignment`) that breaks the file's alignment.
        public static let misalignedOffset = Code(.misalignedOffset)
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
