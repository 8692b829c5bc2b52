import Foundation

/// The dimensions of a BERT-family encoder (BERT, RoBERTa), read from a Hugging Face `config.json`.
public struct BertConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var intermediateSize: Int
    public var layerNormEps: Float
    public var maxPositions: Int
    public var typeVocabularySize: Int
    public var vocabularySize: Int
    /// Position of a sequence's first token in the position embedding: 0 for BERT; RoBERTa numbers positions from
    /// `pad_token_id + 1` (transformers' `create_position_ids_from_input_ids`), so its first row is unused.
    public var positionOffset: Int
    /// RoBERTa's padding index: a token with this id takes this position and does not advance the others (as
    /// `create_position_ids_from_input_ids` numbers them, also for a `<pad>` inside a text); nil for BERT.
    public var positionPaddingID: Int?

    public init(
        hiddenSize: Int, layerCount: Int, headCount: Int, intermediateSize: Int, layerNormEps: Float,
        maxPositions: Int, typeVocabularySize: Int, vocabularySize: Int, positionOffset: Int = 0,
        positionPaddingID: Int? = nil
    ) {
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.intermediateSize = intermediateSize
        self.layerNormEps = layerNormEps
        self.maxPositions = maxPositions
        self.typeVocabularySize = typeVocabularySize
        self.vocabularySize = vocabularySize
        self.positionOffset = positionOffset
        self.positionPaddingID = positionPaddingID
    }

    public var headSize: Int { hiddenSize / headCount }

    /// Longest sequence the position embedding covers, special tokens included.
    public var maxSequenceLength: Int { maxPositions - positionOffset }

    /// Reads the fields the encoder needs and refuses what it cannot run (another activation, relative
    /// positions, a hidden size not divisible by the head count).
    ///
    /// - Parameters:
    ///   - modelType: the family the caller runs, `"bert"` or `"roberta"`; a `model_type` naming another is refused.
    ///     For `"roberta"` positions start at `pad_token_id + 1` (1 when absent, as in transformers).
    public init(json: [String: Any], file: String, modelType: String = "bert") throws(EvaluationError) {
        func int(_ key: String) throws(EvaluationError) -> Int {
            guard let n = json[key] as? NSNumber, n.intValue > 0, Double(n.intValue) == n.doubleValue else {
                throw EvaluationError(.invalidConfig, "\(file): expected a positive integer \"\(key)\".")
            }
            return n.intValue
        }
        if let type = json["model_type"] as? String, type != modelType {
            throw EvaluationError(
                .unsupportedModel, "\(file): model_type is \"\(type)\"; this encoder runs \"\(modelType)\" models.")
        }
        let act = (json["hidden_act"] as? String) ?? "gelu"
        guard act == "gelu" else {
            throw EvaluationError(
                .unsupportedModel,
                "\(file): hidden_act is \"\(act)\"; this encoder implements the exact (erf) \"gelu\".")
        }
        let positions = (json["position_embedding_type"] as? String) ?? "absolute"
        guard positions == "absolute" else {
            throw EvaluationError(
                .unsupportedModel, "\(file): position_embedding_type is \"\(positions)\"; expected \"absolute\".")
        }
        hiddenSize = try int("hidden_size")
        layerCount = try int("num_hidden_layers")
        headCount = try int("num_attention_heads")
        intermediateSize = try int("intermediate_size")
        maxPositions = try int("max_position_embeddings")
        typeVocabularySize = try int("type_vocab_size")
        vocabularySize = try int("vocab_size")
        if let eps = json["layer_norm_eps"] as? NSNumber {
            layerNormEps = eps.floatValue
        } else {
            layerNormEps = 1e-12
        }
        if modelType == "roberta" {
            let pad = (json["pad_token_id"] as? NSNumber)?.intValue ?? 1
            guard pad >= 0, pad + 1 < maxPositions else {
                throw EvaluationError(
                    .invalidConfig,
                    "\(file): pad_token_id \(pad) leaves no position below max_position_embeddings \(maxPositions).")
            }
            positionOffset = pad + 1
            positionPaddingID = pad
        } else {
            positionOffset = 0
            positionPaddingID = nil
        }
        guard hiddenSize % headCount == 0 else {
            throw EvaluationError(
                .invalidConfig,
                "\(file): hidden_size \(hiddenSize) is not divisible by num_attention_heads \(headCount).")
        }
    }
}
