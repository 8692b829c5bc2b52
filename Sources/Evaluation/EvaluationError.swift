/// An error raised while loading an encoder, a tokenizer, a head or a data set, or while evaluating.
///
/// Messages are full sentences naming the file (and tensor, where there is one) and what was expected; `code` is
/// stable and is what tests and scripts match on.
public struct EvaluationError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// A file could not be read or written.
        case io
        /// `vocab.txt` is missing, empty, or lacks a special token.
        case invalidVocabulary
        /// `tokenizer.json` is missing, not valid JSON, or lacks a field its components need.
        case invalidTokenizer
        /// `tokenizer.json` declares a normalizer, pre-tokenizer, model or post-processor type (or option) this module
        /// does not implement.
        case unsupportedTokenizer
        /// `config.json` is missing or lacks a field the encoder needs.
        case invalidConfig
        /// The model is not an encoder family this module can run (see `EncoderFamily.registry`).
        case unsupportedModel
        /// A tensor the encoder or head needs is absent.
        case missingTensor
        /// A tensor has a shape other than the config implies.
        case shapeMismatch
        /// A data file line is not the expected JSON object.
        case invalidData
        /// Head and data or model disagree (class count, hidden size).
        case incompatible
        /// A checkpoint-level error (bad safetensors file and so on), wrapped.
        case checkpoint
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
