import CheckpointIO
import Foundation
import TensorKernels
import Testing

@testable import TaskSwitches

/// `SwitchableModel.withMixes`: per mix, the tensors `materialize` and `gatherRows` write must be bit for bit what
/// `withActivated` leaves in place, and the resident model must not change.
@Suite("Mixed switches")
struct MixedSwitchesTests {
    /// An in-memory base large enough for several parallel tiles (196 608 values in the matrix), a bias, a scalar.
    static let specs = [
        TensorSpec(name: "m.weight", dtype: .F32, shape: [512, 384]),
        TensorSpec(name: "m.bias", dtype: .F32, shape: [384]),
        TensorSpec(name: "scale", dtype: .F32, shape: []),
    ]
    static let fingerprint = BaseFingerprint(value: 0x5EED)

    static func model(seed: UInt64) -> SwitchableModel {
        var g = SplitMix64(seed: seed)
        return SwitchableModel(
            tensors: specs.map { s in (s, (0..<s.elementCount).map { _ in g.normal() }) }, fingerprint: fingerprint)
    }

    /// A random pack: T-Switch (signs) or random-mask (stored values), kept density `density` per tensor.
    static func pack(_ task: String, seed: UInt64, density: Double, values: Bool) -> SwitchPack {
        var g = SplitMix64(seed: seed)
        let tensors = specs.map { s -> TensorSwitch in
            var positive: [UInt32] = []
            var negative: [UInt32] = []
            for i in 0..<s.elementCount where Double(g.next() % 10_000) / 10_000 < density {
                if values || g.next() % 2 == 0 { positive.append(UInt32(i)) } else { negative.append(UInt32(i)) }
            }
            let kept =
                values
                ? KeptValues(
                    code: .f16, step: 1, values: positive.map { _ in g.normal() }, maskSeed: seed,
                    dropRatio: 1 - density)
                : nil
            return TensorSwitch(
                name: s.name, shape: s.shape, baseDType: .F32, lambda: Float(0.01 + Double(g.next() % 100) / 1000),
                positive: positive, negative: negative, values: kept)
        }
        return SwitchPack(
            task: task, baseFingerprint: fingerprint, dropRatio: 1 - density, tieRule: .lowestIndex, tensors: tensors,
            kind: values ? .randomMask : .tSwitch)
    }

    static func bits(_ w: borrowing SwitchableModel.Weights) -> [[UInt32]] { w.all.map { $0.map(\.bitPattern) } }

    @Test("every mix's tensors and rows equal the in-place switch bit for bit; the model is left as it was")
    func matchesInPlace() throws {
        let model = Self.model(seed: 1)
        let a = Self.pack("a", seed: 2, density: 0.3, values: false)
        let b = Self.pack("b", seed: 3, density: 0.05, values: false)
        let c = Self.pack("c", seed: 4, density: 0.01, values: true)
        let mixes: [[(pack: SwitchPack, weight: Float)]] = [
            [], [(a, 1)], [(b, 1)], [(c, 1)], [(a, 0.3), (b, 0.7)], [(c, 0.5), (a, -1.25), (b, 0.125)],
        ]
        let want = try mixes.map { mix in try model.withActivated(mix) { Self.bits($0) } }
        try model.activate(b)
        let active = model.withWeights { $0.map { Array($0).map(\.bitPattern) } }
        let rows = [0, 511, 7, 7, 300]
        let got = try model.withMixes(mixes) { switches -> [([[UInt32]], [UInt32])] in
            #expect(switches.mixCount == mixes.count)
            return (0..<mixes.count).map { m in
                let tensors = Self.specs.map { s -> [UInt32] in
                    var out = [Float](repeating: .nan, count: s.elementCount)
                    let wrote = out.withUnsafeMutableBufferPointer { switches.materialize(s.name, mix: m, into: $0) }
                    let changes = mixes[m].contains { ($0.pack.tensor(s.name)?.keptCount ?? 0) > 0 }
                    #expect(wrote == changes, "mix \(m) tensor \(s.name)")
                    #expect(switches.switches(s.name, mix: m) == wrote)
                    if !wrote { out = Array(switches.base(s.name)!) }
                    return out.map(\.bitPattern)
                }
                var gathered = [Float](repeating: .nan, count: rows.count * 384)
                gathered.withUnsafeMutableBufferPointer {
                    switches.gatherRows("m.weight", mix: m, rows: rows, width: 384, into: $0)
                }
                return (tensors, gathered.map(\.bitPattern))
            }
        }
        for m in mixes.indices {
            #expect(got[m].0 == want[m], "mix \(m)")
            let wantRows = rows.flatMap { r in want[m][0][(r * 384)..<((r + 1) * 384)] }
            #expect(got[m].1 == wantRows, "rows of mix \(m)")
        }
        #expect(model.withWeights { $0.map { Array($0).map(\.bitPattern) } } == active)
        #expect(model.active.map(\.task) == ["b"])
    }

