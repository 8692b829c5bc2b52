import CMergeKernels
import CheckpointIO

/// The merge pass of TIES, breadcrumbs and breadcrumbs_ties in one sweep from the mapped BF16 inputs into the BF16
/// output (C/AVX2, `FusedMaskedMerge.c`): each element is loaded once, masked by its magnitude thresholds, weighted
/// and sign-elected in registers.
///
/// The block path (`BlockStream`) widens every input into scratch, writes a 0/1 mask block per model and sweeps
/// the blocks again for the sum, the election and the output; on the 0.4 B BF16 TIES merge that was most of the
/// user time (docs/bench-merge.md). The kernel does the same IEEE operations in the same order, so the output is
/// bit-identical; ties at a threshold are kept in index order exactly as `MagnitudeTopK.mask` keeps them (per
/// block, the offset just past the last kept tie).
public enum MaskedMerge {
    /// One model's magnitude mask: keep `keep`'s entries minus `drop`'s.
    public struct Band: Sendable {
        public let keep: MagnitudeTopK
        public let drop: MagnitudeTopK?

        public init(keep: MagnitudeTopK, drop: MagnitudeTopK?) {
            self.keep = keep
            self.drop = drop
        }
    }

    /// The most models the kernel takes (its per-element values live on the stack).
    public static let maxModels = Int(TSWITCH_MASKED_MAX_MODELS)

    /// The kernel's level on this CPU: 2 (AVX-512), 1 (AVX2), or nil where only the block path runs (no AVX2, or
    /// `TSWITCH_FUSED_LEVEL=0`, as for `FusedStream`). `level1` runs AVX2 at any level from 1.
    public static let level: Int? = FusedStream.vectorLevel >= 1 ? FusedStream.vectorLevel : nil

    /// out = base + λ · combine(vᵢ), vᵢ = ((dᵢ · maskᵢ) · scaleᵢ) · wᵢ (dᵢ · wᵢ where `bands[i]` is nil); combine is
    /// TIES' sign election and disjoint mean (`consensus`, divided by the agreeing weights when `normalize`) or
    /// Σ vᵢ / `divide`. Returns false (and writes nothing) unless every input and the output are BF16 and there are
    /// 1-`maxModels` models; the caller then takes the block path.
    ///
    /// - Parameter level: 2 AVX-512, 1 AVX2 (at most `level`), 0 the kernel's scalar C loop (tests compare them).
    public static func bf16(
        base: TensorSource, models: [TensorSource], bands: [Band?], scales: [Float], weights: [Float],
        consensus: Bool, normalize: Bool, divide: Float, lambda: Float, into sink: TensorSink, level: Int
    ) -> Bool {
        precondition(level <= FusedStream.vectorLevel, "vector level not supported by this CPU")
        let m = models.count
        precondition(bands.count == m && scales.count == m && weights.count == m, "one band, scale, weight per model")
        let n = sink.count
        guard m >= 1, m <= maxModels, base.count == n, models.allSatisfy({ $0.count == n }),
            base.dtype == .BF16, sink.dtype == .BF16, models.allSatisfy({ $0.dtype == .BF16 }),
            let b = base.bytes.baseAddress, let out = sink.bytes.baseAddress
        else { return false }
        let xs = models.compactMap(\.bytes.baseAddress)
        guard xs.count == m else { return false }
        let bs = BlockStream.blockSize
        let blocks = BlockStream.blockCount(n)
        let context = UncheckedSendable((b, xs, out))
        Parallel.forEachChunk(blocks, minChunk: 4) { br in
            let (b, xs, out) = context.value
            var descs = (0..<m).map { i in
                tswitch_masked_model(
                    x: xs[i], weight: weights[i], scale: scales[i], masked: bands[i] == nil ? 0 : 1,
                    has_drop: bands[i]?.drop == nil ? 0 : 1, keep_bits: 0, keep_limit: 0, drop_bits: 0, drop_limit: 0)
            }
            for blk in br {
                let r = (blk * bs)..<min(n, (blk + 1) * bs)
                for i in 0..<m {
                    guard let band = bands[i] else { continue }
                    (descs[i].keep_bits, descs[i].keep_limit) = rule(band.keep, block: blk, r, base: b, x: xs[i])
                    if let drop = band.drop {
                        (descs[i].drop_bits, descs[i].drop_limit) = rule(drop, block: blk, r, base: b, x: xs[i])
                    }
                }
                descs.withUnsafeBufferPointer { d in
                    tswitch_masked_merge_bf16(
                        Int32(level), b, d.baseAddress, Int32(m), consensus ? 1 : 0, normalize ? 1 : 0, divide,
                        lambda, out, r.lowerBound, r.upperBound)
                }
            }
        }
        return true
    }

