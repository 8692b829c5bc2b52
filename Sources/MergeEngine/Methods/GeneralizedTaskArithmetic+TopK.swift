import CheckpointIO
import TensorKernels

extension GTA {
    /// Tensors of at least this many elements estimate each threshold's level-1 bucket from a sample first.
    static let bandMinimum = 1 << 18
    /// One block in this many is sampled for the estimate.
    static let sampleStride = 16

    /// Finds every requested top-k of |xᵢ − base|, exactly (ties at the threshold kept in index order).
    ///
    /// Large BF16 tensors take the band route when `bandLevel` is set (AVX2 or AVX-512): a sample (one block in
    /// `sampleStride`) estimates a band of level-1 buckets around each threshold, and one pass counts the entries
    /// above each band and collects its members (`selectInBands`), no histogram. A request whose band misses its
    /// threshold, overflows, or has no band takes the histogram route below; the result is the same either way.
    static func selectTopK(
        n: Int, base: TensorSource, models: [TensorSource], requests: [(model: Int, k: Int)],
        bandMinimum: Int = GTA.bandMinimum, directLevel: Int? = MaskedMerge.level,
        bandLevel: Int? = MaskedMerge.bandLevel
    ) -> [MagnitudeTopK] {
        let sources = [base] + models
        guard let level = bandLevel, n >= bandMinimum, BlockStream.blockCount(n) >= sampleStride,
            sources.allSatisfy({ $0.dtype == .BF16 })
        else {
            return selectTopKHistogram(
                n: n, base: base, models: models, requests: requests, bandMinimum: bandMinimum,
                directLevel: directLevel)
        }
        let wanted = Array(Set(requests.map(\.model))).sorted()
        let bands = estimateBands(n: n, sources: sources, wanted: wanted, requests: requests)
        var result = selectInBands(n: n, sources: sources, requests: requests, bands: bands, level: level)
        let missed = (0..<requests.count).filter { result[$0] == nil }
        if !missed.isEmpty {
            // The sampled bands would miss again: the full histogram and the level-2 pass.
            let rest = selectTopKHistogram(
                n: n, base: base, models: models, requests: missed.map { requests[$0] }, bandMinimum: .max,
                directLevel: directLevel)
            for (j, qi) in missed.enumerated() { result[qi] = rest[j] }
        }
        return result.map { $0 ?? .none }
    }

