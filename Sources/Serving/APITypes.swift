import Foundation

/// `input`: one text or a list of texts (OpenAI also takes token arrays; this server does not).
struct Inputs: Decodable, Sendable {
    let texts: [String]

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let one = try? c.decode(String.self) {
            texts = [one]
        } else if let many = try? c.decode([String].self) {
            texts = many
        } else {
            throw DecodingError.typeMismatch(
                [String].self,
                .init(codingPath: c.codingPath, debugDescription: "expected a string or an array of strings"))
        }
    }
}

struct EmbeddingsRequest: Decodable, Sendable {
    let model: String
    let input: Inputs
    /// "float" (default) or "base64" (little-endian F32, what the `openai` Python client asks for).
    let encodingFormat: String?
    let dimensions: Int?

    enum CodingKeys: String, CodingKey {
        case model, input, dimensions
        case encodingFormat = "encoding_format"
    }
}

struct ClassifyRequest: Decodable, Sendable {
    let task: String
    let input: Inputs
    let scores: Bool?
}

/// `float`: the numbers; `base64`: the F32 bytes, little-endian.
enum EmbeddingValue: Encodable {
    case floats(ArraySlice<Float>)
    case base64(String)

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .floats(let v): try c.encode(Array(v))
        case .base64(let s): try c.encode(s)
        }
    }
}

struct EmbeddingObject: Encodable {
    let object = "embedding"
    let index: Int
    let embedding: EmbeddingValue
    /// The switch applied: the task, or "base".
    let task: String
    /// Present (true) when the text was cut to the token limit.
    let truncated: Bool?
}

struct Usage: Encodable {
    let promptTokens: Int
    let totalTokens: Int

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens"
        case totalTokens = "total_tokens"
    }
}

struct EmbeddingsResponse: Encodable {
    let object = "list"
    let data: [EmbeddingObject]
    let model: String
    let usage: Usage
}

struct ClassScore: Encodable {
    let label: String
    let score: Float
}

struct Classification: Encodable {
    let index: Int
    /// The task whose pack and head answered, or "base" (auto, far from every task: no label).
    let task: String
    let label: String?
    /// Softmax probability of `label`.
    let score: Float?
    let scores: [ClassScore]?
    let truncated: Bool?
}

struct ClassifyResponse: Encodable {
    let object = "list"
    let data: [Classification]
    let model: String
    let usage: Usage
}

struct ModelEntry: Encodable {
    let id: String
    let object = "model"
    let created: Int
    let ownedBy = "tswitch"
    let parent: String?
    let kind: String?
    let labels: [String]?
    let hasHead: Bool?

    enum CodingKeys: String, CodingKey {
        case id, object, created, parent, kind, labels
        case ownedBy = "owned_by"
        case hasHead = "has_head"
    }
}

struct ModelList: Encodable {
    let object = "list"
    let data: [ModelEntry]
}

/// A readable sentence for a decoding failure: which field, what was wrong.
func describe(_ error: any Error) -> String {
    guard let e = error as? DecodingError else { return "The body is not valid JSON." }
    func path(_ p: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
        let keys = (p + (last.map { [$0] } ?? [])).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        return keys.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }
    switch e {
    case .dataCorrupted(let c):
        return c.codingPath.isEmpty
            ? "The body is not valid JSON." : "Field '\(path(c.codingPath))': \(c.debugDescription)."
    case .keyNotFound(let key, let c):
        return "The request needs a field '\(path(c.codingPath, key))'."
    case .typeMismatch(let type, let c):
        let expected = type == [String].self ? "a string or an array of strings" : "\(type)".lowercased()
        return c.codingPath.isEmpty
            ? "The body must be a JSON object."
            : "Field '\(path(c.codingPath))' has the wrong type: expected \(expected)."
    case .valueNotFound(_, let c):
        return "Field '\(path(c.codingPath))' must not be null."
    @unknown default:
        return "The body is not valid JSON."
    }
}
