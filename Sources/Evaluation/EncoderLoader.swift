import CheckpointIO
import Foundation

/// The one place an encoder model is opened: reads `config.json`, picks the family by its `model_type`
/// (`EncoderFamily.registry`), reads the family's tokenizer and resolves the checkpoint's tensor names.
///
/// Everything that runs an encoder (`SentenceEncoder`, `SwitchedEncoder`, `DropSweep`, the commands) goes through
/// it, so the family, the config and the `bert.`/`roberta.` prefix are decided once.
public struct EncoderLoader: Sendable {
    public let folder: ModelFolder
    public let family: EncoderFamily
    public let config: BertConfig
    public let tokenizer: any TextTokenizer
    /// Prefix of the encoder's tensors in this checkpoint: empty for a bare encoder, the family's otherwise.
    public let weightPrefix: String

    /// Opens a Hugging Face folder (`config.json` + safetensors, single or sharded) or a bare safetensors file whose
    /// folder has a `config.json`.
    ///
    /// - Throws: `EvaluationError` `.checkpoint` wrapping an invalid safetensors file or folder; `.invalidConfig`
    ///   for a missing or malformed `config.json`; `.unsupportedModel` for a `model_type` without a family; the
    ///   tokenizer's errors.
    public init(path: String) throws(EvaluationError) {
        let folder: ModelFolder
        do {
            folder = try ModelFolder(path: path)
        } catch {
            throw EvaluationError(.checkpoint, error.message, cause: error)
        }
        try self.init(folder: folder)
    }

    public init(folder: ModelFolder) throws(EvaluationError) {
        let configPath = folder.directory.appendingPathComponent("config.json").path
        let json: [String: Any]?
        do {
            json = try folder.config()
        } catch {
            throw EvaluationError(.invalidConfig, error.message, cause: error)
        }
        guard let json else {
            throw EvaluationError(
                .invalidConfig, "\(configPath): no config.json next to the weights of \(folder.path).")
        }
        // A config without model_type is read as BERT, as before families existed.
        let type = json["model_type"] as? String ?? "bert"
        guard let family = EncoderFamily.registry[type] else {
            throw EvaluationError(
                .unsupportedModel,
                "\(configPath): model_type is \"\(type)\"; the encoders run \(EncoderFamily.registry.keys.sorted().map { "\"\($0)\"" }.joined(separator: ", "))."
            )
        }
        self.folder = folder
        self.family = family
        config = try family.readConfig(json, configPath)
        tokenizer = try family.readTokenizer(folder.directory)
        guard tokenizer.vocabularySize <= config.vocabularySize else {
            throw EvaluationError(
                .incompatible,
                "\(folder.directory.path): the tokenizer has \(tokenizer.vocabularySize) tokens, but the model's vocab_size is \(config.vocabularySize)."
            )
        }
        let first = family.tensorNames(config).first ?? ""
        weightPrefix = folder.contains(first) ? "" : family.weightPrefix
    }

    /// Unprefixed names of the tensors the encoder reads, in load order.
    public var tensorNames: [String] { family.tensorNames(config) }

    /// The checkpoint's name of an unprefixed encoder tensor.
    public func checkpointName(_ name: String) -> String { weightPrefix + name }

    /// An encoder over tensors supplied by unprefixed name (for example a base with switches applied in memory).
    ///
    /// - Parameters:
    ///   - source: names the model in error messages.
    ///   - tensor: returns a tensor's shape and values, or nil when the model has no such tensor.
    public func encoder(
        source: String, tensor: (String) throws(EvaluationError) -> (shape: [Int], values: [Float])?
    ) throws(EvaluationError) -> any EncoderModel {
        try family.build(config, source) { (name) throws(EvaluationError) in
            try tensor(name).map { ($0.shape, EncoderWeight(owning: $0.values)) }
        }
    }

    /// An encoder over tensors it borrows (the switched resident weights inside `SwitchableModel.withActivated`):
    /// nothing is copied but what the encoder repacks, and the encoder is valid only while the memory is.
    func encoder(
        source: String, borrowing tensor: (String) throws(EvaluationError) -> (shape: [Int], weight: EncoderWeight)?
    ) throws(EvaluationError) -> any EncoderModel {
        try family.build(config, source, tensor)
    }

    /// An encoder over the folder's own weights.
    public func encoder() throws(EvaluationError) -> any EncoderModel {
        let folder = folder
        let prefix = weightPrefix
        return try encoder(source: folder.path) { (name) throws(EvaluationError) -> (shape: [Int], values: [Float])? in
            guard folder.contains(prefix + name) else { return nil }
            do throws(CheckpointError) {
                let view = try folder.tensor(prefix + name)
                return (view.shape, try view.floats())
            } catch {
                throw EvaluationError(.checkpoint, error.message, cause: error)
            }
        }
    }

    /// The folder's tokenizer and encoder, with mean pooling.
    public func sentenceEncoder() throws(EvaluationError) -> SentenceEncoder {
        SentenceEncoder(tokenizer: tokenizer, encoder: try encoder())
    }
}
