import Evaluation
import Foundation

/// A `tokenizer.json` (the tokenizer `tswitch moe` and the encoders read from a model folder): built or refused
/// with an `EvaluationError`, and a built one encodes texts with added tokens, spaces, accents, CJK, emoji and
/// characters outside any small vocabulary without a crash.
func fuzzTokenizer(_ bytes: UnsafeRawBufferPointer) {
    guard let t = try? ByteLevelBPETokenizer(json: Data(bytes), file: "fuzz/tokenizer.json") else { return }
    for text in ["Hello world", "  two  spaces\n\ttab", "<s>hi</s><unk> <pad>", "naïve 日本語 🙂 ☃", "", "x"] {
        let ids = t.tokenIDs(text)
        precondition(ids.allSatisfy { $0 >= 0 && Int($0) < t.vocabularySize }, "an id outside the vocabulary")
        _ = t.encode(text, maxLength: 1 << 20)
    }
}
