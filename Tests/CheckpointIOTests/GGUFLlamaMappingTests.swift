import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

/// A llama GGUF seen as Hugging Face tensors: names, un-permuted Q/K rows and config, against the weights the
/// fixture script started from (`tiny_llama.reference.safetensors`, permuted by llama.cpp's own rule).
@Suite("GGUF llama mapping")
struct GGUFLlamaMappingTests {
    @Test("Every tensor maps to its Hugging Face name and values; Q and K rows come back in Hugging Face order")
    func tensors() throws {
        let mapping = try GGUFLlamaMapping(file: GGUFFile(path: Fixture.path("gguf/tiny_llama.gguf")))
        let ref = try SafeTensorsFile(path: Fixture.path("gguf/tiny_llama.reference.safetensors"))
        #expect(Set(mapping.tensors.map(\.hfName)) == Set(ref.tensors.map(\.name)))
        for t in mapping.tensors {
            let want = try ref.tensor(t.hfName)
            #expect(t.shape == want.shape, "\(t.hfName)")
            #expect(try mapping.floats(t).map(\.bitPattern) == want.floats().map(\.bitPattern), "\(t.hfName)")
        }
        let q = try #require(mapping.tensors.first { $0.hfName == "model.layers.1.self_attn.q_proj.weight" })
        let k = try #require(mapping.tensors.first { $0.hfName == "model.layers.1.self_attn.k_proj.weight" })
        #expect(q.permutedHeads == 4 && k.permutedHeads == 2)
        // The stored rows really are permuted: read without un-permuting, q differs from the reference.
        let stored = try mapping.file.tensor(q.ggufName).floats()
        #expect(stored != (try ref.tensor(q.hfName).floats()))
    }

    @Test("config.json comes from the metadata")
    func config() throws {
        let mapping = try GGUFLlamaMapping(file: GGUFFile(path: Fixture.path("gguf/tiny_llama.gguf")))
        let c = mapping.config
        #expect(c["model_type"] == .string("llama") && c["architectures"] == .strings(["LlamaForCausalLM"]))
        #expect(c["hidden_size"] == .int(32) && c["intermediate_size"] == .int(64) && c["num_hidden_layers"] == .int(2))
        #expect(c["num_attention_heads"] == .int(4) && c["num_key_value_heads"] == .int(2) && c["head_dim"] == .int(8))
        #expect(c["vocab_size"] == .int(16) && c["max_position_embeddings"] == .int(128))
        #expect(c["rms_norm_eps"] == .double(Double(Float(1e-6))) && c["rope_theta"] == .double(10_000))
        #expect(
            c["tie_word_embeddings"] == .bool(false) && c["bos_token_id"] == .int(1) && c["eos_token_id"] == .int(2))
        let json = try JSONSerialization.jsonObject(with: mapping.configJSON(torchDType: "bfloat16")) as? [String: Any]
        #expect(json?["torch_dtype"] as? String == "bfloat16" && json?["hidden_size"] as? Int == 32)
    }

    @Test("Names outside the mapping, missing metadata and other architectures are typed errors")
    func refusals() throws {
        #expect(GGUFLlamaMapping.hfName("blk.2.attn_q.weight", heads: 4, kvHeads: 2, layers: 2) == nil)
        #expect(GGUFLlamaMapping.hfName("blk.01.attn_q.weight", heads: 4, kvHeads: 2, layers: 2) == nil)
        #expect(GGUFLlamaMapping.hfName("blk.1.attn_k.weight", heads: 4, kvHeads: 2, layers: 2)?.1 == 2)
        let path = Fixture.path("gguf/quants.gguf")
        let e = checkpointError { _ = try GGUFLlamaMapping(file: GGUFFile(path: path)) }
        #expect(e?.code == .invalidMetadata && e?.message.contains("'llama.block_count'") == true)
        #expect(e?.message.contains(path) == true)

        // A GGUF of another architecture: header, one string key-value, padding.
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let other = dir.appendingPathComponent("gpt2.gguf")
        try metadataOnlyGGUF(strings: [("general.architecture", "gpt2")]).write(to: other)
        let a = checkpointError { _ = try GGUFLlamaMapping(file: GGUFFile(path: other.path)) }
        #expect(a?.code == .notAModel && a?.message.contains("'gpt2'") == true, "\(a?.message ?? "accepted")")
    }
}

