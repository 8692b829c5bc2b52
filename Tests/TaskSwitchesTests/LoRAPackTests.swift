import CheckpointIO
import Foundation
import TensorKernels
import TestSupport
import Testing

@testable import TaskSwitches

/// Packs from PEFT LoRA adapters, against PEFT's own merge (fixtures: scripts/fixtures/lora_fixtures.py, a tiny
/// Llama with an r = 4 adapter on q/v/down projections and the embedding plus lm_head in modules_to_save, and an
/// r = 8 rsLoRA adapter on every linear layer).
@Suite("Switch packs from LoRA adapters")
struct LoRAPackTests {
    static func lora(_ name: String) -> String { Fixture.url("lora/\(name)").path }

    /// The base of a fixture variant: the BF16 adapter was made on the BF16 base.
    static func base(_ variant: String) throws -> ModelFolder {
        try ModelFolder(path: lora(variant == "-bf16" ? "base-bf16" : "base"))
    }

    @Test(
        "merging an adapter reproduces PEFT's merge_and_unload weights bit for bit (F32 and BF16 bases)",
        arguments: ["", "-rslora", "-bf16"])
    func mergedWeightsEqualPEFT(variant: String) throws {
        let base = try Self.base(variant)
        let peft = try ModelFolder(path: Self.lora("merged" + variant))
        let adapter = try LoRAAdapterFolder(path: Self.lora("adapter" + variant))
        try adapter.check(against: base)
        #expect(!adapter.updates.isEmpty)
        var changed = 0
        for info in base.tensorInfos {
            let w = try base.tensor(info.name).floats()
            let ours = try adapter.merged(info.name, base: w, dtype: info.dtype) ?? w
            let theirs = try peft.tensor(info.name).floats()
            #expect(ours.map(\.bitPattern) == theirs.map(\.bitPattern), "\(info.name) differs from PEFT's merge")
            if ours != w { changed += 1 }
        }
        #expect(changed == adapter.updates.count, "every update changes its tensor")
    }

    @Test(
        "a pack from base + adapter equals the pack of PEFT's merged model: masks, signs and λ bit for bit",
        arguments: ["", "-rslora", "-bf16"], [0.0, 0.5, 0.9])
    func packEqualsMergedPack(variant: String, drop: Double) throws {
        let base = try Self.base(variant)
        let fromAdapter = try SwitchPack.build(
            base: base, adapter: LoRAAdapterFolder(path: Self.lora("adapter" + variant)), dropRatio: drop, task: "t")
        let fromMerged = try SwitchPack.build(
            base: base, fineTuned: ModelFolder(path: Self.lora("merged" + variant)), dropRatio: drop, task: "t")
        #expect(fromAdapter.tensors.count == fromMerged.tensors.count)
        #expect(fromAdapter.keptCount > 0)
        for (a, m) in zip(fromAdapter.tensors, fromMerged.tensors) {
            #expect(a.name == m.name)
            #expect(a.positive == m.positive && a.negative == m.negative, "\(a.name): mask or signs differ")
            #expect(a.lambda.bitPattern == m.lambda.bitPattern, "\(a.name): λ \(a.lambda) vs \(m.lambda)")
        }
        // The packs also encode to the same bytes.
        #expect(PackFile.encode(fromAdapter) == PackFile.encode(fromMerged))
    }

    @Test("tensors the adapter leaves alone get no switch; lm_head from modules_to_save is packed")
    func untouchedTensorsHaveNoSwitch() throws {
        let base = try ModelFolder(path: Self.lora("base"))
        let adapter = try LoRAAdapterFolder(path: Self.lora("adapter"))
        let pack = try SwitchPack.build(base: base, adapter: adapter, dropRatio: 0.5, task: "t")
        let names = Set(pack.tensors.map(\.name))
        #expect(names.contains("lm_head.weight"))
        #expect(names.contains("model.embed_tokens.weight"))
        #expect(names.contains("model.layers.0.self_attn.q_proj.weight"))
        #expect(!names.contains("model.layers.0.self_attn.k_proj.weight"))
        #expect(!names.contains { $0.contains("norm") })
        #expect(names.isSubset(of: Set(adapter.updates.keys)))
    }

