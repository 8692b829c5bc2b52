import Foundation
import Testing

@testable import CheckpointIO

/// Checkpoints written by Python (`safetensors`, `transformers.save_pretrained`) read back with the values torch
/// reports (`scripts/fixtures/io_models.py` stores a hash of every tensor's float32 values and samples).
@Suite("Reading checkpoints written by Python")
struct ReaderFixtureTests {
    nonisolated(unsafe) static let references: [String: [String: [String: Any]]] = {
        guard let r = try? Fixture.json("models/references.json") as? [String: [String: [String: Any]]] else {
            fatalError("models/references.json is missing or malformed")
        }
        return r
    }()

    /// Checks every tensor of a file against the reference: dtype, shape, hash of all float values, samples.
    func checkFile(_ relative: String, in model: ModelFolder) throws {
        let refs = try #require(Self.references[relative], "no references for \(relative)")
        let file = try #require(model.files.first { $0.path.hasSuffix(relative) })
        #expect(Set(file.tensors.map(\.name)) == Set(refs.keys))
        let torchNames: [DType: String] = [
            .F32: "float32", .F16: "float16", .BF16: "bfloat16", .F64: "float64", .I32: "int32", .U8: "uint8",
            .BOOL: "bool",
        ]
        for t in file.tensors {
            let ref = try #require(refs[t.name])
            #expect(torchNames[t.dtype] == ref["dtype"] as? String, "\(t.name)")
            #expect(t.shape == ref["shape"] as? [Int], "\(t.name)")
            guard let hash = ref["fnv1a64_f32"] as? String else { continue }
            let values = try model.tensor(t.name).floats()
            #expect(values.count == t.elementCount)
            #expect(String(fnv1a64(values), radix: 16).leftPadded(16) == hash, "\(relative): \(t.name)")
            for case let pair as [Int] in ref["samples"] as? [Any] ?? [] {
                #expect(values[pair[0]].bitPattern == UInt32(pair[1]), "\(t.name)[\(pair[0])]")
            }
        }
    }

    @Test("A safetensors file of mixed dtypes, a scalar and a zero-size tensor reads with torch's values")
    func mixedFile() throws {
        let model = try ModelFolder(path: Fixture.path("models/mixed.safetensors"))
        try checkFile("mixed.safetensors", in: model)
        #expect(model.files[0].metadata == ["format": "pt", "source": "io_models.py"])
        let scalar = try model.tensor("f32.scalar")
        let scalarValues = try scalar.floats()
        #expect(scalar.shape == [] && scalarValues == [2.5])
        #expect(try model.tensor("f16.empty").floats().isEmpty)
        let specials = try model.tensor("f32.specials").floats()
        #expect(specials[0] == .infinity && specials[1] == -.infinity && specials[2].isNaN)
        #expect(specials[3].sign == .minus && specials[3] == 0)
        // Integer tensors are readable as bytes but not as floats.
        let ids = try model.tensor("i32.ids")
        #expect(ids.bytes.count == 24 && ids.bytes.loadUnaligned(fromByteOffset: 20, as: Int32.self) == 5)
        let error = checkpointError { _ = try ids.floats() }
        #expect(error?.code == .unsupportedDType)
        #expect(error?.message.contains("i32.ids") == true)
        #expect(error?.message.contains("mixed.safetensors") == true)
    }

    @Test("transformers BertModel saved as F32 and F16 reads tensor for tensor")
    func bert() throws {
        for variant in ["bert-f32", "bert-f16"] {
            let model = try ModelFolder(path: Fixture.path("models/\(variant)"))
            #expect(model.files.count == 1)
            #expect(model.tensorNames.contains("embeddings.word_embeddings.weight"))
            try checkFile("\(variant)/model.safetensors", in: model)
            let config = try #require(try model.config())
            #expect(config["hidden_size"] as? Int == 16)
            #expect(model.supportFiles.map(\.lastPathComponent) == ["config.json"])
        }
        // The F16 copy holds the F32 weights rounded to nearest even.
        let f32 = try ModelFolder(path: Fixture.path("models/bert-f32"))
        let f16 = try ModelFolder(path: Fixture.path("models/bert-f16"))
        for name in f32.tensorNames {
            let a = try f32.tensor(name).floats()
            let b = try f16.tensor(name).floats()
            #expect(a.map { DTypeConversion.floatFromHalfBits(DTypeConversion.halfBits($0)) } == b, "\(name)")
        }
    }

    @Test("A sharded LlamaForCausalLM in BF16 opens as one model through its index")
    func shardedLlama() throws {
        let model = try ModelFolder(path: Fixture.path("models/llama-bf16-sharded"))
        #expect(model.files.count == 6)
        let index = try #require(
            Fixture.json("models/llama-bf16-sharded/model.safetensors.index.json") as? [String: Any])
        let weightMap = try #require(index["weight_map"] as? [String: String])
        #expect(Set(model.tensorNames) == Set(weightMap.keys))
        #expect(model.tensorNames.count == weightMap.count)
        for (name, shard) in weightMap {
            let view = try model.tensor(name)
            #expect(view.file.hasSuffix(shard), "\(name)")
            #expect(view.dtype == .BF16)
        }
        for file in model.files {
            try checkFile("llama-bf16-sharded/" + URL(fileURLWithPath: file.path).lastPathComponent, in: model)
        }
        #expect(model.parameterCount == model.tensorInfos.reduce(0) { $0 + $1.elementCount })
        #expect(model.totalBytes == 2 * model.parameterCount)
        #expect(Set(model.supportFiles.map(\.lastPathComponent)) == ["config.json", "generation_config.json"])
    }

    @Test("Opening a model reads no tensor data and views share the mapping")
    func lazyViews() throws {
        let file = try SafeTensorsFile(path: Fixture.path("models/bert-f32/model.safetensors"))
        let name = try #require(file.tensors.last?.name)
        let view = try file.tensor(name)
        #expect(view.mapping === file.mapping)
        #expect(view.fileRange.upperBound == file.mapping.size)
        var copy = [Float](repeating: .nan, count: view.elementCount)
        try copy.withUnsafeMutableBufferPointer { try view.copyFloats(into: $0) }
        #expect(copy == (try view.floats()))
        view.release()
        #expect(copy == (try view.floats()), "released pages read back from the page cache")
        let missing = checkpointError { _ = try file.tensor("nope") }
        #expect(missing?.code == .tensorNotFound)
        #expect(missing?.message.contains("nope") == true)
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