@Suite("GGUF tokenizer files")
struct GGUFTokenizerFilesTests {
    @Test("GPT-2's byte alphabet: 256 distinct characters, printable bytes unchanged, space and newline respelled")
    func alphabet() {
        let a = GGUFTokenizerFiles.byteAlphabet
        #expect(a.count == 256 && Set(a).count == 256)
        #expect(a[Int(UInt8(ascii: "A"))] == "A" && a[32] == "\u{120}" && a[10] == "\u{10A}" && a[173] == "\u{143}")
        #expect(GGUFTokenizerFiles.respell(" hi\n") == "\u{120}hi\u{10A}")
        #expect(GGUFTokenizerFiles.respell("é") == "Ã©")
    }

    @Test("A file without a byte-level BPE vocabulary writes no tokenizer and says why")
    func skipped() throws {
        let h = try GGUFFile(path: Fixture.path("gguf/tiny_llama.gguf")).header
        let r = try GGUFTokenizerFiles.build(h, file: "tiny")
        #expect(r.files.isEmpty && r.skipped?.contains("tokenizer.ggml.model") == true)
    }
}

/// A Qwen2 GGUF seen as Hugging Face tensors, against the weights the fixture script started from
/// (`tiny_qwen2.reference.safetensors`: F32 as drawn, F16 and Q8_0 as `gguf` dequantizes them).
@Suite("GGUF qwen2 mapping")
struct GGUFQwen2MappingTests {
    static let path = Fixture.path("gguf/tiny_qwen2.gguf")

    @Test("Every tensor, biases included, maps to its Hugging Face name and values; no row is permuted")
    func tensors() throws {
        let mapping = try GGUFLlamaMapping(file: GGUFFile(path: Self.path))
        let ref = try SafeTensorsFile(path: Fixture.path("gguf/tiny_qwen2.reference.safetensors"))
        #expect(mapping.architecture == .qwen2)
        #expect(Set(mapping.tensors.map(\.hfName)) == Set(ref.tensors.map(\.name)))
        #expect(mapping.tensors.count == 26 && !mapping.tensors.contains { $0.hfName == "lm_head.weight" })
        for t in mapping.tensors {
            let want = try ref.tensor(t.hfName)
            #expect(t.permutedHeads == nil, "\(t.hfName)")
            #expect(t.shape == want.shape, "\(t.hfName)")
            #expect(try mapping.floats(t).map(\.bitPattern) == want.floats().map(\.bitPattern), "\(t.hfName)")
        }
        let bias = try #require(mapping.tensors.first { $0.hfName == "model.layers.1.self_attn.k_proj.bias" })
        #expect(bias.ggufName == "blk.1.attn_k.bias" && bias.shape == [16])
        let types = Dictionary(uniqueKeysWithValues: mapping.file.tensors.map { ($0.name, $0.type) })
        #expect(types["blk.0.ffn_gate.weight"] == .Q8_0 && types["blk.0.attn_v.weight"] == .F16)
    }

    @Test("config.json is a Qwen2ForCausalLM from the qwen2.* keys, embeddings tied")
    func config() throws {
        let c = try GGUFLlamaMapping(file: GGUFFile(path: Self.path)).config
        #expect(c["model_type"] == .string("qwen2") && c["architectures"] == .strings(["Qwen2ForCausalLM"]))
        #expect(c["hidden_size"] == .int(32) && c["intermediate_size"] == .int(64) && c["num_hidden_layers"] == .int(2))
        #expect(c["num_attention_heads"] == .int(4) && c["num_key_value_heads"] == .int(2))
        #expect(c["vocab_size"] == .int(336) && c["max_position_embeddings"] == .int(256))
        #expect(c["rms_norm_eps"] == .double(Double(Float(1e-6))) && c["rope_theta"] == .double(1_000_000))
        #expect(c["tie_word_embeddings"] == .bool(true) && c["use_sliding_window"] == .bool(false))
        #expect(c["bos_token_id"] == .int(333) && c["eos_token_id"] == .int(335) && c["pad_token_id"] == .int(333))
        // Llama-only keys stay out: Qwen2Config derives head_dim and always has q/k/v biases.
        #expect(c["head_dim"] == nil && c["attention_bias"] == nil && c["mlp_bias"] == nil)
    }

