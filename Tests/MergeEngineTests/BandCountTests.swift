import CheckpointIO
import Foundation
import TensorKernels
import Testing

@testable import MergeEngine

/// The band-count route of the top-k (`MaskedMerge.bandCount`, C: AVX-512, AVX2, scalar; `GTA.selectInBands`)
/// against widened Swift loops, the histogram route and a stable sort: band misses, overflows, all-equal values,
/// NaN and infinities.
@Suite("TIES top-k: band-count route equals the histogram route and a sort")
struct BandCountTests {
    /// Every level of `bandCount` this CPU runs (0 is the scalar C loop).
    static var levels: [Int] { (0...(MaskedMerge.bandLevel ?? 0)).map { $0 } }

    /// |x − base| bits of element j, widened as the merge does.
    static func magnitude(_ base: [UInt16], _ x: [UInt16], _ j: Int) -> UInt32 {
        (Float(bitPattern: UInt32(x[j]) << 16) - Float(bitPattern: UInt32(base[j]) << 16)).bitPattern & 0x7FFF_FFFF
    }

    /// `MaskedMergeTests.inputs` with NaN, ±inf and huge values planted in model 0 (and one NaN in the base).
    static func inputsWithSpecials(_ n: Int, seed: UInt64) -> [[UInt16]] {
        var data = MaskedMergeTests.inputs(n, seed: seed)
        for j in stride(from: 7, to: n, by: 1009) { data[1][j] = 0x7FC0 }  // NaN
        for j in stride(from: 11, to: n, by: 2003) { data[1][j] = 0x7F80 }  // +inf
        for j in stride(from: 13, to: n, by: 3001) { data[1][j] = 0xFF80 }  // -inf
        for j in stride(from: 17, to: n, by: 997) { data[1][j] = 0x4700 }  // 32768
        data[0][n / 2] = 0xFFC1  // a NaN base: every model's d is NaN there
        return data
    }

