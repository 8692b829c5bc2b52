import ArgumentParser
import CheckpointIO
import Evaluation
import Foundation

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Sentence embeddings of a JSONL file of texts with a BERT encoder (masked mean pooling).",
        discussion: """
            Reads one {"text": ...} object per line and writes one F32 tensor `embeddings` (N x hidden) to a \
            safetensors file, in input order. --normalize scales each row to unit length, which is what \
            sentence-transformers returns for all-MiniLM-L6-v2. Matrix products run through OpenBLAS \
            (OPENBLAS_NUM_THREADS sets its threads).
            """)

    @Argument(help: "A Hugging Face BERT folder (config.json, model.safetensors, vocab.txt).")
    var model: String

    @Option(help: "JSONL file with one {\"text\": ...} object per line.")
    var input: String

    @Option(help: "Output safetensors file.")
    var output: String

    @Flag(help: "Scale every embedding to unit L2 length.")
    var normalize = false

    @Option(help: "Truncate texts to this many tokens, [CLS] and [SEP] included.")
    var maxLength = 128

    @Option(help: "Texts per forward pass.")
    var batch = 64

    @Flag(help: "Print a JSON summary for scripts.")
    var json = false

    func validate() throws {
        if maxLength < 2 { throw ValidationError("--max-length must be at least 2 ([CLS] and [SEP]).") }
        if batch < 1 { throw ValidationError("--batch must be at least 1.") }
    }

    func run() throws {
        let encoder = try SentenceEncoder(path: model)
        guard maxLength <= encoder.maxSequenceLength else {
            throw ValidationError("--max-length \(maxLength) exceeds the model's max_position_embeddings \(encoder.maxSequenceLength).")
        }
        let texts = try TextDataset.read(path: input).map(\.text)
        let progress = ProgressBar(total: texts.count, label: "embed")
        let start = Date()
        let values = encoder.embed(texts, maxLength: maxLength, batchSize: batch, normalize: normalize) {
            progress.update($0)
        }
        progress.finish()
        let seconds = Date().timeIntervalSince(start)
        let writer = try SafeTensorsWriter(
            path: output, tensors: [TensorSpec(name: "embeddings", dtype: .F32, shape: [texts.count, encoder.hiddenSize])],
            metadata: ["model": model, "pooling": "mean", "normalized": normalize ? "true" : "false", "max_length": "\(maxLength)"])
        try writer.write("embeddings", floats: values)
        try writer.finish()
        if json {
            let root: [String: Any] = [
                "output": output, "n": texts.count, "hidden": encoder.hiddenSize, "seconds": seconds,
                "sentences_per_second": seconds > 0 ? Double(texts.count) / seconds : 0,
            ]
            let data = try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("\(texts.count) embeddings of \(encoder.hiddenSize) floats -> \(output) (\(String(format: "%.1f", seconds)) s, \(String(format: "%.0f", Double(texts.count) / max(seconds, 1e-9))) sentences/s)")
        }
    }
}
