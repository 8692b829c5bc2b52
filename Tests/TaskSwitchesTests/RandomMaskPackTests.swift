import CheckpointIO
import Foundation
import TensorKernels
import TestSupport
import Testing

@testable import TaskSwitches

/// The random-mask pack kind (beyond the paper: DARE on one task vector): the seeded mask against an independent
/// numpy implementation, its statistics, value rounding, the file format (version 2, refusals, damage) and
/// switching with mixes of both kinds.
struct RandomMaskPackTests {
    struct Reference: Decodable {
        struct Mask: Decodable {
            let pack_seed: String
            let name: String
            let count: Int
            let drop: Double
            let tensor_seed: String
            let positions: [UInt32]
        }
        struct F16: Decodable {
            let tau_bits: [UInt32]
            let shift: Int
            let f16_bits: [UInt16]
            let decoded_bits: [UInt32]
        }
        let masks: [Mask]
        let f16: [F16]
    }

    static func reference() throws -> Reference {
        try JSONDecoder().decode(
            Reference.self, from: Data(contentsOf: Fixture.url("random-mask/reference.json")))
    }

    /// A random-mask pack of the toy pair.
    static func randomPack(
        _ dir: URL, drop: Double = 0.6, seed: UInt64 = 3, code: KeptValues.Code = .f16, scale: Float = 0.01
    ) throws -> (SwitchPack, base: ModelFolder) {
        let (b, f) = try toyPair(dir, scale: scale)
        let base = try ModelFolder(path: b.path)
        let pack = try SwitchPack.build(
            base: base, fineTuned: try ModelFolder(path: f.path), dropRatio: drop, task: "rnd",
            head: [DenseTensor(name: "classifier.weight", shape: [2, 2], values: [1, -1, 0.5, 2])], labels: ["a", "b"],
            randomMask: RandomMaskSettings(seed: seed, code: code))
        return (pack, base)
    }