    /// Each banded request's exact top-k from one pass that counts the entries above its band and collects the
    /// band's members (`MaskedMerge.bandCount`, BF16 sources); nil where the band does not hold the k-th largest
    /// (fewer than k entries above its lower edge, or k or more above its upper edge), where its members overflow
    /// the cap, where it has no band, or for a model's third banded request. Counting above the band and locating
    /// within it finds the same bucket as the full level-1 histogram, so the selection is the histogram route's.
    static func selectInBands(
        n: Int, sources: [TensorSource], requests: [(model: Int, k: Int)],
        bands: [(band: ClosedRange<UInt32>, expected: Int)?], level: Int
    ) -> [MagnitudeTopK?] {
        let nq = requests.count
        let m = sources.count - 1
        let bs = BlockStream.blockSize
        let workers = BlockStream.workerCount(n)
        let blocks = BlockStream.blockCount(n)
        let byModel = (0..<m).map { i in
            Array((0..<nq).filter { requests[$0].model == i && bands[$0] != nil }.prefix(2))
        }
        // Per worker and request, a buffer the kernel appends members to (its pages are touched only as filled);
        // full when fewer than a block's room is left, then that request is not settled.
        let caps = bands.map { b in b.map { 3 * $0.expected / max(1, workers) + (1 << 16) + bs } ?? 0 }
        let buffers = (0..<(workers * nq)).map { slot in
            UnsafeMutablePointer<UInt64>.allocate(capacity: max(1, caps[slot % nq]))
        }
        // Per worker and request, the band's own histogram (the kernel counts each block's members while hot).
        let widths = bands.map { b in b.map { Int($0.band.upperBound - $0.band.lowerBound) + 1 } ?? 1 }
        let tables = (0..<(workers * nq)).map { slot in
            let t = UnsafeMutablePointer<UInt32>.allocate(capacity: widths[slot % nq])
            t.initialize(repeating: 0, count: widths[slot % nq])
            return t
        }
        defer {
            buffers.forEach { $0.deallocate() }
            tables.forEach { $0.deallocate() }
        }
        var filled = [Int](repeating: 0, count: workers * nq)
        var complete = [Bool](repeating: true, count: workers * nq)
        var above = [Int](repeating: 0, count: workers * nq)
        filled.withUnsafeMutableBufferPointer { fb in
            complete.withUnsafeMutableBufferPointer { cb in
                above.withUnsafeMutableBufferPointer { ab in
                    let out = UncheckedSendable((fb, cb, ab, buffers, tables))
                    BlockStream.run(count: n, sources: [], extra: 0) { w, blk, r, _ in
                        let (filled, complete, above, buffers, tables) = out.value
                        for i in 0..<m where !byModel[i].isEmpty {
                            let live = byModel[i]
                            for qi in live where caps[qi] - filled[w * nq + qi] < r.count {
                                complete[w * nq + qi] = false
                                filled[w * nq + qi] = 0
                            }
                            let got = MaskedMerge.bandCount(
                                base: sources[0], x: sources[1 + i], r, bands: live.compactMap { bands[$0]?.band },
                                tag: UInt64(blk) << 32,
                                members: live.map { buffers[w * nq + $0] + filled[w * nq + $0] },
                                histograms: live.map { tables[w * nq + $0] }, level: level)
                            for (q, qi) in live.enumerated() {
                                let slot = w * nq + qi
                                above[slot] += got[q].above
                                if complete[slot] { filled[slot] += got[q].members }
                            }
                        }
                    }
                }
            }
        }
        // Request qi's exact selection from its band, or nil where the band does not settle it.
        func settle(_ qi: Int) -> MagnitudeTopK? {
            guard let band = bands[qi]?.band, (0..<workers).allSatisfy({ complete[$0 * nq + qi] }) else { return nil }
            let slots = (0..<workers).map {
                UnsafeBufferPointer(start: buffers[$0 * nq + qi], count: filled[$0 * nq + qi])
            }
            let k = requests[qi].k
            var count1 = [Int](repeating: 0, count: widths[qi])
            var aboveBand = 0
            for w in 0..<workers {
                aboveBand += above[w * nq + qi]
                for b in 0..<widths[qi] { count1[b] += Int(tables[w * nq + qi][b]) }
            }
            // The bucket holding the k-th largest, scanning down from the band's top as `locate` does.
            var above1 = aboveBand
            var bucket1: Int? = nil
            for b in stride(from: count1.count - 1, through: 0, by: -1) {
                if above1 + count1[b] >= k {
                    bucket1 = Int(band.lowerBound) + b
                    break
                }
                above1 += count1[b]
            }
            guard aboveBand < k, let bucket = bucket1 else { return nil }
            let b1 = UInt64(bucket)
            // One scan of the members: the threshold bucket's level-2 histogram, and its members kept for the ties.
            var hist2 = [Int](repeating: 0, count: MagnitudeTopK.level2Buckets)
            var inBucket: [UInt64] = []
            inBucket.reserveCapacity(count1[bucket - Int(band.lowerBound)])
            hist2.withUnsafeMutableBufferPointer { h in
                for slot in slots {
                    for e in slot where (e >> 16) & 0x7FFF == b1 {
                        h[Int(e & 0xFFFF)] += 1
                        inBucket.append(e)
                    }
                }
            }
            var sel = MagnitudeTopK.resolve(k: k, level1: [], level2: hist2, bucket1: bucket, above1: above1)
            if sel.needsTieBreak {
                var counts = [Int](repeating: 0, count: blocks)
                let t = UInt64(sel.thresholdBits)
                counts.withUnsafeMutableBufferPointer { c in
                    for e in inBucket where e & 0xFFFF_FFFF == t { c[Int(e >> 32)] += 1 }
                }
                sel.equalBefore = Self.countsBefore(counts)
            }
            return sel
        }
        // The requests' members are scanned on all cores, one request per chunk (each writes its own result slot).
        let settled = (0..<m).flatMap { byModel[$0] }
        var result = [MagnitudeTopK?](repeating: nil, count: nq)
        result.withUnsafeMutableBufferPointer { rb in
            let out = UncheckedSendable(rb)
            Parallel.forEachChunk(settled.count, minChunk: 1) { chunk in
                for qi in settled[chunk] {
                    out.value[qi] = settle(qi)
                }
            }
        }
        return result
    }

