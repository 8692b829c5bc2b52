import CheckpointIO
import Foundation
import TensorKernels
import Testing

@testable import MergeEngine

/// The fused masked merge pass (`MaskedMerge`, C: AVX2 and its scalar loop) against the block path of `GTA.merge`
/// (widened scratch blocks, `MagnitudeTopK.mask`, `combineConsensus` / `combineSum`), bit for bit on BF16 inputs.
@Suite("Masked merge kernel: equals the block path bit for bit")
struct MaskedMergeTests {
    /// BF16 bits of a base and three fine-tunes. Half the base entries are exactly 0, so there the task vector is a
    /// BF16 value itself and magnitudes repeat (ties at every threshold); model 2 leaves a third untouched (d = 0).
    static func inputs(_ n: Int, seed: UInt64, allZero: Bool = false) -> [[UInt16]] {
        var g = SplitMix64(seed: seed)
        func bf16(_ x: Float) -> UInt16 { UInt16(x.bitPattern >> 16) }
        func normal() -> Float {
            let u = max(g.nextUnit(), 1e-12)
            return Float((-2 * log(u)).squareRoot() * cos(2 * Double.pi * g.nextUnit()))
        }
        let base = (0..<n).map { j in j % 2 == 0 ? 0 : bf16(0.02 * normal()) }
        if allZero { return Array(repeating: base, count: 4) }
        var out = [base]
        for m in 0..<3 {
            out.append(
                (0..<n).map { j in
                    let b = Float(bitPattern: UInt32(base[j]) << 16)
                    if m == 2, j % 3 == 0 { return base[j] }
                    return bf16(b + 0.002 * normal())
                })
        }
        return out
    }

    struct Case: Sendable, CustomStringConvertible {
        let method: String
        let variant: GTA.Variant
        let shared: [String: ParameterValue]
        let perModel: [[String: ParameterValue]]
        var description: String { method }
    }

    static let cases: [Case] = [
        Case(
            method: "ties", variant: .init(sparsification: .magnitude, consensus: true),
            shared: ["normalize": .bool(true), "lambda": .number(1)],
            perModel: [
                ["weight": .number(1), "density": .number(0.3)], ["weight": .number(0.5), "density": .number(0.3)],
                ["weight": .number(0.7), "density": .number(0.3)],
            ]),
        Case(
            method: "ties, rescale, lambda 0.9, a negative weight, one model unmasked",
            variant: .init(sparsification: .magnitude, consensus: true),
            shared: ["normalize": .bool(true), "rescale": .bool(true), "lambda": .number(0.9)],
            perModel: [
                ["weight": .number(1), "density": .number(0.2)], ["weight": .number(-0.4), "density": .number(0.5)],
                ["weight": .number(0.7), "density": .number(1)],
            ]),
        Case(
            method: "ties without normalize", variant: .init(sparsification: .magnitude, consensus: true),
            shared: ["normalize": .bool(false), "lambda": .number(1)],
            perModel: [
                ["weight": .number(1), "density": .number(0.3)], ["weight": .number(1), "density": .number(0)],
                ["weight": .number(1), "density": .number(0.6)],
            ]),
        Case(
            method: "breadcrumbs", variant: .init(sparsification: .magnitudeOutliers, consensus: false),
            shared: ["normalize": .bool(false), "lambda": .number(1)],
            perModel: (0..<3).map { _ in ["weight": .number(1), "density": .number(0.9), "gamma": .number(0.01)] }),
        Case(
            method: "breadcrumbs normalized, lambda 1.3",
            variant: .init(sparsification: .magnitudeOutliers, consensus: false),
            shared: ["normalize": .bool(true), "lambda": .number(1.3)],
            perModel: [
                ["weight": .number(0.3), "density": .number(0.5), "gamma": .number(0.05)],
                ["weight": .number(0.6), "density": .number(0.8), "gamma": .number(0.01)],
                ["weight": .number(1), "density": .number(0.9), "gamma": .number(0)],
            ]),
        Case(
            method: "breadcrumbs_ties", variant: .init(sparsification: .magnitudeOutliers, consensus: true),
            shared: ["normalize": .bool(false), "lambda": .number(1)],
            perModel: (0..<3).map { _ in ["weight": .number(1), "density": .number(0.9), "gamma": .number(0.01)] }),
    ]

    /// Lengths: tails of every size mod 16, one and several blocks, and above `GTA.bandMinimum` (the band route).
    static let lengths = [1, 2, 15, 17, 33, 1000, 3 * BlockStream.blockSize + 7, 70 * BlockStream.blockSize + 12_345]