    /// How many level-1 tables `level1` spreads its counts over by default: with one, neighbouring elements (which
    /// mostly share a bucket) made each increment wait for the previous one's store.
    public static let level1Copies = 4

    /// The level-1 pass of a magnitude top-k over elements `r` of the BF16 task vector x − base, without widening
    /// into scratch (C, `tswitch_level1_bf16`): adds every |d|'s level-1 bucket to `histogram`, as
    /// `MagnitudeTopK.accumulateLevel1` does, and writes `tag | bits` of the entries of each of up to two bucket
    /// bands into `members[q]` (room for `r.count`), as `collectBand` does. Returns how many each band got.
    /// `histogram` is `copies` consecutive tables of `MagnitudeTopK.level1Buckets` counters; the histogram is
    /// their sum (`foldLevel1`).
    public static func level1(
        base: TensorSource, x: TensorSource, _ r: Range<Int>, into histogram: UnsafeMutablePointer<UInt32>,
        copies: Int = 1, bands: [ClosedRange<UInt32>], tag: UInt64, members: [UnsafeMutablePointer<UInt64>],
        level: Int
    ) -> [Int] {
        precondition(base.dtype == .BF16 && x.dtype == .BF16 && r.upperBound <= min(base.count, x.count))
        precondition(bands.count <= 2 && members.count >= bands.count, "at most two bands, each with a buffer")
        precondition((1...16).contains(copies), "1-16 level-1 tables")
        guard let b = base.bytes.baseAddress, let xp = x.bytes.baseAddress, !r.isEmpty else {
            return Array(repeating: 0, count: bands.count)
        }
        let lowest = bands.map(\.lowerBound) + [0, 0]
        let highest = bands.map(\.upperBound) + [0, 0]
        var counts = [Int](repeating: 0, count: 2)
        let slots = members.map { Optional($0) } + [nil, nil]
        counts.withUnsafeMutableBufferPointer { c in
            tswitch_level1_bf16(
                Int32(level), b, xp, r.lowerBound, r.upperBound, histogram, Int32(copies), lowest, highest,
                Int32(bands.count), tag, slots, c.baseAddress)
        }
        return Array(counts.prefix(bands.count))
    }

    /// The level of `bandCount` on this CPU: 2 AVX-512, 1 AVX2, or nil (no AVX2, or `TSWITCH_FUSED_LEVEL=0`).
    public static let bandLevel: Int? = FusedStream.vectorLevel >= 1 ? FusedStream.vectorLevel : nil