    @Test("The tokenizer splits with Qwen2's regex, ByteLevel, no BOS, control tokens special")
    func tokenizer() throws {
        let h = try GGUFFile(path: Self.path).header
        let files = try GGUFTokenizerFiles.build(h, file: Self.path).files
        let tokenizerData = try #require(files["tokenizer.json"])
        let configData = try #require(files["tokenizer_config.json"])
        let json = try #require(try JSONSerialization.jsonObject(with: tokenizerData) as? [String: Any])
        let pre = try #require(json["pre_tokenizer"] as? [String: Any])
        let steps = try #require(pre["pretokenizers"] as? [[String: Any]])
        let pattern = (steps.first?["pattern"] as? [String: Any])?["Regex"] as? String
        #expect(pattern == GGUFTokenizerFiles.qwen2Split && pattern != GGUFTokenizerFiles.llama3Split)
        #expect(pattern?.contains(#"\p{N}|"#) == true && steps.last?["type"] as? String == "ByteLevel")
        let post = try #require(json["post_processor"] as? [String: Any])
        #expect((post["single"] as? [Any])?.count == 1 && (post["special_tokens"] as? [String: Any])?.isEmpty == true)
        let added = try #require(json["added_tokens"] as? [[String: Any]])
        #expect(added.map { $0["content"] as? String } == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        #expect(added.allSatisfy { $0["special"] as? Bool == true })
        let config = try #require(try JSONSerialization.jsonObject(with: configData) as? [String: Any])
        #expect(config["add_bos_token"] as? Bool == false && config["eos_token"] as? String == "<|im_end|>")
        #expect(config["model_max_length"] as? Int == 256)
    }

    @Test("Biases are llama-only refusals, qwen2 names; a missing bias is a typed error naming the tensor")
    func refusals() throws {
        #expect(GGUFLlamaMapping.hfName("blk.0.attn_q.bias", heads: 4, kvHeads: 2, layers: 2) == nil)
        let q = GGUFLlamaMapping.hfName("blk.0.attn_q.weight", heads: 4, kvHeads: 2, layers: 2, architecture: .qwen2)
        #expect(q?.0 == "model.layers.0.self_attn.q_proj.weight" && q?.1 == nil)
        let b = GGUFLlamaMapping.hfName("blk.1.attn_v.bias", heads: 4, kvHeads: 2, layers: 2, architecture: .qwen2)
        #expect(b?.0 == "model.layers.1.self_attn.v_proj.bias")
        #expect(
            GGUFLlamaMapping.hfName("blk.0.attn_output.bias", heads: 4, kvHeads: 2, layers: 2, architecture: .qwen2)
                == nil)

        // The fixture with blk.1.attn_v.bias renamed (same length, so the layout still holds).
        var bytes = try Data(contentsOf: URL(fileURLWithPath: Self.path))
        let range = try #require(bytes.range(of: Data("blk.1.attn_v.bias".utf8)))
        bytes.replaceSubrange(range, with: Data("blk.1.attn_v.bixs".utf8))
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let renamed = dir.appendingPathComponent("no_bias.gguf")
        try bytes.write(to: renamed)
        let e = checkpointError { _ = try GGUFLlamaMapping(file: GGUFFile(path: renamed.path)) }
        #expect(e?.code == .invalidEntry && e?.message.contains("'blk.1.attn_v.bias'") == true)
        #expect(e?.message.contains(renamed.path) == true, "\(e?.message ?? "accepted")")
    }
}

/// SentencePiece vocabularies (`tokenizer.ggml.model = llama`), against transformers' rules worked by hand and the
/// fixture `tiny_llama_spm.gguf` (interop/test_gguf.py compares the whole tokenizer with transformers').
@Suite("GGUF SentencePiece tokenizer")
struct GGUFSentencePieceTests {
    static let path = Fixture.path("gguf/tiny_llama_spm.gguf")