    @Test("tensor seeds and kept positions equal the independent numpy implementation")
    func maskMatchesNumpy() throws {
        for c in try Self.reference().masks {
            let seed = RandomMask.tensorSeed(packSeed: try #require(UInt64(c.pack_seed)), name: c.name)
            #expect(String(seed) == c.tensor_seed, "tensor seed of \(c.name)")
            let got = try #require(RandomMask.positions(count: c.count, dropRatio: c.drop, seed: seed))
            #expect(got == c.positions, "\(c.name), n = \(c.count), α = \(c.drop)")
        }
    }

    @Test("the mask keeps 1−α of the entries, evenly over the tensor, and stops at the limit")
    func keptFraction() throws {
        let n = 1 << 20
        for alpha in [0.5, 0.9, 0.99] {
            let p = 1 - alpha
            let kept = try #require(RandomMask.positions(count: n, dropRatio: alpha, seed: 42))
            let sd = (Double(n) * p * (1 - p)).squareRoot()
            #expect(abs(Double(kept.count) - Double(n) * p) < 5 * sd, "α = \(alpha): \(kept.count) kept")
            // Eight equal blocks each hold their share (5 σ).
            var blocks = [Int](repeating: 0, count: 8)
            for i in kept { blocks[Int(i) / (n / 8)] += 1 }
            let bsd = (Double(n / 8) * p * (1 - p)).squareRoot()
            #expect(blocks.allSatisfy { abs(Double($0) - Double(n / 8) * p) < 5 * bsd }, "α = \(alpha): \(blocks)")
            // Gaps are geometric: P(next entry kept | this one kept) = 1 − α.
            let adjacent = zip(kept, kept.dropFirst()).filter { $1 == $0 + 1 }.count
            let pairs = Double(kept.count - 1)
            #expect(abs(Double(adjacent) / pairs - p) < 5 * (p * (1 - p) / pairs).squareRoot())
            #expect(RandomMask.positions(count: n, dropRatio: alpha, seed: 42, limit: kept.count - 1) == nil)
            #expect(RandomMask.positions(count: n, dropRatio: alpha, seed: 42, limit: kept.count) == kept)
        }
        #expect(RandomMask.positions(count: 5, dropRatio: 0, seed: 1) == [0, 1, 2, 3, 4])
        #expect(RandomMask.positions(count: 0, dropRatio: 0.5, seed: 1) == [])
        // Tensors of one pack get different masks.
        let a = RandomMask.tensorSeed(packSeed: 0, name: "a")
        let b = RandomMask.tensorSeed(packSeed: 0, name: "b")
        #expect(a != b && RandomMask.tensorSeed(packSeed: 1, name: "a") != a)
    }

    @Test("f16 values round to nearest even after the per-tensor power-of-two shift, as numpy does")
    func f16MatchesNumpy() throws {
        for c in try Self.reference().f16 {
            let tau = c.tau_bits.map { Float(bitPattern: $0) }
            let (code, step, values, report) = KeptValues.round(tau, code: .f16)
            #expect(code == .f16 && !report.fellBack)
            #expect(step == Float(sign: .plus, exponent: -c.shift, significand: 1))
            #expect(values.map(\.bitPattern) == c.decoded_bits)
            #expect(values.map { Float16($0 / step).bitPattern } == c.f16_bits)
            // Round to nearest: within half a unit of the f16 grid (relative 2^-11, or the subnormal spacing).
            for (t, v) in zip(tau, values) {
                let ulp = max(Swift.abs(t) * 0x1p-10, step * 0x1p-24)
                #expect(Swift.abs(t - v) <= ulp / 2)
            }
            let bytes = KeptValues.pack(values, code: .f16, step: step)
            let back = bytes.withUnsafeBytes { KeptValues.unpack($0, count: values.count, code: .f16, step: step) }
            #expect(back?.map(\.bitPattern) == values.map(\.bitPattern))
        }
    }

    @Test("an f16 tensor whose entries would flush to zero falls back to f32; int8 reports what rounds to zero")
    func roundingFallback() {
        let tau: [Float] = [1, -1e-20, 0, 0.25]
        let (code, step, values, report) = KeptValues.round(tau, code: .f16)
        #expect(code == .f32 && step == 1 && values == tau)
        #expect(report.flushed == 1 && report.fellBack)
        let (c8, s8, v8, r8) = KeptValues.round([0.5, -0.001, 0.2, -0.5], code: .int8)
        #expect(c8 == .int8 && s8 == 0.5 / 127)
        #expect(r8.flushed == 1 && !r8.fellBack)
        #expect(zip([0.5, -0.001, 0.2, -0.5] as [Float], v8).allSatisfy { Swift.abs($0 - $1) <= s8 / 2 })
        #expect(v8[1] == 0)
    }

    @Test("a random-mask pack reconstructs τ/(1−α) on its seeded mask and survives encode/decode in every code")
    func roundTrip() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        for code in KeptValues.Code.allCases {
            let (pack, base) = try Self.randomPack(dir.appendingPathComponent(code.rawValue), code: code)
            #expect(pack.kind == .randomMask && pack.seed == 3)
            let bytes = PackFile.encode(pack)
            #expect(bytes[8] == 2, "random-mask packs are format version 2")
            let back = try PackFile.decode(bytes, file: "r.tsw")
            #expect(back == pack)
            // Against τ computed here: the mask from the spec, the values within the code's rounding.
            let fine = try ModelFolder(
                path: dir.appendingPathComponent(code.rawValue).appendingPathComponent("fine").path)
            for t in pack.tensors {
                let values = try #require(t.values)
                #expect(t.lambda == Float(1 / (1 - 0.6)) && t.negative.isEmpty)
                let seed = RandomMask.tensorSeed(packSeed: 3, name: t.name)
                #expect(values.maskSeed == seed)
                let mask = try #require(RandomMask.positions(count: t.elementCount, dropRatio: 0.6, seed: seed))
                let tau = zip(try fine.tensor(t.name).floats(), try base.tensor(t.name).floats()).map { $0 - $1 }
                let nonZero = mask.filter { tau[Int($0)] != 0 }
                if code == .int8 {
                    #expect(Set(t.positive).isSubset(of: nonZero))  // what rounds to 0 is not applied
                } else {
                    #expect(t.positive == nonZero)
                }
                let maxAbs = t.positive.map { Swift.abs(tau[Int($0)]) }.max() ?? 0
                for (j, i) in t.positive.enumerated() {
                    let err = Swift.abs(values.values[j] - tau[Int(i)])
                    switch code {
                    case .f32: #expect(err == 0)
                    case .f16: #expect(err <= max(Swift.abs(tau[Int(i)]) * 0x1p-11, values.step * 0x1p-25))
                    case .int8: #expect(err <= maxAbs / 254 * 1.0001)
                    }
                }
            }
        }
    }