    /// The histogram route of `selectTopK` (every dtype; the fallback of the band route).
    ///
    /// Large tensors take two passes over the inputs: a sample (one block in `sampleStride`) estimates a band of
    /// level-1 buckets around each threshold; the level-1 pass then also collects every entry inside that band,
    /// which is what the level-2 pass and the tie counts need. Requests whose exact bucket falls outside their
    /// band (or whose band overflows) get the level-2 pass as before (small tensors always do); the result is the
    /// same either way. `bandMinimum` is a parameter so tests can run both routes on one input.
    /// `directLevel` (AVX2 where the CPU has it) runs the level-1 pass straight from BF16 inputs
    /// (`MaskedMerge.level1`); nil widens every block into scratch first (tests compare them).
    static func selectTopKHistogram(
        n: Int, base: TensorSource, models: [TensorSource], requests: [(model: Int, k: Int)],
        bandMinimum: Int = GTA.bandMinimum, directLevel: Int? = MaskedMerge.level
    ) -> [MagnitudeTopK] {
        let sources = [base] + models
        let wanted = Array(Set(requests.map(\.model))).sorted()
        let workers = BlockStream.workerCount(n)
        let blocks = BlockStream.blockCount(n)
        let l1 = MagnitudeTopK.level1Buckets
        let nq = requests.count
        let bands: [(band: ClosedRange<UInt32>, expected: Int)?] =
            n >= bandMinimum && blocks >= sampleStride
            ? estimateBands(n: n, sources: sources, wanted: wanted, requests: requests)
            : Array(repeating: nil, count: nq)
        let banded = (0..<nq).filter { bands[$0] != nil }
        var fusedBand = [Int?](repeating: nil, count: models.count)
        for qi in banded where fusedBand[requests[qi].model] == nil { fusedBand[requests[qi].model] = qi }
        let separate = banded.filter { fusedBand[requests[$0].model] != $0 }
        let caps = bands.map { b in b.map { 3 * $0.expected / max(1, workers) + (1 << 16) } ?? 0 }
        // Level 1: one histogram per model per worker, and the band members per request per worker.
        var h1 = [UInt32](repeating: 0, count: workers * models.count * l1)
        var bandMembers = [[UInt64]](repeating: [], count: workers * nq)
        var bandComplete = [Bool](repeating: true, count: workers * nq)
        h1.withUnsafeMutableBufferPointer { h in
            guard let hp = h.baseAddress else { return }
            let H = UncheckedSendable(hp)
            bandMembers.withUnsafeMutableBufferPointer { mb in
                bandComplete.withUnsafeMutableBufferPointer { cb in
                    let M = UncheckedSendable(mb)
                    let C = UncheckedSendable(cb)
                    if let level = directLevel, sources.allSatisfy({ $0.dtype == .BF16 }) {
                        level1Direct(
                            n: n, sources: sources, wanted: wanted, requests: requests, bands: bands.map { $0?.band },
                            caps: caps, level: level, histograms: H.value, members: M.value, complete: C.value)
                        return
                    }
                    BlockStream.run(count: n, sources: sources) { w, blk, r, b in
                        for i in wanted {
                            subtractInPlace(b[1 + i], b[0], r.count)
                            let hist = H.value + (w * models.count + i) * l1
                            // The model's first band is collected inside the histogram loop, any second one after it.
                            if let qi = fusedBand[i], let band = bands[qi]?.band, C.value[w * nq + qi] {
                                C.value[w * nq + qi] = MagnitudeTopK.accumulateLevel1(
                                    b[1 + i], count: r.count, into: hist, lowest: band.lowerBound,
                                    highest: band.upperBound,
                                    block: blk, members: &M.value[w * nq + qi], cap: caps[qi])
                            } else {
                                MagnitudeTopK.accumulateLevel1(b[1 + i], count: r.count, into: hist)
                            }
                        }
                        for qi in separate where C.value[w * nq + qi] {
                            guard let band = bands[qi]?.band else { continue }
                            C.value[w * nq + qi] = MagnitudeTopK.collectBand(
                                b[1 + requests[qi].model], count: r.count, lowest: band.lowerBound,
                                highest: band.upperBound,
                                block: blk, members: &M.value[w * nq + qi], cap: caps[qi])
                        }
                    }
                }
            }
        }
        var located: [(bucket: Int, above: Int)] = []
        for q in requests {
            var hist = [Int](repeating: 0, count: l1)
            for w in 0..<workers {
                let off = (w * models.count + q.model) * l1
                for j in 0..<l1 { hist[j] += Int(h1[off + j]) }
            }
            located.append(MagnitudeTopK.locate(hist, k: q.k))
        }
        let l2 = MagnitudeTopK.level2Buckets
        var result = [MagnitudeTopK?](repeating: nil, count: nq)
        // Per request, how many threshold-equal entries each block holds (only where a tie-break is needed).
        var tieCounts = [[Int]?](repeating: nil, count: nq)
        // Requests whose band holds the exact bucket: the level-2 histogram and the tie counts from its members.
        for qi in banded {
            guard let band = bands[qi]?.band, band.contains(UInt32(located[qi].bucket)),
                (0..<workers).allSatisfy({ bandComplete[$0 * nq + qi] })
            else { continue }
            let b1 = UInt64(located[qi].bucket)
            var hist2 = [Int](repeating: 0, count: l2)
            for w in 0..<workers {
                for e in bandMembers[w * nq + qi] where (e >> 16) & 0x7FFF == b1 { hist2[Int(e & 0xFFFF)] += 1 }
            }
            let sel = MagnitudeTopK.resolve(
                k: requests[qi].k, level1: [], level2: hist2, bucket1: located[qi].bucket, above1: located[qi].above)
            if sel.needsTieBreak {
                var counts = [Int](repeating: 0, count: blocks)
                let t = UInt64(sel.thresholdBits)
                for w in 0..<workers {
                    for e in bandMembers[w * nq + qi] where e & 0xFFFF_FFFF == t { counts[Int(e >> 32)] += 1 }
                }
                tieCounts[qi] = counts
            }
            result[qi] = sel
        }
        bandMembers = []
        // The rest: level 2, one histogram per request per worker; bucket members are remembered (up to a cap) so
        // that ties at the threshold can be counted per block without a third pass.
        let pending = (0..<nq).filter { result[$0] == nil }
        let np = pending.count
        if np > 0 {
            let pendingModels = Array(Set(pending.map { requests[$0].model })).sorted()
            var h2 = [UInt32](repeating: 0, count: workers * np * l2)
            let cap = max(1 << 16, n / 64)
            var members = [[UInt64]](repeating: [], count: workers * np)
            var complete = [Bool](repeating: true, count: workers * np)
            h2.withUnsafeMutableBufferPointer { h in
                guard let hp = h.baseAddress else { return }
                let H = UncheckedSendable(hp)
                members.withUnsafeMutableBufferPointer { mb in
                    complete.withUnsafeMutableBufferPointer { cb in
                        let M = UncheckedSendable(mb)
                        let C = UncheckedSendable(cb)
                        BlockStream.run(count: n, sources: sources) { w, blk, r, b in
                            for i in pendingModels { subtractInPlace(b[1 + i], b[0], r.count) }
                            for (pi, qi) in pending.enumerated() {
                                let slot = w * np + pi
                                let x = b[1 + requests[qi].model]
                                let bucket = UInt32(located[qi].bucket)
                                if C.value[slot] {
                                    C.value[slot] = MagnitudeTopK.accumulateLevel2(
                                        x, count: r.count, bucket: bucket, into: H.value + slot * l2,
                                        members: &M.value[slot],
                                        block: blk, cap: cap)
                                } else {
                                    MagnitudeTopK.accumulateLevel2(
                                        x, count: r.count, bucket: bucket, into: H.value + slot * l2)
                                }
                            }
                        }
                    }
                }
            }
            for (pi, qi) in pending.enumerated() {
                var hist2 = [Int](repeating: 0, count: l2)
                for w in 0..<workers {
                    let off = (w * np + pi) * l2
                    for j in 0..<l2 { hist2[j] += Int(h2[off + j]) }
                }
                result[qi] = MagnitudeTopK.resolve(
                    k: requests[qi].k, level1: [], level2: hist2, bucket1: located[qi].bucket, above1: located[qi].above
                )
            }
            // Ties at the threshold: counted per block from the remembered bucket members when none overflowed,
            // else with one more pass.
            let tied = pending.enumerated().filter { result[$0.element]?.needsTieBreak == true }
            let fromMembers = tied.allSatisfy { pi, _ in (0..<workers).allSatisfy { complete[$0 * np + pi] } }
            if !tied.isEmpty, fromMembers {
                for (pi, qi) in tied {
                    guard let sel = result[qi] else { continue }
                    var counts = [Int](repeating: 0, count: blocks)
                    let low = UInt64(sel.thresholdBits & 0xFFFF)
                    for w in 0..<workers {
                        for e in members[w * np + pi] where e & 0xFFFF == low { counts[Int(e >> 16)] += 1 }
                    }
                    tieCounts[qi] = counts
                }
            } else if !tied.isEmpty {
                let sel = result.map { $0 ?? .none }
                let tiedModels = Array(Set(tied.map { requests[$0.element].model })).sorted()
                var counts = [Int](repeating: 0, count: tied.count * blocks)
                counts.withUnsafeMutableBufferPointer { cb in
                    let C = UncheckedSendable(cb)
                    BlockStream.run(count: n, sources: sources) { _, blk, r, b in
                        for i in tiedModels { subtractInPlace(b[1 + i], b[0], r.count) }
                        for (ti, t) in tied.enumerated() {
                            C.value[ti * blocks + blk] = sel[t.element].countEqual(
                                b[1 + requests[t.element].model], count: r.count)
                        }
                    }
                }
                for (ti, t) in tied.enumerated() {
                    tieCounts[t.element] = Array(counts[(ti * blocks)..<((ti + 1) * blocks)])
                }
            }
        }
        return (0..<nq).map { qi in
            var sel = result[qi] ?? .none
            if let counts = tieCounts[qi] {
                sel.equalBefore = Self.countsBefore(counts)
            }
            return sel
        }
    }

