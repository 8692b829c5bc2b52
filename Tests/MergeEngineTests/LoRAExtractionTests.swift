import CheckpointIO
import Foundation
import TensorKernels
import Testing

@testable import MergeEngine

/// `LoRAExtraction` round trip on the PEFT fixture (scripts/fixtures/lora_fixtures.py): the fine-tune is base +
/// the rank-4 adapter merged, so a rank-4 extraction recovers every change (embeddings and lm_head stored whole),
/// and `LoRAAdapter` reads the extracted adapter back to the same merged weights.
@Suite("LoRA extraction", .serialized)
struct LoRAExtractionTests {
    static let folder = Fixtures.directory.appendingPathComponent("lora")

    @Test("A rank-4 extraction of base + rank-4 adapter merges back to the same model", arguments: TruncatedSVD.Method.allCases)
    func roundTrip(_ method: TruncatedSVD.Method) throws {
        let base = try ModelFolder(path: Self.folder.appendingPathComponent("base").path)
        let merged = Fixtures.scratch("lora-merged-\(method)")
        let adapterPath = Fixtures.scratch("lora-extracted-\(method)")
        defer {
            try? FileManager.default.removeItem(atPath: merged)
            try? FileManager.default.removeItem(atPath: adapterPath)
        }
        try LoRAAdapter(path: Self.folder.appendingPathComponent("adapter").path).writeMerged(base: base, to: merged)
        let fine = try ModelFolder(path: merged)
        var options = LoRAExtraction.Options(rank: 4)
        options.svd.method = method
        let report = try LoRAExtraction.extract(base: base, fineTuned: fine, to: adapterPath, options: options)
        #expect(report.targetModules.count == 6)  // q, v, down × 2 layers
        #expect(Set(report.modulesToSave) == ["model.embed_tokens", "lm_head"])
        #expect(report.relativeError < 1e-4)
        #expect(!report.loraBias)

        let back = try LoRAAdapter(path: adapterPath)
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
        try LoRAAdapter(path: Self.folder.appendingPathComponent("adapter").path).writeMerged(base: base, to: merged)
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
}
