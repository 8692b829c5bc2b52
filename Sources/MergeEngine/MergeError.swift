/// An error raised while reading a merge configuration, planning a merge or merging a tensor.
///
/// `code` is stable (tests and scripts match on it); `message` is a full sentence naming the config line, the
/// tensor and the models involved, and what was expected.
public struct MergeError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// The YAML does not parse, or a value has the wrong type.
        case invalidConfig
        /// A key that mergekit does not know (or this method does not take).
        case unknownKey
        /// A `merge_method` that is not registered.
        case unknownMethod
        /// A required key or parameter is missing.
        case missingParameter
        /// A model path or Hugging Face id that resolves to nothing local.
        case modelNotFound
        /// An input lacks a tensor the output needs.
        case missingTensor
        /// Inputs disagree on a tensor's shape.
        case shapeMismatch
        /// The method's input contract (base, number of models) is not met.
        case invalidInputs
        /// A numerical precondition of a method fails (e.g. antipodal vectors with balancing weights).
        case numerical
        /// Reading or writing a checkpoint failed.
        case checkpoint
        /// The configuration exceeds a size limit of `MergeConfigParser.Limits` (bytes, depth, nodes, models).
        case limitExceeded
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