    @Test("an adapter whose B factors are zero is refused as an empty task vector; one zero module is skipped")
    func zeroUpdates() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = dir.appendingPathComponent("base")
        try writeModel(
            base,
            [("l.0.w.weight", [3, 4], (0..<12).map { Float($0) * 0.1 }), ("l.1.w.weight", [2, 2], [1, 2, 3, 4])])
        let a0: [Float] = (0..<8).map { Float($0) * 0.25 - 1 }
        let zero = try writeAdapter(
            dir.appendingPathComponent("zero"),
            [("l.0.w", a0, [2, 4], [Float](repeating: 0, count: 6), [3, 2])])
        #expect(throws: SwitchError.self) {
            do {
                _ = try SwitchPack.build(base: ModelFolder(path: base.path), adapter: zero, dropRatio: 0.5, task: "z")
            } catch let e as SwitchError {
                #expect(e.code == .emptyTaskVector)
                #expect(e.message.contains(zero.path))
                throw e
            }
        }
        let mixed = try writeAdapter(
            dir.appendingPathComponent("mixed"),
            [
                ("l.0.w", a0, [2, 4], [Float](repeating: 0, count: 6), [3, 2]),
                ("l.1.w", [1, 2], [1, 2], [0.5, -0.25], [2, 1]),
            ])
        let pack = try SwitchPack.build(base: ModelFolder(path: base.path), adapter: mixed, dropRatio: 0, task: "m")
        #expect(pack.tensors.map(\.name) == ["l.1.w.weight"])
    }

    @Test("scaling is lora_alpha / r, or / sqrt(r) with rsLoRA; fan_in_fan_out transposes B·A")
    func scalingAndTranspose() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let A: [Float] = [1, 2, 3, 4, 5, 6]  // r = 2 × in = 3
        let B: [Float] = [0.5, -1, 2, 0.25]  // out = 2 × r = 2
        // B·A = [[0.5-4, 1-5, 1.5-6], [2+1, 4+1.25, 6+1.5]]
        let product: [Float] = [-3.5, -4, -4.5, 3, 5.25, 7.5]
        for (rs, fanInFanOut) in [(false, false), (true, false), (false, true)] {
            let adapter = try writeAdapter(
                dir.appendingPathComponent("a-\(rs)-\(fanInFanOut)"), [("m", A, [2, 3], B, [2, 2])], alpha: 6,
                rslora: rs, fanInFanOut: fanInFanOut)
            let s: Float = rs ? Float(6 / 2.0.squareRoot()) : 3
            let shape = fanInFanOut ? [3, 2] : [2, 3]
            let expected = fanInFanOut ? [0, 3, 1, 4, 2, 5].map { product[$0] * s } : product.map { $0 * s }
            let zeros = [Float](repeating: 0, count: 6)
            let got = try #require(try adapter.merged("m.weight", base: zeros, dtype: .F32))
            #expect(got == expected, "rslora \(rs), fan_in_fan_out \(fanInFanOut)")
            #expect(try adapter.shape(of: #require(adapter.updates["m.weight"])) == shape)
        }
    }

    @Test("an adapter targeting a missing tensor or another shape is refused naming the adapter and tensor")
    func wrongBase() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = dir.appendingPathComponent("base")
        try writeModel(base, [("m.weight", [2, 3], [Float](repeating: 1, count: 6))])
        let missing = try writeAdapter(
            dir.appendingPathComponent("missing"), [("x", [1, 1, 1], [1, 3], [1, 1], [2, 1])])
        let shape = try writeAdapter(dir.appendingPathComponent("shape"), [("m", [1, 1], [1, 2], [1, 1], [2, 1])])
        for (adapter, code) in [(missing, SwitchError.Code.missingTensor), (shape, .shapeMismatch)] {
            do {
                _ = try SwitchPack.build(
                    base: ModelFolder(path: base.path), adapter: adapter, dropRatio: 0.5, task: "t")
                Issue.record("expected \(code)")
            } catch let e as SwitchError {
                #expect(e.code == code)
                #expect(
                    e.message.contains(adapter.path)
                        && e.message.contains(code == .missingTensor ? "x.weight" : "m.weight"))
            }
        }
    }

    @Test("malformed adapter folders are refused: no weights file, DoRA, A and B of different rank")
    func malformedAdapters() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let noWeights = dir.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: noWeights, withIntermediateDirectories: true)
        try Data(#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#.utf8)
            .write(to: noWeights.appendingPathComponent("adapter_config.json"))
        #expect(LoRAAdapterFolder.isAdapterFolder(noWeights.path))
        #expect(throws: CheckpointError.self) { _ = try LoRAAdapterFolder(path: noWeights.path) }
        let dora = try writeAdapter(dir.appendingPathComponent("dora"), [("m", [1, 1], [1, 2], [1, 1], [2, 1])]).path
        try Data(#"{"peft_type": "LORA", "r": 1, "lora_alpha": 1, "use_dora": true}"#.utf8)
            .write(to: URL(fileURLWithPath: dora).appendingPathComponent("adapter_config.json"))
        #expect(throws: CheckpointError.self) { _ = try LoRAAdapterFolder(path: dora) }
        #expect(throws: CheckpointError.self) {
            _ = try writeAdapter(
                dir.appendingPathComponent("rank"), [("m", [1, 1, 1, 1], [2, 2], [1, 1, 1], [3, 1])])
        }
    }
}

/// Writes a PEFT-style adapter folder: per module (name, A values, A shape [r, in], B values, B shape [out, r]).
@discardableResult
func writeAdapter(
    _ dir: URL, _ modules: [(String, [Float], [Int], [Float], [Int])], alpha: Double = 2, rslora: Bool = false,
    fanInFanOut: Bool = false
) throws -> LoRAAdapterFolder {
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    var specs: [TensorSpec] = []
    var values: [[Float]] = []
    for (name, a, aShape, b, bShape) in modules {
        specs.append(TensorSpec(name: "base_model.model.\(name).lora_A.weight", dtype: .F32, shape: aShape))
        specs.append(TensorSpec(name: "base_model.model.\(name).lora_B.weight", dtype: .F32, shape: bShape))
        values += [a, b]
    }
    let w = try SafeTensorsWriter(path: dir.appendingPathComponent("adapter_model.safetensors").path, tensors: specs)
    for (s, v) in zip(specs, values) { try w.write(s.name, floats: v) }
    try w.finish()
    let r = modules.first?.2.first ?? 1
    let config: [String: Any] = [
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": rslora, "fan_in_fan_out": fanInFanOut,
    ]
    try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("adapter_config.json"))
    return try LoRAAdapterFolder(path: dir.path)
}
