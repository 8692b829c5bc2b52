import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

/// The PEFT adapter folder's file format: `LoRAAdapterFolder.Writer` writes it atomically, `LoRAAdapterFolder`
/// reads it back. Scalings are PEFT's (lora_alpha / r, per-module `alpha_pattern`), worked out by hand here; the
/// PEFT-made fixtures and the merge math are checked in TaskSwitchesTests (`LoRAPackTests`) and MergeEngineTests.
@Suite("LoRA adapter folders")
struct LoRAAdapterFolderTests {
    static let p = LoRAAdapterFolder.prefix

    /// A linear LoRA on `l` (r = 2), an embedding LoRA on `emb` (r = 2, alpha 2 by `alpha_pattern`) and `lm_head`
    /// from `modules_to_save`.
    static let specs = [
        TensorSpec(name: p + "l.lora_A.weight", dtype: .F32, shape: [2, 3]),
        TensorSpec(name: p + "l.lora_B.weight", dtype: .F32, shape: [4, 2]),
        TensorSpec(name: p + "emb.lora_embedding_A", dtype: .F32, shape: [2, 5]),
        TensorSpec(name: p + "emb.lora_embedding_B", dtype: .F32, shape: [6, 2]),
        TensorSpec(name: p + "lm_head.weight", dtype: .F32, shape: [4, 3]),
    ]

    static func values(_ spec: TensorSpec) -> [Float] {
        (0..<spec.shape.reduce(1, *)).map { Float($0) * 0.25 - Float(spec.name.count) }
    }

    static func config(_ object: [String: Any]) throws -> Data {
        try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    }

    static var loraConfig: [String: Any] {
        [
            "peft_type": "LORA", "r": 2, "lora_alpha": 8, "alpha_pattern": ["emb": 2], "use_rslora": false,
        ]
    }

    static func write(_ specs: [TensorSpec], config: [String: Any], to path: String, overwrite: Bool = false) throws {
        let writer = try LoRAAdapterFolder.Writer(
            directory: path, tensors: specs, config: try Self.config(config), overwrite: overwrite)
        for s in specs { try writer.write(s.name, floats: values(s)) }
        try writer.finish()
    }

