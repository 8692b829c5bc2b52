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
        func string(_ s: String) -> [UInt8] {
            withUnsafeBytes(of: UInt64(s.utf8.count).littleEndian, Array.init) + Array(s.utf8)
        }
        var bytes = Array("GGUF".utf8) + withUnsafeBytes(of: UInt32(3).littleEndian, Array.init)
        bytes += withUnsafeBytes(of: UInt64(0), Array.init) + withUnsafeBytes(of: UInt64(1).littleEndian, Array.init)
        bytes +=
            string("general.architecture") + withUnsafeBytes(of: UInt32(8).littleEndian, Array.init) + string("gpt2")
        bytes += [UInt8](repeating: 0, count: (32 - bytes.count % 32) % 32)
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let other = dir.appendingPathComponent("gpt2.gguf")
        try Data(bytes).write(to: other)
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