    @Test("T-Switch packs stay format version 1 without a kind; a version-1 file with a random section is refused")
    func versions() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let t = try PackCorruptionTests.realPack().bytes
        #expect(t[8] == 1)
        let meta = String(decoding: t[28..<(28 + 400)], as: UTF8.self)
        #expect(!meta.contains("kind") && !meta.contains("seed"))
        var bytes = PackFile.encode(try Self.randomPack(dir).0)
        bytes[8] = 1
        let err = switchError { () throws(SwitchError) in _ = try PackFile.decode(bytes, file: "v1.tsw") }
        #expect(err?.code == .corruptPack)
        #expect(err?.message.contains("v1.tsw") == true)
    }

    @Test("a random-mask pack is refused on another base, before any weight changes")
    func wrongBase() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (pack, _) = try Self.randomPack(dir.appendingPathComponent("a"))
        let (b2, _) = try toyPair(dir.appendingPathComponent("b"), seed: 9)
        let other = try ModelFolder(path: b2.path)
        let model = try SwitchableModel(base: other)
        let before = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
        let err = switchError { () throws(SwitchError) in try model.activate(pack) }
        #expect(err?.code == .wrongBase)
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == before)
        let out = dir.appendingPathComponent("out").path
        let e2 = switchError { () throws(SwitchError) in
            try SwitchApplier.write(base: other, packs: [(pack, 1)], output: out)
        }
        #expect(e2?.code == .wrongBase && !FileManager.default.fileExists(atPath: out))
    }

    @Test("mixes of random-mask and T-Switch packs switch identically on every path and restore the base exactly")
    func mixesRestoreExactly() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (random, base) = try Self.randomPack(dir, drop: 0.5, code: .f16)
        let (_, f2) = try toyPair(dir.appendingPathComponent("two"), seed: 1, scale: 0.05)
        let tswitch = try SwitchPack.build(
            base: base, fineTuned: try ModelFolder(path: f2.path), dropRatio: 0.7, task: "ts")
        let (_, f3) = try toyPair(dir.appendingPathComponent("three"), seed: 1, scale: 0.03)
        let random2 = try SwitchPack.build(
            base: base, fineTuned: try ModelFolder(path: f3.path), dropRatio: 0.9, task: "rnd2",
            randomMask: RandomMaskSettings(seed: 11, code: .int8))
        let mix: [(pack: SwitchPack, weight: Float)] = [(random, 0.5), (tswitch, -1.25), (random2, 2), (random, 1)]
        let out = dir.appendingPathComponent("mix").path
        try SwitchApplier.write(base: base, packs: mix, output: out)
        let written = try ModelFolder(path: out)
        var results: [[[UInt32]]] = []
        for strategy in [SwitchableModel.Strategy.automatic, .scatter, .sweep] {
            let model = try SwitchableModel(base: base)
            let original = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
            try model.activate(random, strategy: strategy)
            // One random pack alone: base + τ_rounded/(1−α) at its entries (weight 1).
            let v = try #require(random.tensor("layer.0.weight")?.values)
            let sw = try #require(random.tensor("layer.0.weight"))
            let bw = try base.tensor("layer.0.weight").floats()
            var want = bw
            for (j, i) in sw.positive.enumerated() { want[Int(i)] = bw[Int(i)] + sw.lambda * v.values[j] }
            #expect(model.withTensor("layer.0.weight", { Array($0).map(\.bitPattern) }) == want.map(\.bitPattern))
            try model.activate(mix, strategy: strategy)
            let mixed = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
            for (k, spec) in model.specs.enumerated() {
                #expect(mixed[k] == (try written.tensor(spec.name).floats().map(\.bitPattern)), "\(spec.name)")
            }
            results.append(mixed)
            try model.activate([(tswitch, 1), (random2, 0.25)], strategy: strategy)
            model.reset(strategy: strategy)
            #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == original)
        }
        #expect(results[0] == results[1] && results[1] == results[2])
    }

    @Test("every single-bit flip of a random-mask pack is a typed error")
    func everyBit() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bytes = PackFile.encode(try Self.randomPack(dir).0)
        let codes = try PackCorruptionTests.flipEveryBit(bytes)
        #expect(codes[.corruptPack, default: 0] > bytes.count * 4)
    }

    @Test("an RVAL record with a rewritten checksum but a damaged seed, mask size or value frame is refused")
    func damageBehindChecksum() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (pack, _) = try Self.randomPack(dir)
        let t = try #require(pack.tensors.first { $0.name == "layer.0.weight" })
        let record = PackFile.encodeRandom(t, try #require(t.values))
        let ok = record.withUnsafeBytes { try? PackFile.decodeRandom($0, index: 0, file: "d.tsw") }
        #expect(ok?.tensor == t)
        // Offsets: name (4 + 14), dtype (4 + 3), rank 1 + 2 × 8, then drop f64, seed u64, rescale f32, count u64.
        let seedAt = 4 + 14 + 4 + 3 + 1 + 16 + 8
        // Damaged value bytes that still decompress are caught by the section CRC only (everyBit above); a frame
        // cut short, with its length field matching the cut, is refused here.
        let frameLengthAt = seedAt + 8 + 4 + 8 + 1 + 4
        var cut = Array(record.dropLast(2))
        cut[frameLengthAt] &-= 2
        for (label, at) in [("seed", seedAt), ("count", seedAt + 12), ("frame", -1)] {
            var bad = at < 0 ? cut : record
            if at >= 0 { bad[at] ^= 0x10 }
            let err = bad.withUnsafeBytes { b in
                switchError { () throws(SwitchError) in _ = try PackFile.decodeRandom(b, index: 0, file: "d.tsw") }
            }
            #expect(err?.code == .corruptPack || err?.code == .limitExceeded, "\(label)")
        }
        // The kept budget counts mask entries and is checked before the mask is regenerated.
        let budget = record.withUnsafeBytes { b in
            switchError { () throws(SwitchError) in
                _ = try PackFile.decodeRandom(b, index: 0, file: "d.tsw", keptBudget: 10)
            }
        }
        #expect(budget?.code == .limitExceeded)
    }
}
