import CheckpointIO
import Foundation
import TestSupport
import Testing

@testable import MergeEngine

/// The committed fixtures: tiny Llama checkpoints, one mergekit config per method and mergekit's outputs
/// (scripts/fixtures/merge_fixtures.py).
enum Fixtures {
    static let directory = TestPaths.fixtures(in: .module)

    static func config(_ name: String) -> String { directory.appendingPathComponent("\(name).yml").path }
    static func expected(_ file: String) -> String { directory.appendingPathComponent("expected/\(file)").path }
    static func model(_ name: String) -> String { directory.appendingPathComponent("models/\(name)").path }

    /// A fresh output path under the temporary folder (not created).
    static func scratch(_ tag: String) -> String {
        FileManager.default.temporaryDirectory
            .appendingPathComponent("merge-test-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    }

    /// Runs a fixture config with our engine and returns the output folder.
    static func merge(_ name: String, seed: UInt64 = 0, streaming: Bool = true) throws -> String {
        let out = scratch(name)
        var options = MergeOptions()
        options.seed = seed
        options.streaming = streaming
        try MergeEngine.run(configFile: config(name), output: out, options: options)
        return out
    }

    static func tensors(_ path: String) throws -> [String: [Float]] {
        let folder = try ModelFolder(path: path)
        var out: [String: [Float]] = [:]
        for name in folder.tensorNames { out[name] = try folder.tensor(name).floats() }
        return out
    }
}

/// Largest |ours − mergekit| relative to max(1e-3, |mergekit|) over every tensor, plus checks that both have
/// the same tensors and shapes.
func compareWithMergekit(_ name: String, streaming: Bool = true) throws -> Float {
    let out = try Fixtures.merge(name, streaming: streaming)
    defer { try? FileManager.default.removeItem(atPath: out) }
    let ours = try ModelFolder(path: out)
    let ref = try ModelFolder(path: Fixtures.expected("\(name).safetensors"))
    #expect(Set(ours.tensorNames) == Set(ref.tensorNames), "\(name): tensor names differ from mergekit's")
    var worst: Float = 0
    for t in ref.tensorNames {
        guard let a = ours.info(t), let b = ref.info(t) else { continue }
        #expect(a.shape == b.shape, "\(name): \(t) shape \(a.shape) vs mergekit \(b.shape)")
        let x = try ours.tensor(t).floats()
        let y = try ref.tensor(t).floats()
        guard x.count == y.count else { continue }
        for i in 0..<x.count {
            let err = abs(x[i] - y[i]) / max(1e-3, abs(y[i]))
            if !(err <= worst) { worst = err.isNaN ? .infinity : err }
        }
    }
    return worst
}

@Suite("Parity with mergekit 0.1.5 on tiny Llama checkpoints")
struct MergeParityTests {
    /// Deterministic methods: equal within f32 rounding (relative error bound per element, see docs/merge.md).
    @Test(
        "deterministic methods match mergekit's output element by element",
        arguments: [
            ("linear", Float(1e-6)), ("task_arithmetic", 1e-6), ("ties", 1e-6), ("breadcrumbs", 1e-6),
            ("breadcrumbs_ties", 1e-6), ("slerp", 1e-5), ("nuslerp", 1e-5), ("nuslerp_rows", 1e-5),
            ("multislerp", 1e-5), ("karcher", 1e-5), ("model_stock", 1e-5), ("nearswap", 1e-6), ("sce", 1e-5),
            ("ram", 1e-6), ("ramplus_tl", 1e-6), ("passthrough", 0), ("multi", 1e-6),
        ])
    func deterministic(name: String, tolerance: Float) throws {
        let worst = try compareWithMergekit(name)
        #expect(worst <= tolerance, "\(name): worst relative error \(worst) exceeds \(tolerance)")
    }

    /// Arcee Fusion's row KL cancels to ~1e-7 in f32, so mergekit's mask flips with summation order at the
    /// threshold; we compute the KL in Double. Entries agree except a few near the threshold, where each side
    /// takes either the base or the fine-tune value.
    @Test("arcee_fusion agrees with mergekit except at threshold ties of its f32 KL")
    func arceeFusion() throws {
        let out = try Fixtures.merge("arcee_fusion")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let ours = try Fixtures.tensors(out)
        let ref = try Fixtures.tensors(Fixtures.expected("arcee_fusion.safetensors"))
        let base = try Fixtures.tensors(Fixtures.model("base"))
        let tuned = try Fixtures.tensors(Fixtures.model("a"))
        var differ = 0
        var total = 0
        for (name, r) in ref {
            guard let o = ours[name], let b = base[name], let a = tuned[name] else {
                Issue.record("tensor \(name) missing")
                continue
            }
            for i in 0..<r.count {
                total += 1
                if o[i] != r[i] {
                    differ += 1
                    #expect(o[i] == a[i] || o[i] == b[i], "\(name)[\(i)] is neither the base nor the fine-tune value")
                }
            }
        }
        #expect(total == 53568)
        #expect(Double(differ) <= 0.002 * Double(total), "\(differ) of \(total) entries differ from mergekit")
    }

    @Test(
        "the whole-tensor path gives the same numbers as the streamed path",
        arguments: ["ties", "task_arithmetic", "breadcrumbs_ties", "linear"])
    func wholeTensorPath(name: String) throws {
        let worst = try compareWithMergekit(name, streaming: false)
        #expect(worst <= 1e-6)
    }

    @Test("layer stacks write the new layer count into config.json, like mergekit")
    func passthroughConfig() throws {
        let out = try Fixtures.merge("passthrough")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let ours =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json")))
            as? [String: Any]
        let ref =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: Fixtures.expected("passthrough.config.json"))))
            as? [String: Any]
        #expect(ours?["num_hidden_layers"] as? Int == 3)
        #expect(ref?["num_hidden_layers"] as? Int == 3)
    }
}

