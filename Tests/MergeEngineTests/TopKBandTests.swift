import CheckpointIO
import Foundation
import TensorKernels
import Testing

@testable import MergeEngine

/// The sampled-band route of `GTA.selectTopK` (the level-2 histogram from members collected in the level-1 pass)
/// against the level-2-pass route and against a sort, on BF16 task vectors full of exact magnitude ties.
@Suite("TIES top-k: band route equals the level-2 route and a stable sort, bit for bit")
struct TopKBandTests {
    static let n = 16 * BlockStream.blockSize * 2 + 12_345  // 32 full blocks and a partial one

    /// BF16 bits of base and three fine-tunes, ties at every magnitude (`MaskedMergeTests.inputs`, seed 15).
    static func inputs() -> [[UInt16]] { MaskedMergeTests.inputs(n, seed: 15) }

    /// The top-k of |x − base| by a stable sort: largest |d| bits first, ties in index order.
    static func reference(_ base: [UInt16], _ x: [UInt16], k: Int) -> [Bool] {
        let keys = (0..<n).map { j in
            (Float(bitPattern: UInt32(x[j]) << 16) - Float(bitPattern: UInt32(base[j]) << 16)).bitPattern & 0x7FFF_FFFF
        }
        let order = (0..<n).sorted { keys[$0] != keys[$1] ? keys[$0] > keys[$1] : $0 < $1 }
        var keep = [Bool](repeating: false, count: n)
        for j in order.prefix(k) { keep[j] = true }
        return keep
    }

    /// The kept entries of one selection, block by block as the merge pass applies it.
    static func kept(_ sel: MagnitudeTopK, base: TensorSource, x: TensorSource) -> [Bool] {
        var keep = [Bool](repeating: false, count: n)
        let bs = BlockStream.blockSize
        let b = UnsafeMutablePointer<Float>.allocate(capacity: 3 * bs)
        defer { b.deallocate() }
        for blk in 0..<BlockStream.blockCount(n) {
            let r = (blk * bs)..<min(n, (blk + 1) * bs)
            base.read(r, into: b)
            x.read(r, into: b + bs)
            GTA.subtractInPlace(b + bs, b, r.count)
            sel.mask(b + bs, count: r.count, block: blk, into: b + 2 * bs)
            for j in 0..<r.count { keep[r.lowerBound + j] = b[2 * bs + j] == 1 }
        }
        return keep
    }

    @Test("TIES and breadcrumbs requests, with ties at every threshold")
    func bandRouteMatches() throws {
        let data = Self.inputs()
        let n = Self.n
        let requests: [(model: Int, k: Int)] = [
            (0, Int(0.3 * Double(n))), (1, Int(0.3 * Double(n))), (2, Int(0.3 * Double(n))),
            (2, n - Int(0.2 * Double(n))), (1, Int(0.01 * Double(n))), (0, Int(0.9 * Double(n))),
        ]
        let buffers = data.map { d in
            let p = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: n)
            _ = p.initialize(from: d)
            return p
        }
        defer { buffers.forEach { $0.deallocate() } }
        let sources = buffers.map { TensorSource(bytes: UnsafeRawBufferPointer($0), dtype: .BF16, count: n) }
        let viaPass = GTA.selectTopK(
            n: n, base: sources[0], models: Array(sources[1...]), requests: requests, bandMinimum: .max)
        let viaBand = GTA.selectTopK(
            n: n, base: sources[0], models: Array(sources[1...]), requests: requests, bandMinimum: 0, bandLevel: nil)
        // The band-count route (no level-1 histogram) at every level this CPU has.
        let viaCount = BandCountTests.levels.map { level in
            GTA.selectTopK(
                n: n, base: sources[0], models: Array(sources[1...]), requests: requests, bandMinimum: 0,
                bandLevel: level)
        }
        let bands = GTA.estimateBands(n: n, sources: sources, wanted: [0, 1, 2], requests: requests)
        for (qi, q) in requests.enumerated() {
            let a = viaPass[qi]
            let b = viaBand[qi]
            // The band route is taken (its band holds the exact bucket) except for request 3, whose threshold lies
            // among model 2's exact zeros (a third of its entries): that band would collect too much, so it falls
            // back to the level-2 pass. Either way the threshold sits on a tie.
            if let band = bands[qi]?.band {
                #expect(qi != 3, "request 3 should fall back")
                #expect(band.contains(a.thresholdBits >> 16), "request \(qi): band \(band) misses the threshold")
            } else {
                #expect(qi == 3, "request \(qi) fell back to the level-2 pass")
            }
            #expect(a.needsTieBreak, "request \(qi): no tie at the threshold")
            #expect(a.thresholdBits == b.thresholdBits && a.greater == b.greater && a.quota == b.quota)
            #expect(a.equal == b.equal && a.equalBefore == b.equalBefore)
            for (li, counted) in viaCount.enumerated() {
                let c = counted[qi]
                #expect(
                    a.thresholdBits == c.thresholdBits && a.greater == c.greater && a.quota == c.quota
                        && a.equal == c.equal && a.equalBefore == c.equalBefore,
                    "request \(qi), band-count level \(BandCountTests.levels[li])")
            }
            let expected = Self.reference(data[0], data[1 + q.model], k: q.k)
            #expect(Self.kept(b, base: sources[0], x: sources[1 + q.model]) == expected, "request \(qi)")
            #expect(Self.kept(a, base: sources[0], x: sources[1 + q.model]) == expected, "request \(qi)")
        }
    }
}