    @Test("tiles written by tensorMix equal the in-place switch bit for bit, at any tile boundary")
    func tilesMatchInPlace() throws {
        let model = Self.model(seed: 8)
        let a = Self.pack("a", seed: 9, density: 0.3, values: false)
        let c = Self.pack("c", seed: 10, density: 0.02, values: true)
        let mixes: [[(pack: SwitchPack, weight: Float)]] = [[], [(a, 1)], [(c, 0.75), (a, -0.5)]]
        let want = try mixes.map { mix in try model.withActivated(mix) { Self.bits($0) } }
        var g = SplitMix64(seed: 11)
        // Tile ranges: the whole tensor, an aligned row block, odd spans, one element, the last elements.
        let n = 512 * 384
        var ranges = [0..<n, 384..<(384 * 40), 1..<2, (n - 5)..<n, 0..<1]
        for _ in 0..<20 {
            let lo = Int(g.next() % UInt64(n))
            ranges.append(lo..<min(n, lo + 1 + Int(g.next() % 30_000)))
        }
        let got = try model.withMixes(mixes) { switches in
            (0..<mixes.count).map { m -> (Bool, [[UInt32]]) in
                guard let mix = switches.tensorMix("m.weight", mix: m) else { return (false, []) }
                #expect(mix.count == n)
                return (
                    true,
                    ranges.map { r in
                        var out = [Float](repeating: .nan, count: r.count)
                        out.withUnsafeMutableBufferPointer { mix.write(r, into: $0.baseAddress!) }
                        return out.map(\.bitPattern)
                    }
                )
            }
        }
        #expect(!got[0].0, "the base alone switches nothing")
        for m in 1..<mixes.count {
            #expect(got[m].0)
            for (k, r) in ranges.enumerated() {
                #expect(got[m].1[k] == Array(want[m][0][r]), "mix \(m) range \(r)")
            }
            #expect(got[m].1[0] != want[0][0], "mix \(m) changes the tensor")
        }
    }

    @Test(
        "the masked pass (AVX-512) writes every tile as the index lists do, bit for bit: 1 to 9 packs of both kinds, dense and sparse, ragged ends, the bias"
    )
    func maskedMatchesLists() throws {
        let model = Self.model(seed: 21)
        let packs = (0..<9).map { k in
            Self.pack("p\(k)", seed: 30 + UInt64(k), density: [0.3, 0.05, 0.7, 0.01][k % 4], values: k % 3 == 2)
        }
        let mixes: [[(pack: SwitchPack, weight: Float)]] = [
            [(packs[0], 1)], [(packs[2], 0.5)], [(packs[2], 1), (packs[5], -0.75)],
            packs.enumerated().map { k, p in (p, Float(k) * 0.25 - 0.9) },
        ]
        var g = SplitMix64(seed: 22)
        let n = 512 * 384
        var ranges = [0..<n, 0..<16, 16..<48, 7..<9, 15..<17, 3..<40, (n - 17)..<n]
        for _ in 0..<30 {
            let lo = Int(g.next() % UInt64(n))
            ranges.append(lo..<min(n, lo + 1 + Int(g.next() % 50_000)))
        }
        try model.withMixes(mixes) { switches in
            for m in mixes.indices {
                for name in ["m.weight", "m.bias"] {
                    let mix = try #require(switches.tensorMix(name, mix: m))
                    #expect((mix.masks != nil) == SwitchMasks.available, "masks are used exactly where AVX-512 runs")
                    for r in ranges where r.upperBound <= mix.count {
                        var fast = [Float](repeating: .nan, count: r.count)
                        var lists = fast
                        fast.withUnsafeMutableBufferPointer { mix.write(r, into: $0.baseAddress!) }
                        lists.withUnsafeMutableBufferPointer { mix.writeLists(r, into: $0.baseAddress!) }
                        #expect(fast.map(\.bitPattern) == lists.map(\.bitPattern), "mix \(m), \(name), range \(r)")
                    }
                }
            }
        }
    }

    @Test("a pack for another base is refused before the body runs")
    func refusesOtherBase() throws {
        let model = Self.model(seed: 1)
        var other = Self.pack("x", seed: 5, density: 0.1, values: false)
        other.baseFingerprint = BaseFingerprint(value: 42)
        var ran = false
        let error = #expect(throws: SwitchError.self) { try model.withMixes([[], [(other, 1)]]) { _ in ran = true } }
        #expect(error?.code == .wrongBase)
        #expect(!ran)
    }
}
