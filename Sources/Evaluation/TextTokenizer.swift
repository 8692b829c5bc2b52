/// A tokenizer as the encoders use it: text in, the model's token ids (special tokens included) out.
///
/// Implemented by `WordPieceTokenizer` (BERT, `vocab.txt`) and `ByteLevelBPETokenizer` (RoBERTa and GPT-2 style,
/// `tokenizer.json`); `EncoderLoader` picks the one a model family uses.
public protocol TextTokenizer: Sendable {
    /// Number of token ids the tokenizer can produce (they must all be rows of the model's embedding).
    var vocabularySize: Int { get }
    /// The id padded positions carry (never computed: the encoders skip masked positions).
    var padID: Int32 { get }
    /// Ids of `text` with the model's special tokens, the text's pieces truncated so that the whole is at most
    /// `maxLength` ids.
    func encode(_ text: String, maxLength: Int) -> [Int32]
}

extension TextTokenizer {
    /// Encodes texts and pads them to the longest in the batch.
    public func encodeBatch(_ texts: [String], maxLength: Int = 512) -> TokenBatch {
        TokenBatch(sequences: texts.map { encode($0, maxLength: maxLength) }, padID: padID)
    }
}
