/// One entry of mergekit's `tokenizer.tokens`: where a token's embedding row comes from when a model lacks it
/// (or always, with `force`).
public struct TokenEmbeddingSetting: Sendable, Equatable {
    public enum Source: Sendable, Equatable {
        /// The row of this token in that model.
        case model(String)
        /// A zero row.
        case zero
        /// The row of another token (by id or by text, in that model's own vocabulary) of that model.
        case modelToken(model: String, tokenID: Int?, token: String?)
    }

    public var token: String
    public var source: Source?
    public var force: Bool
    /// YAML line of the token's key, for messages.
    public var line: Int
}