    /// The band pass of a magnitude top-k over elements `r` of the BF16 task vector x − base (C,
    /// `tswitch_band_count_bf16`): for each of one or two bucket bands, how many |d| lie above it, and `tag | bits`
    /// of its members written into `members[q]` (room for `r.count`). Cheaper than `level1`: no histogram, whose
    /// scalar increment per element was the cost of the level-1 pass; the threshold's bucket comes from the members.
    /// - Parameter level: 2 AVX-512, 1 AVX2, 0 the scalar C loop (all give the same result).
    /// With `histograms`, also adds each member's bucket − band.lowerBound to `histograms[q]` (band width counters).
    public static func bandCount(
        base: TensorSource, x: TensorSource, _ r: Range<Int>, bands: [ClosedRange<UInt32>], tag: UInt64,
        members: [UnsafeMutablePointer<UInt64>], histograms: [UnsafeMutablePointer<UInt32>]? = nil, level: Int
    ) -> [(members: Int, above: Int)] {
        precondition(base.dtype == .BF16 && x.dtype == .BF16 && r.upperBound <= min(base.count, x.count))
        precondition(
            (1...2).contains(bands.count) && members.count >= bands.count, "one or two bands, each with a buffer")
        precondition(bands.allSatisfy { $0.upperBound < UInt32(MagnitudeTopK.level1Buckets) }, "bucket out of range")
        precondition(level <= FusedStream.vectorLevel, "vector level not supported by this CPU")
        guard let b = base.bytes.baseAddress, let xp = x.bytes.baseAddress, !r.isEmpty else {
            return Array(repeating: (0, 0), count: bands.count)
        }
        let lowest = bands.map(\.lowerBound) + [0]
        let highest = bands.map(\.upperBound) + [0]
        var counts = [Int](repeating: 0, count: 2)
        var above = [UInt64](repeating: 0, count: 2)
        precondition(histograms.map { $0.count >= bands.count } ?? true, "one histogram per band")
        let slots = members.map { Optional($0) } + [nil]
        let tables: [UnsafeMutablePointer<UInt32>?] = (histograms?.map { Optional($0) } ?? []) + [nil, nil]
        counts.withUnsafeMutableBufferPointer { c in
            above.withUnsafeMutableBufferPointer { a in
                tswitch_band_count_bf16(
                    Int32(level), b, xp, r.lowerBound, r.upperBound, lowest, highest, Int32(bands.count), tag, slots,
                    c.baseAddress, a.baseAddress, tables)
            }
        }
        return (0..<bands.count).map { (counts[$0], Int(above[$0])) }
    }

    /// Adds the `copies` tables at `tables` (as `level1` fills them) into `histogram`.
    public static func foldLevel1(
        _ tables: UnsafePointer<UInt32>, copies: Int, into histogram: UnsafeMutablePointer<UInt32>
    ) {
        let l1 = MagnitudeTopK.level1Buckets
        for c in 0..<copies {
            let t = tables + c * l1
            for j in 0..<l1 { histogram[j] &+= t[j] }
        }
    }

    /// A selection as the kernel's (threshold, tie limit) for one block, with `MagnitudeTopK.mask`'s semantics:
    /// |d| above the threshold is kept; equal entries are all kept, none, or the first `quota − equalBefore[block]`
    /// of the block (the limit is then the offset just past the last kept one, found by scanning that one block).
    static func rule(
        _ s: MagnitudeTopK, block: Int, _ r: Range<Int>, base: UnsafeRawPointer, x: UnsafeRawPointer
    ) -> (Int32, Int32) {
        if s.greater >= s.k, s.thresholdBits == 0, s.k > 0 { return (0, .max) }
        guard s.thresholdBits <= 0x7FFF_FFFF else { return (0x7FFF_FFFF, 0) }
        let t = Int32(s.thresholdBits)
        guard s.needsTieBreak else { return (t, .max) }
        guard s.quota > 0, let before = s.equalBefore else { return (t, 0) }
        let seen = before[block]
        guard seen < s.quota else { return (t, 0) }
        let after = block + 1 < before.count ? before[block + 1] : s.equal
        if after <= s.quota { return (t, .max) }
        var left = s.quota - seen
        for j in r {
            let b = DTypeConversion.floatFromBFloat16Bits(base.loadUnaligned(fromByteOffset: j * 2, as: UInt16.self))
            let v = DTypeConversion.floatFromBFloat16Bits(x.loadUnaligned(fromByteOffset: j * 2, as: UInt16.self))
            guard (v - b).bitPattern & 0x7FFF_FFFF == s.thresholdBits else { continue }
            left -= 1
            if left == 0 { return (t, Int32(j - r.lowerBound + 1)) }
        }
        return (t, .max)
    }
}