    /// Per block, the threshold-equal entries in the blocks before it (`MagnitudeTopK.equalBefore`) from the
    /// blocks' own counts: an exclusive prefix sum.
    static func countsBefore(_ counts: [Int]) -> [Int] {
        var acc = 0
        return counts.map { c in
            defer { acc += c }
            return acc
        }
    }

    /// The level-1 pass of `selectTopK` from BF16 inputs without widening (`MaskedMerge.level1`): the same
    /// per-worker histograms, band members and completeness flags as the widened loop, for the same blocks. A band
    /// is complete when all its members fit its cap; a model's third banded request (none today) is marked
    /// incomplete and takes the level-2 pass.
    static func level1Direct(
        n: Int, sources: [TensorSource], wanted: [Int], requests: [(model: Int, k: Int)],
        bands: [ClosedRange<UInt32>?], caps: [Int], level: Int, histograms: UnsafeMutablePointer<UInt32>,
        members: UnsafeMutableBufferPointer<[UInt64]>, complete: UnsafeMutableBufferPointer<Bool>
    ) {
        let nq = requests.count
        let m = sources.count - 1
        let l1 = MagnitudeTopK.level1Buckets
        let byModel = (0..<m).map { i in (0..<nq).filter { requests[$0].model == i && bands[$0] != nil } }
        let workers = BlockStream.workerCount(n)
        let copies = MaskedMerge.level1Copies
        // Per worker and model, `copies` tables the kernel spreads its increments over, summed afterwards.
        let tables = UnsafeMutablePointer<UInt32>.allocate(capacity: workers * m * copies * l1)
        tables.initialize(repeating: 0, count: workers * m * copies * l1)
        defer {
            for t in 0..<(workers * m) {
                MaskedMerge.foldLevel1(tables + t * copies * l1, copies: copies, into: histograms + t * l1)
            }
            tables.deallocate()
        }
        let out = UncheckedSendable((histograms, members, complete, tables))
        // Four Float scratch blocks per worker hold two blocks of UInt64 members.
        BlockStream.run(count: n, sources: [], extra: 4) { w, blk, r, scratch in
            let (_, members, complete, tables) = out.value
            let slots = [
                UnsafeMutableRawPointer(scratch[0]).bindMemory(to: UInt64.self, capacity: BlockStream.blockSize),
                UnsafeMutableRawPointer(scratch[2]).bindMemory(to: UInt64.self, capacity: BlockStream.blockSize),
            ]
            for i in wanted {
                var live = byModel[i].filter { complete[w * nq + $0] }
                for qi in live.dropFirst(2) { complete[w * nq + qi] = false }
                live = Array(live.prefix(2))
                let got = MaskedMerge.level1(
                    base: sources[0], x: sources[1 + i], r, into: tables + (w * m + i) * copies * l1, copies: copies,
                    bands: live.compactMap { bands[$0] }, tag: UInt64(blk) << 32, members: slots, level: level)
                for (q, qi) in live.enumerated() {
                    let slot = w * nq + qi
                    if members[slot].count + got[q] > caps[qi] {
                        complete[slot] = false
                    } else {
                        members[slot].append(contentsOf: UnsafeBufferPointer(start: slots[q], count: got[q]))
                    }
                }
            }
        }
    }

