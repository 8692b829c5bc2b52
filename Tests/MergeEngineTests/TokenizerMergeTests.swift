import CheckpointIO
import Foundation
import TensorKernels
import Testing

@testable import MergeEngine

/// Vocabulary merging (`tokenizer_source`, `tokenizer:`) against mergekit 0.1.5 on tiny Llama checkpoints whose
/// vocabularies differ (scripts/fixtures/tokenizer_fixtures.py): a base, a chat fine-tune with two new special
/// tokens, a fine-tune with one added token in an embedding resized to 84 rows, and tied-embedding twins.
@Suite("Tokenizer merging matches mergekit")
struct TokenizerMergeTests {
    static let folder = Fixtures.directory.appendingPathComponent("tokenizer")

    struct Expected: Decodable {
        let vocab_size: Int
        let vocab: [String: Int]
    }

    static func run(_ name: String) throws -> String {
        let out = Fixtures.scratch("tok-\(name)")
        try MergeEngine.run(
            configFile: folder.appendingPathComponent("\(name).yml").path, output: out, options: MergeOptions())
        return out
    }

    static func plan(_ yaml: String) throws -> MergePlan {
        let config = try MergeConfigParser.parse(yaml, file: "tok.yml")[0]
        return try MergePlan(config: config, resolver: ModelResolver(configDirectory: folder.path, hubCache: nil))
    }