    /// The merged BF16 output at `level` (nil: the block path).
    static func merge(_ c: Case, _ data: [[UInt16]], level: Int?) throws -> [UInt16] {
        let n = data[0].count
        return try data.map { d in d.withUnsafeBytes { [UInt8]($0) } }.withUnsafeBufferPointerArray { raws in
            let inputs = raws.enumerated().map { i, r in
                StreamingInput(
                    model: "m\(i)", isBase: i == 0, source: TensorSource(bytes: r, dtype: .BF16, count: n),
                    parameters: i == 0 ? [:] : c.perModel[i - 1])
            }
            let ctx = StreamingMergeContext(tensorName: "x", shape: [n], inputs: inputs, parameters: c.shared, seed: 1)
            var out = [UInt16](repeating: 0xFFFF, count: n)
            try out.withUnsafeMutableBytes { o in
                try GTA.merge(c.variant, ctx, into: TensorSink(bytes: o, dtype: .BF16, count: n), maskedLevel: level)
            }
            return out
        }
    }

    static var levels: [Int] { (0...(MaskedMerge.level ?? 0)).map { $0 } }

    @Test("TIES, breadcrumbs and breadcrumbs_ties at every level and length", arguments: cases)
    func matchesBlockPath(_ c: Case) throws {
        for (li, n) in Self.lengths.enumerated() {
            let data = Self.inputs(n, seed: UInt64(20 + li))
            let reference = try Self.merge(c, data, level: nil)
            for level in Self.levels {
                let fused = try Self.merge(c, data, level: level)
                let diff = (0..<n).first { fused[$0] != reference[$0] }
                #expect(diff == nil, "\(c) n=\(n) level \(level): first difference at \(diff ?? -1)")
            }
        }
    }

    @Test("one and two fine-tunes (the kernel's general and two-model loops)", arguments: cases)
    func fewerModels(_ c: Case) throws {
        let n = 3 * BlockStream.blockSize + 7
        let data = Self.inputs(n, seed: 31)
        for models in [1, 2] {
            let subset = Array(data.prefix(1 + models))
            let reference = try Self.merge(c, subset, level: nil)
            for level in Self.levels {
                let fused = try Self.merge(c, subset, level: level)
                let diff = (0..<n).first { fused[$0] != reference[$0] }
                #expect(diff == nil, "\(c) \(models) models level \(level): first difference at \(diff ?? -1)")
            }
        }
    }

    @Test("the inputs put ties at the thresholds, so the per-block tie limit is exercised")
    func tiesAreExercised() {
        let n = Self.lengths[Self.lengths.count - 1]
        let data = Self.inputs(n, seed: 99)
        let buffers = data.map { d in
            let p = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: n)
            _ = p.initialize(from: d)
            return p
        }
        defer { buffers.forEach { $0.deallocate() } }
        let s = buffers.map { TensorSource(bytes: UnsafeRawBufferPointer($0), dtype: .BF16, count: n) }
        let sel = GTA.selectTopK(
            n: n, base: s[0], models: Array(s[1...]), requests: [(0, Int(0.3 * Double(n))), (2, Int(0.9 * Double(n)))])
        #expect(sel.contains { $0.needsTieBreak && $0.equalBefore != nil && $0.quota > 0 })
    }

    @Test("all-zero task vectors (every entry ties at threshold 0)", arguments: cases)
    func allZero(_ c: Case) throws {
        for n in [17, 2 * BlockStream.blockSize + 3] {
            let data = Self.inputs(n, seed: 5, allZero: true)
            let reference = try Self.merge(c, data, level: nil)
            #expect(reference == data[0])
            for level in Self.levels { #expect(try Self.merge(c, data, level: level) == reference) }
        }
    }
}