    /// For each request, a band of level-1 buckets that should hold its threshold and how many entries the band
    /// is expected to collect, from the histograms of one block in `sampleStride` (margin: ±2 % of the sampled
    /// rank plus 8 binomial standard deviations). nil where the band would collect more than n / 8 entries (e.g.
    /// a threshold among many exact zeros): that request keeps the level-2 pass.
    static func estimateBands(
        n: Int, sources: [TensorSource], wanted: [Int], requests: [(model: Int, k: Int)]
    ) -> [(band: ClosedRange<UInt32>, expected: Int)?] {
        let bs = BlockStream.blockSize
        let l1 = MagnitudeTopK.level1Buckets
        var hist = [UInt32](repeating: 0, count: (sources.count - 1) * l1)
        var sampled = 0
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * bs)
        defer { scratch.deallocate() }
        // BF16 inputs are counted without widening (the C level-1 loop; the same histogram).
        let direct = MaskedMerge.level != nil && sources.allSatisfy { $0.dtype == .BF16 }
        let sample = stride(from: sampleStride / 2, to: BlockStream.blockCount(n), by: sampleStride).map {
            ($0 * bs)..<min(n, ($0 + 1) * bs)
        }
        hist.withUnsafeMutableBufferPointer { h in
            guard let hp = h.baseAddress else { return }
            if direct {
                // One model's histogram per chunk, on all cores: this runs before the pass and would hold it up.
                sampled = sample.reduce(0) { $0 + $1.count }
                Parallel.forEachChunk(wanted.count, minChunk: 1) { chunk in
                    for i in wanted[chunk] {
                        for r in sample {
                            _ = MaskedMerge.level1(
                                base: sources[0], x: sources[1 + i], r, into: hp + i * l1, bands: [], tag: 0,
                                members: [], level: 1)
                        }
                    }
                }
                return
            }
            for r in sample {
                sampled += r.count
                sources[0].read(r, into: scratch)
                for i in wanted {
                    sources[1 + i].read(r, into: scratch + bs)
                    subtractInPlace(scratch + bs, scratch, r.count)
                    MagnitudeTopK.accumulateLevel1(scratch + bs, count: r.count, into: hp + i * l1)
                }
            }
        }
        guard sampled > 0 else { return Array(repeating: nil, count: requests.count) }
        return requests.map { q in
            let ks = Double(q.k) * Double(sampled) / Double(n)
            let spread = 0.02 * ks + 8 * ks.squareRoot() + 64
            let first = ks - spread  // sampled rank at the large-magnitude end of the band
            let last = ks + spread
            let off = q.model * l1
            var above = 0
            var highest = l1 - 1
            var lowest = 0
            var seenFirst = first < 1
            for b in stride(from: l1 - 1, through: 0, by: -1) {
                above += Int(hist[off + b])
                if !seenFirst, Double(above) >= first {
                    highest = b
                    seenFirst = true
                }
                if Double(above) >= last {
                    lowest = b
                    break
                }
            }
            var inBand = 0
            for b in lowest...highest { inBand += Int(hist[off + b]) }
            let expected = Int(Double(inBand) * Double(n) / Double(sampled))
            guard expected <= n / 8 else { return nil }
            return (UInt32(lowest)...UInt32(highest), expected)
        }
    }
}