    @Test("Merges derived from scores: higher score first, then longer left and right pieces, ties in vocabulary order")
    func derivedMerges() {
        // "abc" (score -1) splits as a+bc and ab+c (ordered by the pieces' ids: a=0 < ab=3); "ab" and "bc" share
        // score -2 and keep vocabulary order; "ca" has no split in the vocabulary beyond c+a, scored -3.
        let tokens = ["a", "b", "c", "ab", "bc", "abc", "ca"]
        let scores: [Float] = [0, 0, 0, -2, -2, -1, -3]
        let vocab = Dictionary(uniqueKeysWithValues: tokens.enumerated().map { ($1, $0) })
        let merges = GGUFTokenizerFiles.derivedMerges(tokens: tokens, scores: scores, vocab: vocab)
        // Same score -1: left length 2 (ab+c) before left length 1 (a+bc).
        #expect(merges == [["ab", "c"], ["a", "bc"], ["a", "b"], ["b", "c"], ["c", "a"]])
        // Lengths count code points: "é" (one scalar) + "x" ranks with other one-scalar lefts.
        let accented = ["é", "x", "éx", "xé"]
        let v2 = Dictionary(uniqueKeysWithValues: accented.enumerated().map { ($1, $0) })
        #expect(
            GGUFTokenizerFiles.derivedMerges(tokens: accented, scores: [0, 0, -1, -1], vocab: v2) == [
                ["é", "x"], ["x", "é"],
            ])
    }

    @Test("The fixture's tokenizer: BPE with byte fallback, Metaspace on the first word, BOS, specials by id")
    func fixture() throws {
        let h = try GGUFFile(path: Self.path).header
        let built = try GGUFTokenizerFiles.build(h, file: Self.path)
        #expect(built.skipped == nil)
        let tokenizerData = try #require(built.files["tokenizer.json"])
        let configData = try #require(built.files["tokenizer_config.json"])
        let json = try #require(try JSONSerialization.jsonObject(with: tokenizerData) as? [String: Any])
        let model = try #require(json["model"] as? [String: Any])
        #expect(model["byte_fallback"] as? Bool == true && model["fuse_unk"] as? Bool == true)
        let vocab = try #require(model["vocab"] as? [String: Int])
        #expect(vocab["<0x41>"] == 3 + 0x41 && vocab["<unk>"] == 0 && vocab.count == 440)
        let merges = try #require(model["merges"] as? [[String]])
        // Every merge joins two vocabulary pieces into a vocabulary token (none is in the file).
        #expect(merges.count > 100 && merges.allSatisfy { $0.count == 2 && vocab[$0[0] + $0[1]] != nil })
        let pre = try #require(json["pre_tokenizer"] as? [String: Any])
        #expect(pre["type"] as? String == "Metaspace" && pre["prepend_scheme"] as? String == "first")
        let added = try #require(json["added_tokens"] as? [[String: Any]])
        #expect(added.map { $0["id"] as? Int } == [0, 1, 2, 438, 439])
        #expect(added.map { $0["special"] as? Bool } == [true, true, true, true, false])
        let post = try #require(json["post_processor"] as? [String: Any])
        let single = try #require(post["single"] as? [[String: Any]])
        #expect(single.count == 2 && (single[0]["SpecialToken"] as? [String: Any])?["id"] as? String == "<s>")
        let config = try #require(try JSONSerialization.jsonObject(with: configData) as? [String: Any])
        #expect(config["add_bos_token"] as? Bool == true && config["unk_token"] as? String == "<unk>")
    }
}

extension GGUFSentencePieceTests {
    @Test("Vocabularies it cannot rebuild faithfully are typed errors naming the key or the tokens")
    func refusals() throws {
        func header(_ tokens: [String]) throws -> GGUFHeader {
            let data = metadataOnlyGGUF(
                strings: [("general.architecture", "llama"), ("tokenizer.ggml.model", "llama")],
                stringArrays: [("tokenizer.ggml.tokens", tokens)])
            return try data.withUnsafeBytes { try GGUFHeader.parse($0, file: "v.gguf") }
        }
        // No merges and no scores to derive them from.
        let noScores = checkpointError { _ = try GGUFTokenizerFiles.build(header(["a", "b", "ab"]), file: "v.gguf") }
        #expect(noScores?.code == .invalidMetadata && noScores?.message.contains("'tokenizer.ggml.scores'") == true)
        // "é" precomposed and decomposed: one text to Swift, two tokens to transformers.
        let forms = checkpointError {
            _ = try GGUFTokenizerFiles.build(header(["\u{E9}", "e\u{301}"]), file: "v.gguf")
        }
        #expect(forms?.code == .invalidMetadata && forms?.message.contains("tokens 0 and 1") == true)
        // Another kind of vocabulary writes nothing and says why.
        let t5 = try metadataOnlyGGUF(strings: [("tokenizer.ggml.model", "t5")]).withUnsafeBytes {
            try GGUFHeader.parse($0, file: "t5.gguf")
        }
        #expect(try GGUFTokenizerFiles.build(t5, file: "t5.gguf").skipped?.contains("'t5'") == true)
    }
}