@Suite("Randomised methods: statistics against mergekit and seed behaviour")
struct RandomisedMethodTests {
    struct Stats: Decodable {
        let count: Int
        let nonzero: Int
        let l1: Double
        let l2: Double
    }

    static func stats(of out: String) throws -> [String: Stats] {
        let merged = try Fixtures.tensors(out)
        let base = try Fixtures.tensors(Fixtures.model("base"))
        var result: [String: Stats] = [:]
        for (name, x) in merged {
            guard let b = base[name] else { continue }
            var nz = 0
            var l1 = 0.0
            var l2 = 0.0
            for i in 0..<x.count {
                let d = Double(x[i] - b[i])
                if x[i] - b[i] != 0 { nz += 1 }
                l1 += abs(d)
                l2 += d * d
            }
            result[name] = Stats(count: x.count, nonzero: nz, l1: l1, l2: l2.squareRoot())
        }
        return result
    }

    /// Single-model DARE and DELLA rescale each task vector to its L1 norm, so the merged L1 is seed-independent
    /// and must equal mergekit's; the kept fraction is binomial around the density (4σ band).
    @Test(
        "single-model DARE and DELLA keep the L1 norm and the density of mergekit",
        arguments: [("dare_linear", 0.3), ("della", 0.4)])
    func singleModel(name: String, density: Double) throws {
        let out = try Fixtures.merge(name, seed: 7)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let ours = try Self.stats(of: out)
        let ref = try JSONDecoder().decode(
            [String: Stats].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.expected("\(name).json"))))
        #expect(Set(ours.keys) == Set(ref.keys))
        var keptOurs = 0
        var keptRef = 0
        var changed = 0
        for (name, r) in ref {
            guard let o = ours[name] else { continue }
            #expect(abs(o.l1 - r.l1) <= 1e-4 * max(r.l1, 1e-6), "\(name): L1 \(o.l1) vs mergekit \(r.l1)")
            keptOurs += o.nonzero
            keptRef += r.nonzero
            changed += r.count
        }
        // Untouched entries (20 % of the fixture's task vectors are exactly zero) stay zero either way.
        let sigma = (Double(changed) * density * (1 - density)).squareRoot()
        #expect(abs(Double(keptOurs - keptRef)) <= 4 * sigma * 2, "kept \(keptOurs) vs mergekit \(keptRef)")
        #expect(abs(Double(keptOurs) - 0.8 * density * Double(changed)) <= 4 * sigma + 0.01 * Double(changed))
    }

    @Test(
        "multi-model DARE-TIES and DELLA-linear match mergekit's kept fraction and norms statistically",
        arguments: ["dare_ties", "della_linear"])
    func multiModel(name: String) throws {
        let out = try Fixtures.merge(name, seed: 3)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let ours = try Self.stats(of: out)
        let ref = try JSONDecoder().decode(
            [String: Stats].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.expected("\(name).json"))))
        var (ko, kr, lo, lr, total) = (0, 0, 0.0, 0.0, 0)
        for (t, r) in ref {
            guard let o = ours[t] else { continue }
            ko += o.nonzero
            kr += r.nonzero
            lo += o.l2 * o.l2
            lr += r.l2 * r.l2
            total += r.count
        }
        #expect(abs(Double(ko - kr)) <= 0.02 * Double(total), "kept \(ko) vs mergekit \(kr) of \(total)")
        #expect(
            abs(lo.squareRoot() / lr.squareRoot() - 1) <= 0.05, "L2 \(lo.squareRoot()) vs mergekit \(lr.squareRoot())")
    }

    @Test("a seed reproduces a randomised merge exactly; another seed changes it", arguments: ["dare_ties", "della"])
    func seeds(name: String) throws {
        let a = try Fixtures.merge(name, seed: 11)
        let b = try Fixtures.merge(name, seed: 11)
        let c = try Fixtures.merge(name, seed: 12)
        defer { for p in [a, b, c] { try? FileManager.default.removeItem(atPath: p) } }
        let ta = try Fixtures.tensors(a)
        let tb = try Fixtures.tensors(b)
        let tc = try Fixtures.tensors(c)
        #expect(ta == tb)
        #expect(ta != tc)
    }

    @Test("streamed and whole-tensor DARE draw the same mask (counter-based generator)")
    func streamedEqualsWhole() throws {
        let a = try Fixtures.merge("dare_ties", seed: 5, streaming: true)
        let b = try Fixtures.merge("dare_ties", seed: 5, streaming: false)
        defer { for p in [a, b] { try? FileManager.default.removeItem(atPath: p) } }
        #expect(try Fixtures.tensors(a) == Fixtures.tensors(b))
    }
}