    func hiddenEntries(_ folder: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasPrefix(".") }
    }

    @Test("a written adapter folder reads back: its files, config, per-module scaling, update kinds, shapes, values")
    func roundTrip() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("adapter").path
        try Self.write(Self.specs, config: Self.loraConfig, to: path)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: path).sorted() == [
                "adapter_config.json", "adapter_model.safetensors",
            ])
        #expect(hiddenEntries(dir).isEmpty, "no temporary folder left")
        #expect(LoRAAdapterFolder.isAdapterFolder(path))
        #expect(!LoRAAdapterFolder.isAdapterFolder(dir.path))

        let adapter = try LoRAAdapterFolder(path: path)
        #expect(adapter.rank == 2 && adapter.alpha == 8 && !adapter.useRSLoRA && !adapter.fanInFanOut)
        #expect(adapter.updates.count == 3)
        #expect(
            adapter.updates["l.weight"]
                == .lowRank(
                    a: Self.p + "l.lora_A.weight", b: Self.p + "l.lora_B.weight", scaling: 4, transposed: false,
                    embedding: false))
        #expect(
            adapter.updates["emb.weight"]
                == .lowRank(
                    a: Self.p + "emb.lora_embedding_A", b: Self.p + "emb.lora_embedding_B", scaling: 1,
                    transposed: true, embedding: true))
        #expect(adapter.updates["lm_head.weight"] == .replacement(key: Self.p + "lm_head.weight"))
        let shapes = try ["l.weight", "emb.weight", "lm_head.weight"].map { name in
            try adapter.shape(of: try #require(adapter.updates[name]))
        }
        #expect(shapes == [[4, 3], [5, 6], [4, 3]])
        for s in Self.specs {
            #expect(try adapter.file.tensor(s.name).floats() == Self.values(s), "\(s.name)")
        }
    }

    @Test("an abandoned or unfinished adapter writer leaves nothing at the target; replacing one needs overwrite")
    func atomicFolder() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("adapter")
        do {
            let w = try LoRAAdapterFolder.Writer(
                directory: target.path, tensors: Self.specs, config: try Self.config(Self.loraConfig))
            try w.write(Self.specs[0].name, floats: Self.values(Self.specs[0]))
            #expect(hiddenEntries(dir).count == 1, "data goes to a hidden temporary folder")
        }
        #expect(!FileManager.default.fileExists(atPath: target.path))
        #expect(hiddenEntries(dir).isEmpty, "temporary folder removed")

        do {
            let w = try LoRAAdapterFolder.Writer(
                directory: target.path, tensors: Self.specs, config: try Self.config(Self.loraConfig))
            try w.write(Self.specs[0].name, floats: Self.values(Self.specs[0]))
            let early = checkpointError { try w.finish() }
            #expect(early?.code == .writeOrder)
            #expect(early?.message.contains(Self.specs[1].name) == true)
        }
        #expect(!FileManager.default.fileExists(atPath: target.path))
        #expect(hiddenEntries(dir).isEmpty)

        try Self.write(Self.specs, config: Self.loraConfig, to: target.path)
        let exists = checkpointError {
            _ = try LoRAAdapterFolder.Writer(directory: target.path, tensors: Self.specs, config: Data())
        }
        #expect(exists?.code == .outputExists)
        #expect(exists?.message.contains(target.path) == true)

        var config = Self.loraConfig
        config["r"] = 1
        config["lora_alpha"] = 3
        try Self.write(Array(Self.specs.prefix(2)), config: config, to: target.path, overwrite: true)
        let replaced = try LoRAAdapterFolder(path: target.path)
        #expect(replaced.rank == 1 && Set(replaced.updates.keys) == ["l.weight"])
        if case .lowRank(_, _, let scaling, _, _) = replaced.updates["l.weight"] {
            #expect(scaling == 3)
        } else {
            Issue.record("l.weight is not a low-rank update")
        }
        #expect(hiddenEntries(dir).isEmpty, "the replaced folder is removed")
    }

    @Test("rsLoRA scales by lora_alpha / sqrt(r); fan_in_fan_out transposes linear updates")
    func scalingVariants() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("adapter").path
        let config: [String: Any] = [
            "peft_type": "LORA", "r": 4, "lora_alpha": 6, "use_rslora": true, "fan_in_fan_out": true,
        ]
        let specs = [
            TensorSpec(name: Self.p + "l.lora_A.weight", dtype: .F32, shape: [4, 3]),
            TensorSpec(name: Self.p + "l.lora_B.weight", dtype: .F32, shape: [2, 4]),
        ]
        try Self.write(specs, config: config, to: path)
        let adapter = try LoRAAdapterFolder(path: path)
        #expect(adapter.useRSLoRA && adapter.fanInFanOut)
        let update = try #require(adapter.updates["l.weight"])
        #expect(update == .lowRank(a: specs[0].name, b: specs[1].name, scaling: 3, transposed: true, embedding: false))
        #expect(try adapter.shape(of: update) == [3, 2])
    }

    @Test(
        "malformed adapter folders are refused naming the file and field",
        arguments: [
            (#"{"peft_type": "IA3", "r": 2, "lora_alpha": 8}"#, false, "peft_type is IA3"),
            (#"{"peft_type": "LORA", "lora_alpha": 8}"#, false, "a positive integer 'r'"),
            (#"{"peft_type": "LORA", "r": 0, "lora_alpha": 8}"#, false, "a positive integer 'r'"),
            (#"{"peft_type": "LORA", "r": 2, "lora_alpha": 8, "use_dora": true}"#, false, "use_dora is true"),
            (#"{"peft_type": "LORA", "r": 2, "lora_alpha": 8}"#, true, "does not start with 'base_model.model.'"),
        ])
    func malformed(config: String, unprefixed: Bool, expected: String) throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("adapter").path
        var specs = Array(Self.specs.prefix(2))
        if unprefixed { specs.append(TensorSpec(name: "l.bias", dtype: .F32, shape: [4])) }
        let writer = try LoRAAdapterFolder.Writer(directory: path, tensors: specs, config: Data(config.utf8))
        for s in specs { try writer.write(s.name, floats: Self.values(s)) }
        try writer.finish()
        let error = checkpointError { _ = try LoRAAdapterFolder(path: path) }
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
        let file = unprefixed ? LoRAAdapterFolder.weightsName : LoRAAdapterFolder.configName
        #expect(error?.message.contains(path + "/" + file) == true, "\(error?.message ?? "no error")")
    }

    @Test("a folder without adapter_config.json, or with a config that is not JSON, names the folder or file")
    func missingOrBrokenConfig() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = checkpointError { _ = try LoRAAdapterFolder(path: dir.path) }
        #expect(missing?.code == .notAModel)
        #expect(missing?.message.contains("\(dir.path): expected a PEFT adapter folder") == true)

        let configPath = dir.appendingPathComponent(LoRAAdapterFolder.configName).path
        try Data("[1, 2".utf8).write(to: URL(fileURLWithPath: configPath))
        let broken = checkpointError { _ = try LoRAAdapterFolder(path: dir.path) }
        #expect(broken?.code == .invalidJSON)
        #expect(broken?.message.contains(configPath) == true)
    }
}