/// Rope scaling from metadata (`linear`) and from Llama 3's `rope_freqs.weight` divisors.
@Suite("GGUF rope scaling")
struct GGUFRopeScalingTests {
    @Test("Llama 3.2's divisors (head 64, theta 500000, factor 32) read back as its rope_scaling")
    func llama3() throws {
        let want = GGUFRopeScaling.llama3Divisors(
            theta: 500_000, headDim: 64, factor: 32, low: 1, high: 4, original: 8192)
        #expect(want.first == 1 && want.last == 32 && want.contains { $0 > 1 && $0 < 32 })
        let s = try GGUFRopeScaling.fromFrequencyDivisors(
            want.map { Float($0) }, theta: 500_000, headDim: 64, path: "f")
        #expect(s?["rope_type"] == .string("llama3") && s?["factor"] == .double(32))
        #expect(s?["original_max_position_embeddings"] == .int(8192) && s?["high_freq_factor"] == .double(4))
        #expect(try GGUFRopeScaling.fromFrequencyDivisors([1, 1, 1, 1], theta: 10_000, headDim: 8, path: "f") == nil)
        // Divisors that Llama 3's rule does not give, or of the wrong count, are refused by name.
        var off = want.map { Float($0) }
        off[want.firstIndex { $0 > 1 && $0 < 32 } ?? 0] *= 1.01
        let e = checkpointError {
            _ = try GGUFRopeScaling.fromFrequencyDivisors(off, theta: 500_000, headDim: 64, path: "f")
        }
        #expect(e?.code == .invalidMetadata && e?.message.contains("'rope_freqs.weight'") == true)
        let n = checkpointError {
            _ = try GGUFRopeScaling.fromFrequencyDivisors([1, 2], theta: 500_000, headDim: 64, path: "f")
        }
        #expect(n?.code == .invalidShape && n?.message.contains("expected 32") == true)
    }

    @Test("The fixtures: rope_freqs.weight becomes llama3 rope_scaling and no tensor; linear scaling its factor")
    func fixtures() throws {
        let m = try GGUFLlamaMapping(file: GGUFFile(path: Fixture.path("gguf/tiny_llama3_rope.gguf")))
        guard case .object(let s)? = m.config["rope_scaling"] else {
            Issue.record("no rope_scaling")
            return
        }
        #expect(s["rope_type"] == .string("llama3") && s["factor"] == .double(32))
        #expect(!m.tensors.contains { $0.ggufName == "rope_freqs.weight" } && m.tensors.count == 12)
        let spm = try GGUFLlamaMapping(file: GGUFFile(path: Fixture.path("gguf/tiny_llama_spm.gguf")))
        #expect(spm.config["rope_scaling"] == .object(["rope_type": .string("linear"), "factor": .double(4)]))
        #expect(
            try GGUFLlamaMapping(file: GGUFFile(path: Fixture.path("gguf/tiny_llama.gguf"))).config["rope_scaling"]
                == nil)
    }

    @Test("Other scaling types are refused, naming the key and the type")
    func refusals() throws {
        let u32: [(String, UInt32)] = [
            ("llama.block_count", 1), ("llama.embedding_length", 8), ("llama.attention.head_count", 2),
            ("llama.feed_forward_length", 16),
        ]
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("yarn.gguf")
        try metadataOnlyGGUF(
            strings: [("general.architecture", "llama"), ("llama.rope.scaling.type", "yarn")], u32: u32
        ).write(to: file)
        let e = checkpointError { _ = try GGUFLlamaMapping(file: GGUFFile(path: file.path)) }
        #expect(e?.code == .invalidMetadata, "\(e?.message ?? "accepted")")
        #expect(e?.message.contains("'llama.rope.scaling.type' is 'yarn'") == true)
    }
}

/// A GGUF v3 file of string, u32 and string-array key-values only (no tensors), as llama.cpp lays one out.
func metadataOnlyGGUF(
    strings: [(String, String)], u32: [(String, UInt32)] = [], stringArrays: [(String, [String])] = []
) -> Data {
    func string(_ s: String) -> [UInt8] {
        withUnsafeBytes(of: UInt64(s.utf8.count).littleEndian, Array.init) + Array(s.utf8)
    }
    func le(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    var bytes = Array("GGUF".utf8) + le(3)
    bytes += withUnsafeBytes(of: UInt64(0), Array.init)
    bytes += withUnsafeBytes(of: UInt64(u32.count + strings.count + stringArrays.count).littleEndian, Array.init)
    for (k, v) in strings { bytes += string(k) + le(8) + string(v) }
    for (k, values) in stringArrays {
        bytes += string(k) + le(9) + le(8) + withUnsafeBytes(of: UInt64(values.count).littleEndian, Array.init)
        for v in values { bytes += string(v) }
    }
    for (k, v) in u32 { bytes += string(k) + le(4) + withUnsafeBytes(of: v.littleEndian, Array.init) }
    bytes += [UInt8](repeating: 0, count: (32 - bytes.count % 32) % 32)
    return Data(bytes)
}