/// The level-1 pass from BF16 (`MaskedMerge.level1`, C: AVX2 and scalar) against the widened Swift loops.
@Suite("Level-1 top-k pass from BF16: equals the widened loops")
struct Level1DirectTests {
    @Test("histogram and band members equal accumulateLevel1 + collectBand, at odd lengths and offsets")
    func matchesWidened() {
        let n = 3 * BlockStream.blockSize + 21
        let data = MaskedMergeTests.inputs(n, seed: 7)
        let l1 = MagnitudeTopK.level1Buckets
        let bands: [ClosedRange<UInt32>] = [0x3B00...0x3B7F, 0x3A80...0x3AFF]  // |d| near 0.002-0.004, and below
        data.withBF16Sources { s in
            let wide = UnsafeMutablePointer<Float>.allocate(capacity: 2 * n)
            defer { wide.deallocate() }
            for r in [0..<n, 5..<5, 3..<20, 16..<(16 + BlockStream.blockSize), 17..<(n - 3)] {
                s[0].read(r, into: wide)
                s[2].read(r, into: wide + n)
                GTA.subtractInPlace(wide + n, wide, r.count)
                var refHist = [UInt32](repeating: 0, count: l1)
                MagnitudeTopK.accumulateLevel1(wide + n, count: r.count, into: &refHist)
                var refMembers: [[UInt64]] = [[], []]
                for q in 0..<2 {
                    _ = MagnitudeTopK.collectBand(
                        wide + n, count: r.count, lowest: bands[q].lowerBound, highest: bands[q].upperBound, block: 9,
                        members: &refMembers[q], cap: .max)
                }
                #expect(refMembers.allSatisfy { !$0.isEmpty } || r.count < 100)
                for level in MaskedMergeTests.levels {
                    for copies in [1, 3, MaskedMerge.level1Copies] {
                        var tables = [UInt32](repeating: 0, count: copies * l1)
                        let buf = (0..<2).map { _ in UnsafeMutablePointer<UInt64>.allocate(capacity: max(1, r.count)) }
                        defer { buf.forEach { $0.deallocate() } }
                        let got = MaskedMerge.level1(
                            base: s[0], x: s[2], r, into: &tables, copies: copies, bands: bands, tag: 9 << 32,
                            members: buf, level: level)
                        var hist = [UInt32](repeating: 0, count: l1)
                        MaskedMerge.foldLevel1(tables, copies: copies, into: &hist)
                        #expect(hist == refHist, "range \(r) level \(level) copies \(copies)")
                        if copies > 1, level >= 1, r.count >= 64 {
                            // The counts really are spread: every table got some.
                            #expect(
                                (0..<copies).allSatisfy { c in tables[(c * l1)..<((c + 1) * l1)].contains { $0 > 0 } })
                        }
                        for q in 0..<2 {
                            let members = Array(UnsafeBufferPointer(start: buf[q], count: got[q]))
                            #expect(
                                members.sorted() == refMembers[q].sorted(),
                                "range \(r) level \(level) copies \(copies) band \(q)")
                        }
                    }
                }
            }
        }
    }

    @Test("selectTopK gives the same selections with the direct and the widened level-1 pass")
    func selectionsMatch() {
        let n = 40 * BlockStream.blockSize + 999
        let data = MaskedMergeTests.inputs(n, seed: 11)
        let requests: [(model: Int, k: Int)] = [
            (0, Int(0.3 * Double(n))), (1, Int(0.3 * Double(n))), (2, Int(0.3 * Double(n))),
            (2, n - Int(0.2 * Double(n))), (1, Int(0.01 * Double(n))), (0, Int(0.9 * Double(n))),
        ]
        data.withBF16Sources { s in
            for minimum in [GTA.bandMinimum, n + 1] {  // the band route and the level-2 route
                let reference = GTA.selectTopK(
                    n: n, base: s[0], models: Array(s[1...]), requests: requests, bandMinimum: minimum,
                    directLevel: nil, bandLevel: nil)
                for level in MaskedMergeTests.levels {
                    let direct = GTA.selectTopK(
                        n: n, base: s[0], models: Array(s[1...]), requests: requests, bandMinimum: minimum,
                        directLevel: level, bandLevel: nil)
                    for (a, b) in zip(direct, reference) {
                        #expect(
                            a.k == b.k && a.thresholdBits == b.thresholdBits && a.greater == b.greater
                                && a.quota == b.quota && a.equal == b.equal && a.equalBefore == b.equalBefore,
                            "band minimum \(minimum), level \(level)")
                    }
                }
            }
        }
    }
}

extension Array where Element == [UInt16] {
    /// BF16 sources over copies of every element, valid inside `body`.
    func withBF16Sources<R>(_ body: ([TensorSource]) throws -> R) rethrows -> R {
        try map { d in d.withUnsafeBytes { [UInt8]($0) } }.withUnsafeBufferPointerArray { raws in
            try body(raws.map { TensorSource(bytes: $0, dtype: .BF16, count: $0.count / 2) })
        }
    }
}

extension Array where Element == [UInt8] {
    /// Raw buffers over every element, valid inside `body`.
    fileprivate func withUnsafeBufferPointerArray<R>(_ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R {
        // Two bytes in, so the inputs are 2- but not 4-byte aligned, as tensors in a mapped safetensors file may be.
        let copies = map { a in
            let p = UnsafeMutableRawBufferPointer.allocate(byteCount: a.count + 2, alignment: 4)
            a.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: p[2...]).copyMemory(from: $0) }
            return p
        }
        defer { copies.forEach { $0.deallocate() } }
        return try body(
            copies.enumerated().map { i, p in UnsafeRawBufferPointer(rebasing: p[2..<(2 + self[i].count)]) })
    }
}