    @Test("counts above and members of each band equal a widened loop, at odd lengths, offsets and edge buckets")
    func kernelMatchesLoop() {
        let n = 3 * BlockStream.blockSize + 21
        let data = Self.inputsWithSpecials(n, seed: 3)
        let bandSets: [[ClosedRange<UInt32>]] = [
            [0x3B00...0x3B7F, 0x3A80...0x3AFF], [0x3B40...0x3B40], [0...0x3A00, 0x7F00...0x7FFF], [0...0x7FFF],
        ]
        data.withBF16Sources { s in
            for bands in bandSets {
                for r in [0..<n, 5..<5, 3..<20, 16..<(16 + BlockStream.blockSize), 17..<(n - 3), 1..<(n - 1)] {
                    for model in [1, 3] {
                        var refAbove = [Int](repeating: 0, count: bands.count)
                        var refMembers = [[UInt64]](repeating: [], count: bands.count)
                        for j in r {
                            let a = Self.magnitude(data[0], data[model], j)
                            for (q, band) in bands.enumerated() {
                                if a >> 16 > band.upperBound {
                                    refAbove[q] += 1
                                } else if band.contains(a >> 16) {
                                    refMembers[q].append(5 << 32 | UInt64(a))
                                }
                            }
                        }
                        for level in Self.levels {
                            let buf = (0..<2).map { _ in
                                UnsafeMutablePointer<UInt64>.allocate(capacity: max(1, r.count))
                            }
                            defer { buf.forEach { $0.deallocate() } }
                            let tables = bands.map { b in
                                let t = UnsafeMutablePointer<UInt32>.allocate(capacity: b.count)
                                t.initialize(repeating: 1, count: b.count)  // the kernel adds to what is there
                                return t
                            }
                            defer { tables.forEach { $0.deallocate() } }
                            let got = MaskedMerge.bandCount(
                                base: s[0], x: s[model], r, bands: bands, tag: 5 << 32, members: buf,
                                histograms: tables, level: level)
                            for q in 0..<bands.count {
                                let members = Array(UnsafeBufferPointer(start: buf[q], count: got[q].members))
                                #expect(got[q].above == refAbove[q], "range \(r) level \(level) band \(bands[q])")
                                #expect(
                                    members.sorted() == refMembers[q].sorted(),
                                    "range \(r) level \(level) band \(bands[q])")
                                var refHist = [UInt32](repeating: 1, count: bands[q].count)
                                for e in refMembers[q] {
                                    refHist[Int(UInt32(e & 0xFFFF_FFFF) >> 16 - bands[q].lowerBound)] += 1
                                }
                                #expect(
                                    Array(UnsafeBufferPointer(start: tables[q], count: bands[q].count)) == refHist,
                                    "range \(r) level \(level) band \(bands[q]) histogram")
                            }
                        }
                    }
                }
            }
        }
    }

    /// The top-k of |x − base| by a stable sort (largest bits first, ties in index order), as kept entries.
    static func reference(_ base: [UInt16], _ x: [UInt16], k: Int) -> [Bool] {
        let n = base.count
        let keys = (0..<n).map { magnitude(base, x, $0) }
        let order = (0..<n).sorted { keys[$0] != keys[$1] ? keys[$0] > keys[$1] : $0 < $1 }
        var keep = [Bool](repeating: false, count: n)
        for j in order.prefix(k) { keep[j] = true }
        return keep
    }

    /// The entries a selection keeps, block by block as the merge pass applies it.
    static func kept(_ sel: MagnitudeTopK, _ base: [UInt16], _ x: [UInt16]) -> [Bool] {
        let n = base.count
        var keep = [Bool](repeating: false, count: n)
        var seen = 0
        for blk in 0..<BlockStream.blockCount(n) {
            let r = (blk * BlockStream.blockSize)..<min(n, (blk + 1) * BlockStream.blockSize)
            if let before = sel.equalBefore { #expect(before[blk] == seen) }
            for j in r {
                let a = magnitude(base, x, j)
                if a > sel.thresholdBits {
                    keep[j] = true
                } else if a == sel.thresholdBits {
                    keep[j] = !sel.needsTieBreak || seen < sel.quota
                    seen += 1
                }
            }
        }
        return keep
    }

    static func same(_ a: MagnitudeTopK, _ b: MagnitudeTopK) -> Bool {
        a.k == b.k && a.thresholdBits == b.thresholdBits && a.greater == b.greater && a.quota == b.quota
            && a.equal == b.equal && a.equalBefore == b.equalBefore
    }

    @Test("selectTopK: band-count route equals the histogram route and a sort, with NaN and infinities")
    func selectionsMatchWithSpecials() {
        let n = 20 * BlockStream.blockSize + 777
        let data = Self.inputsWithSpecials(n, seed: 41)
        let requests: [(model: Int, k: Int)] = [
            (0, Int(0.3 * Double(n))), (1, Int(0.3 * Double(n))), (2, Int(0.3 * Double(n))),
            (0, n - Int(0.2 * Double(n))), (0, 5), (2, n),
        ]
        data.withBF16Sources { s in
            let histogram = GTA.selectTopK(
                n: n, base: s[0], models: Array(s[1...]), requests: requests, bandMinimum: .max, bandLevel: nil)
            let bands = GTA.estimateBands(n: n, sources: s, wanted: [0, 1, 2], requests: requests)
            #expect(bands[0] != nil && bands[1] != nil, "the 30 % requests are banded")
            for level in Self.levels {
                let counted = GTA.selectTopK(
                    n: n, base: s[0], models: Array(s[1...]), requests: requests, bandMinimum: 0, bandLevel: level)
                let direct = GTA.selectInBands(n: n, sources: s, requests: requests, bands: bands, level: level)
                for qi in 0..<requests.count {
                    #expect(Self.same(counted[qi], histogram[qi]), "request \(qi) level \(level)")
                    if let d = direct[qi] { #expect(Self.same(d, histogram[qi]), "request \(qi) level \(level)") }
                }
                #expect(direct[0] != nil && direct[1] != nil, "the 30 % requests are settled in their bands")
            }
            for (qi, q) in requests.enumerated() {
                let expected = Self.reference(data[0], data[1 + q.model], k: q.k)
                #expect(Self.kept(histogram[qi], data[0], data[1 + q.model]) == expected, "request \(qi)")
            }
        }
    }

    @Test("a band that misses its threshold, or overflows its cap, is not settled; selectTopK still exact")
    func missesFallBack() {
        let n = 40 * BlockStream.blockSize + 99
        let data = MaskedMergeTests.inputs(n, seed: 23)
        let k = Int(0.3 * Double(n))
        let requests: [(model: Int, k: Int)] = [(0, k), (1, k)]
        data.withBF16Sources { s in
            let histogram = GTA.selectTopK(
                n: n, base: s[0], models: Array(s[1...]), requests: requests, bandMinimum: .max, bandLevel: nil)
            let bucket = histogram[0].thresholdBits >> 16
            let cases: [(String, [(band: ClosedRange<UInt32>, expected: Int)?], Bool)] = [
                ("exact", [((bucket - 2)...(bucket + 2), n / 50), nil], true),
                ("band above the threshold", [((bucket + 1)...(bucket + 40), n / 50), nil], false),
                ("band below the threshold", [((bucket - 40)...(bucket - 1), n / 50), nil], false),
                ("one-bucket band on the threshold", [(bucket...bucket, n / 50), nil], true),
                ("members overflow the cap", [(0...0x7FFF, 0), nil], false),
            ]
            for (name, bands, settles) in cases {
                for level in Self.levels {
                    let got = GTA.selectInBands(n: n, sources: s, requests: requests, bands: bands, level: level)
                    #expect(got[1] == nil, "\(name): an unbanded request is not settled")
                    if settles {
                        #expect(got[0].map { Self.same($0, histogram[0]) } == true, "\(name) level \(level)")
                    } else {
                        #expect(got[0] == nil, "\(name) level \(level)")
                    }
                }
            }
        }
    }

    @Test("all-equal task vectors and tiny tensors: the fallback gives the histogram route's selections")
    func allEqualAndTiny() {
        for (n, allZero) in [(20 * BlockStream.blockSize + 5, true), (37, false), (BlockStream.blockSize + 1, false)] {
            let data = MaskedMergeTests.inputs(n, seed: 8, allZero: allZero)
            let requests: [(model: Int, k: Int)] = [(0, max(1, Int(0.3 * Double(n)))), (2, n - 1)]
            data.withBF16Sources { s in
                let histogram = GTA.selectTopK(
                    n: n, base: s[0], models: Array(s[1...]), requests: requests, bandMinimum: .max, bandLevel: nil)
                for level in Self.levels {
                    let counted = GTA.selectTopK(
                        n: n, base: s[0], models: Array(s[1...]), requests: requests, bandMinimum: 0, bandLevel: level)
                    for qi in 0..<requests.count {
                        #expect(Self.same(counted[qi], histogram[qi]), "n \(n) request \(qi) level \(level)")
                    }
                }
                for (qi, q) in requests.enumerated() {
                    let expected = Self.reference(data[0], data[1 + q.model], k: q.k)
                    #expect(Self.kept(histogram[qi], data[0], data[1 + q.model]) == expected, "n \(n) request \(qi)")
                }
            }
        }
    }
}
