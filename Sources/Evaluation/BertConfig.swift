import Foundation

/// The dimensions of a BERT-family encoder, read from a Hugging Face `config.json`.
public struct BertConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var intermediateSize: Int
    public var layerNormEps: Float
    public var maxPositions: Int
    public var typeVocabularySize: Int
    public var vocabularySize: Int

    public init(
        hiddenSize: Int, layerCount: Int, headCount: Int, intermediateSize: Int, layerNormEps: Float,
        maxPositions: Int, typeVocabularySize: Int, vocabularySize: Int
    ) {
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.intermediateSize = intermediateSize
        self.layerNormEps = layerNormEps
        self.maxPositions = maxPositions
        self.typeVocabularySize = typeVocabularySize
        self.vocabularySize = vocabularySize
    }

    public var headSize: Int { hiddenSize / headCount }

    /// Reads the fields the encoder needs and refuses what it cannot run (another activation, relative
    /// positions, a hidden size not divisible by the head count).
    public init(json: [String: Any], file: String) throws(EvaluationError) {
        func int(_ key: String) throws(EvaluationError) -> Int {
            guard let n = json[key] as? NSNumber, n.intValue > 0, Double(n.intValue) == n.doubleValue else {
                throw EvaluationError(.invalidConfig, "\(file): expected a positive integer \"\(key)\".")
            }
            return n.intValue
        }
        if let type = json["model_type"] as? String, type != "bert" {
            throw EvaluationError(
                .unsupportedModel, "\(file): model_type is \"\(type)\"; this encoder runs BERT (\"bert\") models.")
        }
        let act = (json["hidden_act"] as? String) ?? "gelu"
        guard act == "gelu" else {
            throw EvaluationError(
                .unsupportedModel, "\(file): hidden_act is \"\(act)\"; this encoder implements the exact (erf) \"gelu\".")
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
        guard hiddenSize % headCount == 0 else {
            throw EvaluationError(
                .invalidConfig,
                "\(file): hidden_size \(hiddenSize) is not divisible by num_attention_heads \(headCount).")
        }
    }
}
