import CheckpointIO

/// An error raised while loading an encoder, a tokenizer, a head or a data set, or while evaluating.
///
/// Messages are full sentences naming the file (and tensor, where there is one) and what was expected; `code` is
/// stable and is what tests and scripts match on.
public struct EvaluationError: CodedError, Sendable {
    public struct Code: ErrorCode, CaseIterable {
        private enum Wrapped: String, Sendable, CaseIterable {
            case io, invalidVocabulary, invalidTokenizer, unsupportedTokenizer, invalidConfig, unsupportedModel,
                missingTensor, shapeMismatch, invalidData,
                incompatible, checkpoint
        }

        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        public init?(rawValue: String) {
            guard let wrapped = Wrapped(rawValue: rawValue) else { return nil }
            self.wrapped = wrapped
        }

        public var rawValue: String { wrapped.rawValue }

        public static var allCases: [Code] { Wrapped.allCases.map(Code.init) }

        /// A file could not be read or written.
        public static let io = Code(.io)
        /// `vocab.txt` is missing, empty, or lacks a special token.
        public static let invalidVocabulary = Code(.invalidVocabulary)
        /// `tokenizer.json` is missing, not valid JSON, or lacks a field its components need.
        public static let invalidTokenizer = Code(.invalidTokenizer)
        /// `tokenizer.json` declares a normalizer, pre-tokenizer, model or post-processor type (or option) this module
        /// does not implement.
        public static let unsupportedTokenizer = Code(.unsupportedTokenizer)
        /// `config.json` is missing or lacks a field the encoder needs.
        public static let invalidConfig = Code(.invalidConfig)
        /// The model is not an encoder family this module can run (see `EncoderFamily.registry`).
        public static let unsupportedModel = Code(.unsupportedModel)
        /// A tensor the encoder or head needs is absent.
        public static let missingTensor = Code(.missingTensor)
        /// A tensor has a shape other than the config implies.
        public static let shapeMismatch = Code(.shapeMismatch)
        /// A data file line is not the expected JSON object.
        public static let invalidData = Code(.invalidData)
        /// Head and data or model disagree (class count, hidden size).
        public static let incompatible = Code(.incompatible)
        /// A checkpoint-level error (bad safetensors file and so on), wrapped.
        public static let checkpoint = Code(.checkpoint)
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
