import CheckpointIO
import Foundation
import TensorKernels
import Testing

@testable import MergeEngine

/// `LoRAExtraction` round trip on the PEFT fixture (scripts/fixtures/lora_fixtures.py): the fine-tune is base +
/// the rank-4 adapter merged, so a rank-4 extraction recovers every change (embeddings and lm_head stored whole),
/// and `LoRAAdapterFolder` reads the extracted adapter back to the same merged weights.
@Suite("LoRA extraction", .serialized)
struct LoRAExtractionTests {
    static let folder = Fixtures.directory.appendingPathComponent("lora")

    @Test(
        "A rank-4 extraction of base + rank-4 adapter merges back to the same model",
        arguments: TruncatedSVD.Method.allCases)
    func roundTrip(_ method: TruncatedSVD.Method) throws {
        let base = try ModelFolder(path: Self.folder.appendingPathComponent("base").path)
        let merged = Fixtures.scratch("lora-merged-\(method)")
        let adapterPath = Fixtures.scratch("lora-extracted-\(method)")
        defer {
            try? FileManager.default.removeItem(atPath: merged)
            try? FileManager.default.removeItem(atPath: adapterPath)
        }
        try LoRAAdapterFolder(path: Self.folder.appendingPathComponent("adapter").path).writeMerged(
            base: base, to: merged)
        let fine = try ModelFolder(path: merged)
        var options = LoRAExtraction.Options(rank: 4)
        options.svd.method = method
        let report = try LoRAExtraction.extract(base: base, fineTuned: fine, to: adapterPath, options: options)
        #expect(report.targetModules.count == 6)  // q, v, down × 2 layers
        #expect(Set(report.modulesToSave) == ["model.embed_tokens", "lm_head"])
        #expect(report.relativeError < 1e-4)
        #expect(!report.loraBias)

        let back = try LoRAAdapterFolder(path: adapterPath)
        try back.check(against: base)
        var worst: Float = 0
        for name in base.tensorNames {
            let b = try base.tensor(name).floats()
            let want = try fine.tensor(name).floats()
            let got = try back.merged(name, base: b, dtype: .F32) ?? b
            for (x, y) in zip(got, want) { worst = max(worst, abs(x - y) / max(1e-2, abs(y))) }
        }
        #expect(worst < 1e-4)
    }

    @Test("Rank above a weight's smaller side, different tensors and an existing output are coded errors")
    func badInputs() throws {
        let base = try ModelFolder(path: Self.folder.appendingPathComponent("base").path)
        let out = Fixtures.scratch("lora-bad")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let merged = Fixtures.scratch("lora-bad-merged")
        defer { try? FileManager.default.removeItem(atPath: merged) }
        try LoRAAdapterFolder(path: Self.folder.appendingPathComponent("adapter").path).writeMerged(
            base: base, to: merged)
        let fine = try ModelFolder(path: merged)
        do {
            _ = try LoRAExtraction.extract(base: base, fineTuned: fine, to: out, options: .init(rank: 17))
            Issue.record("rank 17 accepted")
        } catch {
            #expect(error.code == .invalidInputs && error.message.contains("exceeds its smaller side 16"))
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        do {
            _ = try LoRAExtraction.extract(base: base, fineTuned: base, to: out, options: .init(rank: 2))
            Issue.record("identical models accepted")
        } catch {
            #expect(error.code == .invalidInputs && error.message.contains("nothing to extract"))
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        do {
            _ = try LoRAExtraction.extract(base: base, fineTuned: fine, to: out, options: .init(rank: 2))
            Issue.record("existing output replaced")
        } catch {
            #expect(error.underlying(CheckpointError.self)?.code == .outputExists)
        }
    }

    /// Writes one safetensors file with F32 tensors.
    static func write(_ path: String, _ tensors: [(String, [Int], [Float])]) throws {
        let w = try SafeTensorsWriter(
            path: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: .F32, shape: $0.1) })
        for t in tensors { try w.write(t.0, floats: t.2) }
        try w.finish()
    }

    @Test(
        "A changed bias becomes lora_B.bias (lora_bias), which LoRAAdapterFolder merges back; norms are stored whole"
    )
    func biasAndNorm() throws {
        let dir = Fixtures.scratch("lora-bias")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 5)
        let w = (0..<48).map { _ in rng.nextUnitFloat() - 0.5 }
        let bias = (0..<8).map { _ in rng.nextUnitFloat() }
        let norm = [Float](repeating: 1, count: 6)
        // ΔW = u·vᵀ (rank 1), Δbias and Δnorm dense.
        let dw: [Float] = (0..<48).map { (k: Int) -> Float in
            let row = Float(k / 6 + 1)
            let col = Float(k % 6 - 2)
            return row * col * 0.01
        }
        try Self.write(
            dir + "/base.safetensors", [("l.weight", [8, 6], w), ("l.bias", [8], bias), ("n.weight", [6], norm)])
        try Self.write(
            dir + "/ft.safetensors",
            [
                ("l.weight", [8, 6], zip(w, dw).map { $0 + $1 }), ("l.bias", [8], bias.map { $0 + 0.25 }),
                ("n.weight", [6], norm.map { $0 * 1.5 }),
            ])
        let base = try ModelFolder(path: dir + "/base.safetensors")
        let fine = try ModelFolder(path: dir + "/ft.safetensors")
        let report = try LoRAExtraction.extract(
            base: base, fineTuned: fine, to: dir + "/adapter", options: .init(rank: 1))
        #expect(report.loraBias && report.targetModules == ["l"] && report.modulesToSave == ["n"])
        #expect(report.relativeError < 1e-5)
        let back = try LoRAAdapterFolder(path: dir + "/adapter")
        for name in ["l.weight", "l.bias", "n.weight"] {
            let got = try back.merged(name, base: try base.tensor(name).floats(), dtype: .F32)
            let want = try fine.tensor(name).floats()
            #expect(got.map { zip($0, want).allSatisfy { abs($0 - $1) < 1e-5 } } == true, "\(name)")
        }
        // Left out with skipUndecomposable: the norm.
        var options = LoRAExtraction.Options(rank: 1)
        options.skipUndecomposable = true
        let r2 = try LoRAExtraction.extract(base: base, fineTuned: fine, to: dir + "/adapter2", options: options)
        #expect(r2.modulesToSave.isEmpty && r2.modules.contains { $0.module == "n" && $0.kind == .skipped })
    }
}
