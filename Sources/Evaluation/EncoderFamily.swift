import Foundation

/// What differs between encoder families: how `config.json` is read, the tensor-name prefix of task-model
/// checkpoints (`BertFor…` saves `bert.…`, `RobertaFor…` saves `roberta.…`), the tokenizer, and the encoder built
/// from the tensors.
///
/// Adding a family is one value here and one line in `registry`, keyed by `config.json`'s `model_type`.
public struct EncoderFamily: Sendable {
    public let modelType: String
    /// Prefix of the encoder's tensors in checkpoints of a task model; a folder whose tensors are unprefixed
    /// (a bare `BertModel`/`RobertaModel`) is recognized by `EncoderLoader`.
    public let weightPrefix: String
    let readConfig: @Sendable ([String: Any], String) throws(EvaluationError) -> BertConfig
    let readTokenizer: @Sendable (URL) throws(EvaluationError) -> any TextTokenizer
    let tensorNames: @Sendable (BertConfig) -> [String]
    /// Builds the encoder from tensors by unprefixed name; a weight may borrow memory owned by the caller (a
    /// switched resident base), valid for as long as the caller keeps it.
    let build:
        @Sendable (BertConfig, String, (String) throws(EvaluationError) -> (shape: [Int], weight: EncoderWeight)?)
            throws(EvaluationError) -> any EncoderModel

    /// BERT (all-MiniLM-L6-v2 and other `BertModel` checkpoints): WordPiece from `vocab.txt`.
    public static let bert = EncoderFamily(
        modelType: "bert", weightPrefix: "bert.",
        readConfig: { (json, file) throws(EvaluationError) in try BertConfig(json: json, file: file, modelType: "bert")
        },
        readTokenizer: { (folder) throws(EvaluationError) in try WordPieceTokenizer(folder: folder) },
        tensorNames: { BertEncoder.tensorNames(layerCount: $0.layerCount) },
        build: { (config, source, tensor) throws(EvaluationError) in
            try BertEncoder(config: config, source: source, weight: tensor)
        })

    /// RoBERTa (the roberta-base layout): BERT's post-LN transformer with positions from `pad_token_id + 1` and
    /// one token type; byte-level BPE from `tokenizer.json`.
    public static let roberta = EncoderFamily(
        modelType: "roberta", weightPrefix: "roberta.",
        readConfig: { (json, file) throws(EvaluationError) in
            try BertConfig(json: json, file: file, modelType: "roberta")
        },
        readTokenizer: { (folder) throws(EvaluationError) in try ByteLevelBPETokenizer(folder: folder) },
        tensorNames: { BertEncoder.tensorNames(layerCount: $0.layerCount) },
        build: { (config, source, tensor) throws(EvaluationError) in
            try BertEncoder(config: config, source: source, weight: tensor)
        })

    /// The families `EncoderLoader` can load, by `model_type`.
    public static let registry: [String: EncoderFamily] = [
        "bert": .bert,
        "roberta": .roberta,
    ]
}