    @Test(
        "merged tensors, output vocabulary and config vocab_size equal mergekit's",
        arguments: [
            "union_task_arithmetic", "union_linear", "base_linear", "model_linear", "tokens_task_arithmetic",
            "tied_union",
        ])
    func parity(name: String) throws {
        let out = try Self.run(name)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let expectedDir = Self.folder.appendingPathComponent("expected")
        let ours = try ModelFolder(path: out)
        let ref = try ModelFolder(path: expectedDir.appendingPathComponent("\(name).safetensors").path)
        #expect(Set(ours.tensorNames) == Set(ref.tensorNames))
        var worst: Float = 0
        for t in ref.tensorNames {
            let a = try #require(ours.info(t))
            #expect(a.shape == ref.info(t)?.shape, "\(name): \(t) shape")
            let x = try ours.tensor(t).floats()
            let y = try ref.tensor(t).floats()
            guard x.count == y.count else { continue }
            for i in 0..<x.count { worst = max(worst, abs(x[i] - y[i]) / max(1e-3, abs(y[i]))) }
        }
        #expect(worst <= 1e-6, "\(name): worst relative error \(worst)")

        let data = try Data(contentsOf: expectedDir.appendingPathComponent("\(name).json"))
        let expected = try JSONDecoder().decode(Expected.self, from: data)
        let vocabulary = try #require(try TokenizerVocabulary.read(ours, reference: out))
        #expect(vocabulary.vocab == expected.vocab, "\(name): output vocabulary differs from mergekit's")
        let config = try #require(try ours.config())
        #expect(config["vocab_size"] as? Int == expected.vocab_size)
        #expect(
            !FileManager.default.fileExists(atPath: URL(fileURLWithPath: out).appendingPathComponent("vocab.json").path)
        )
    }

    @Test("rows a model lacks come from the base, the only holder, or the configured source")
    func donorRows() throws {
        let plan = try Self.plan(
            """
            merge_method: task_arithmetic
            base_model: models/base
            models:
              - {model: models/chat, parameters: {weight: 1.0}}
              - {model: models/extra, parameters: {weight: 1.0}}
            tokenizer: {source: union, tokens: {"<tool>": {source: {kind: zero}}}}
            """)
        let v = try #require(plan.vocabulary)
        let width = 2
        let imStart = try #require(v.tokens.firstIndex(of: "<|im_start|>"))
        let tool = try #require(v.tokens.firstIndex(of: "<tool>"))
        // Row r of model m holds (m, r), so every aligned row names where it came from.
        let counts = ["models/base": 80, "models/chat": 82, "models/extra": 84]
        let arrays = ["models/base", "models/chat", "models/extra"].map { m in
            (model: m, values: (0..<(counts[m] ?? 0)).flatMap { r in [Float(counts[m] ?? 0), Float(r)] })
        }
        let aligned = try Self.align(v, arrays, width: width)
        // <|im_start|> exists only in chat (its row 80): every model gets chat's row.
        for m in 0..<3 { #expect(Array(aligned[m][(imStart * width)..<(imStart * width + 2)]) == [82, 80]) }
        // <tool> exists only in extra, but the config asks for zero rows where it is missing; extra keeps its own.
        #expect(Array(aligned[0][(tool * width)..<(tool * width + 2)]) == [0, 0])
        #expect(Array(aligned[2][(tool * width)..<(tool * width + 2)]) == [84, 80])
        // A shared token keeps each model's own row.
        #expect(Array(aligned[1][(5 * width)..<(5 * width + 2)]) == [82, 5])
    }

    /// Runs `align` over in-memory tensors and returns each input's aligned rows.
    static func align(_ v: VocabularyAlignment, _ arrays: [(model: String, values: [Float])], width: Int) throws
        -> [[Float]]
    {
        let buffers = arrays.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: $0.values.count) }
        let outputs = arrays.map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: v.rows * width) }
        defer { for b in buffers + outputs { b.deallocate() } }
        for (b, a) in zip(buffers, arrays) { _ = b.initialize(from: a.values) }
        let inputs = zip(arrays, buffers).map { a, b in
            VocabularyAlignment.RowInput(
                model: a.model, source: TensorSource(UnsafeBufferPointer(b)), rows: a.values.count / width)
        }
        try v.align(tensor: "model.embed_tokens.weight", inputs: inputs, width: width, into: outputs)
        return outputs.map { Array($0) }
    }

    @Test("the rewritten tokenizer.json keeps tokens with quotes, backslashes and control characters")
    func escaping() throws {
        let odd = ["\"", "\\", "a\nb", "\u{1}", "tab\t", "é✓", "/", "plain"]
        let json = #"{"model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": []}"#
        let v = TokenizerVocabulary(
            directory: URL(fileURLWithPath: "/"), file: "t.json", data: Data(json.utf8), modelType: "BPE",
            modelVocab: Dictionary(uniqueKeysWithValues: odd.enumerated().map { ($1, $0) }), added: [],
            vocabSize: odd.count)
        let parsed = try JSONSerialization.jsonObject(with: try v.serialized()) as? [String: Any]
        let vocab = (parsed?["model"] as? [String: Any])?["vocab"] as? [String: Int]
        #expect(vocab == v.modelVocab)
    }

    @Test("equal vocabularies leave the embeddings on the streamed path")
    func identity() throws {
        let plan = try Self.plan(
            """
            merge_method: linear
            models:
              - {model: models/base, parameters: {weight: 1.0}}
            tokenizer_source: base
            """)
        let v = try #require(plan.vocabulary)
        #expect(v.isIdentity)
        #expect(!v.aligns("model.embed_tokens.weight"))
    }

    @Test("differing vocabularies without a tokenizer merge are a shape mismatch naming the tensor")
    func noTokenizerMerge() {
        let err = mergeError {
            _ = try Self.plan(
                """
                merge_method: linear
                models:
                  - {model: models/base, parameters: {weight: 0.5}}
                  - {model: models/chat, parameters: {weight: 0.5}}
                """)
        }
        #expect(err?.code == .shapeMismatch)
        #expect(err?.message.contains("model.embed_tokens.weight") == true)
    }

    @Test(
        "config mistakes name the line",
        arguments: [
            ("tokenizer_source: union\ntokenizer: {source: base}\n", MergeError.Code.invalidConfig, "tok.yml:6"),
            ("tokenizer: {source: union, pad_to_multiple: 8}\n", .unknownKey, "pad_to_multiple"),
            (
                "tokenizer: {tokens: {x: {source: {kind: model_token, model: models/base}}}}\n", .invalidConfig,
                "exactly one of"
            ),
            ("tokenizer: {tokens: {x: {source: {kind: other}}}}\n", .invalidConfig, "kind is 'other'"),
            ("tokenizer_source: models/nowhere\n", .invalidConfig, "tok.yml:5: tokenizer source 'models/nowhere'"),
            ("tokenizer: {tokens: {x: {source: models/extra}}}\n", .invalidConfig, "not one of the merged models"),
            (
                "tokenizer: {tokens: {<zz>: {source: models/chat}}}\n", .invalidConfig,
                "tok.yml:5: token '<zz>' takes its row from 'models/chat', which does not have"
            ),
            (
                "tokenizer: {tokens: {<|im_end|>: {force: true}}}\n", .missingParameter,
                "token '<|im_end|>' needs a 'source'"
            ),
            (
                "tokenizer: {tokens: {<zz>: {source: {kind: model_token, model: models/base, token: nope}}}}\n",
                .invalidConfig, "'nope'"
            ),
        ])
    func configErrors(tail: String, code: MergeError.Code, fragment: String) {
        let err = mergeError {
            _ = try Self.plan(
                """
                merge_method: linear
                models:
                  - {model: models/base, parameters: {weight: 0.5}}
                  - {model: models/chat, parameters: {weight: 0.5}}

                """ + tail)
        }
        #expect(err?.code == code)
        #expect(err?.message.contains(fragment) == true, "\(err?.message ?? "no error")")
    }

    @Test("a model with a tokenizer but no tokenizer.json is refused naming the file")
    func slowTokenizerOnly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tok-slow-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("slow")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        let base = Self.folder.appendingPathComponent("models/chat")
        for f in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: base.appendingPathComponent(f), to: model.appendingPathComponent(f))
        }
        try Data("a\nb\n".utf8).write(to: model.appendingPathComponent("vocab.txt"))
        let yaml = """
            merge_method: linear
            models:
              - {model: \(Self.folder.appendingPathComponent("models/base").path), parameters: {weight: 0.5}}
              - {model: \(model.path), parameters: {weight: 0.5}}
            tokenizer_source: union
            """
        let err = mergeError {
            let config = try MergeConfigParser.parse(yaml, file: "tok.yml")[0]
            _ = try MergePlan(config: config, resolver: ModelResolver(configDirectory: dir.path, hubCache: nil))
        }
        #expect(err?.message.contains("vocab.txt but no tokenizer.json") == true, "\(err?.message ?? "no error")")
    }
}
