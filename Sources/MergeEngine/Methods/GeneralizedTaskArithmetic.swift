import CheckpointIO
import TensorKernels

// mergekit's "generalized task arithmetic" family: task vectors dᵢ = xᵢ − base are sparsified (magnitude top-k,
// magnitude band, random, DELLA rank sampling), optionally rescaled to their original L1 norm, weighted, optionally
// filtered by sign consensus (TIES), summed, normalised and added to the base. Eight registered names share this
// one streamed implementation and differ only in the sparsifier, the consensus and the defaults.

/// The shared parameters and the implementation of the family.
enum GTA {
    enum Sparsification { case none, magnitude, magnitudeOutliers, random, dellaMagprune }

    struct Variant {
        let sparsification: Sparsification
        let consensus: Bool
    }

    static func parameters(_ s: Sparsification, normalize: Bool, rescale: Bool) -> [ParameterSpec] {
        var p: [ParameterSpec] = [
            .bool("int8_mask", default: false), .bool("normalize", default: normalize),
            .bool("rescale", default: rescale), .number("lambda", default: 1),
            .number("weight", scope: .nonBase), .number("density", scope: .nonBase, default: 1),
        ]
        if s == .magnitudeOutliers { p.append(.number("gamma", scope: .nonBase, default: 0.01)) }
        if s == .dellaMagprune { p.append(.number("epsilon", scope: .nonBase, default: 0.15)) }
        return p
    }

    /// How one task vector is sparsified in this tensor.
    enum Mask {
        case keepAll
        /// The `keep` largest magnitudes minus the `drop` largest (top-k is `drop == .none`).
        case band(keep: MagnitudeTopK, drop: MagnitudeTopK?)
        /// Bernoulli(density) from a counter-based generator keyed by tensor, model and element index.
        case random(threshold: UInt32, key: UInt64)
        /// Precomputed 0/1 per element (DELLA's per-row rank sampling).
        case bytes(UnsafeMutableBufferPointer<UInt8>)
    }

    static func merge(_ variant: Variant, _ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        guard let base = c.base else {
            throw MergeError(.invalidInputs, "tensor '\(c.tensorName)': this merge method needs a base model.")
        }
        let models = c.nonBase
        let n = c.count
        let m = models.count
        if m == 0 {
            BlockStream.run(count: n, sources: [base.source]) { _, _, r, b in sink.write(r, from: b[0]) }
            return
        }
        let sources = [base.source] + models.map(\.source)
        let weights = models.map { Float($0.number("weight")) }
        let rescale = c.bool("rescale")

        // 1. Per-model masks.
        var masks: [Mask] = Array(repeating: .keepAll, count: m)
        defer {
            for case .bytes(let b) in masks { b.deallocate() }
        }
        var requests: [(model: Int, k: Int)] = []  // top-k selections to find
        var bands: [(keep: Int, drop: Int)] = Array(repeating: (-1, -1), count: m)
        for (i, model) in models.enumerated() {
            let density = model.number("density")
            guard variant.sparsification != .none, density < 1 else { continue }
            switch variant.sparsification {
            case .none: break
            case .magnitude:
                if density <= 0 || n == 0 {
                    masks[i] = .band(keep: .none, drop: nil)
                } else {
                    bands[i] = (requests.count, -1)
                    requests.append((i, max(1, Int(density * Double(n)))))
                }
            case .magnitudeOutliers:
                let target = Int(density * Double(n))
                let top = Int(model.number("gamma") * Double(n))
                let bottom = max(0, n - target - top)
                // Ascending ranks [bottom, bottom + target) = the (n − bottom) largest minus the (n − bottom − target) largest.
                let keep = n - bottom
                let drop = n - bottom - target
                bands[i] = (keep > 0 ? requests.count : -2, -1)
                if keep > 0 { requests.append((i, keep)) }
                if drop > 0 {
                    bands[i].drop = requests.count
                    requests.append((i, drop))
                }
            case .random:
                let threshold = UInt32(min(1, max(0, density)) * 16_777_216)
                masks[i] = .random(threshold: threshold, key: Counter.key(seed: c.seed, tensor: c.tensorName, stream: i))
            case .dellaMagprune:
                let eps = model.number("epsilon")
                if density <= 0 {
                    masks[i] = .band(keep: .none, drop: nil)
                } else {
                    guard density + eps < 1, density - eps > 0 else {
                        throw MergeError(.invalidConfig, "tensor '\(c.tensorName)', model '\(model.model)': DELLA needs density ± epsilon inside (0, 1); got density \(density), epsilon \(eps).")
                    }
                    masks[i] = .bytes(dellaMask(c, base: base.source, model: model.source, stream: i, density: density, epsilon: eps))
                }
            }
        }
        if !requests.isEmpty {
            let selections = selectTopK(n: n, base: base.source, models: models.map(\.source), requests: requests)
            for i in 0..<m where bands[i].keep != -1 {
                let keep = bands[i].keep >= 0 ? selections[bands[i].keep] : MagnitudeTopK.none
                masks[i] = .band(keep: keep, drop: bands[i].drop >= 0 ? selections[bands[i].drop] : nil)
            }
        }

        // 2. L1 rescale factors (mergekit: masked × ‖d‖₁ / ‖masked‖₁, skipped below 1e-7).
        var scales = [Float](repeating: 1, count: m)
        let sparsified = (0..<m).filter { if case .keepAll = masks[$0] { false } else { true } }
        if rescale, !sparsified.isEmpty {
            let workers = BlockStream.workerCount(n)
            var sums = [Double](repeating: 0, count: workers * m * 2)
            sums.withUnsafeMutableBufferPointer { acc in
                let A = UncheckedSendable(acc)
                let maskList = masks
                BlockStream.run(count: n, sources: sources, extra: 1) { w, blk, r, b in
                    let cnt = r.count
                    for i in sparsified {
                        let x = b[1 + i]
                        subtractInPlace(x, b[0], cnt)
                        fillMask(maskList[i], delta: x, count: cnt, block: blk, start: r.lowerBound, into: b[1 + m])
                        var before = 0.0
                        var after = 0.0
                        var sb: Float = 0
                        var sa: Float = 0
                        for j in 0..<cnt {
                            let a = abs(x[j])
                            sb += a
                            sa += a * b[1 + m][j]
                            if j & 1023 == 1023 {
                                before += Double(sb)
                                after += Double(sa)
                                sb = 0
                                sa = 0
                            }
                        }
                        before += Double(sb)
                        after += Double(sa)
                        A.value[(w * m + i) * 2] += before
                        A.value[(w * m + i) * 2 + 1] += after
                    }
                }
            }
            for i in sparsified {
                var before = 0.0
                var after = 0.0
                for w in 0..<workers {
                    before += sums[(w * m + i) * 2]
                    after += sums[(w * m + i) * 2 + 1]
                }
                if before >= 1e-7, after >= 1e-7 { scales[i] = Float(before / after) }
            }
        }

        // 3. The merge pass.
        let normalize = c.bool("normalize")
        let lambda = Float(c.number("lambda"))
        var weightSum: Float = 0
        for w in weights { weightSum += w }
        if abs(weightSum) < 1e-8 { weightSum = 1 }
        let consensus = variant.consensus
        let maskList = masks
        let active = sparsified
        // Task arithmetic (nothing masked, no consensus): one fused pass from the stored inputs when the dtypes allow.
        if !consensus, active.isEmpty,
            FusedStream.weightedDeltaSum(
                base: base.source, models: models.map(\.source), weights: weights, divide: normalize ? weightSum : 1,
                lambda: lambda, into: sink)
        {
            return
        }
        BlockStream.run(count: n, sources: sources, extra: 3) { _, blk, r, b in
            let cnt = r.count
            let base = b[0]
            let maskBuf = b[1 + m]
            let out = b[2 + m]
            let spare = b[3 + m]
            // v_i = ((d_i · mask_i) · scale_i) · w_i, in place over the model's block.
            for i in 0..<m {
                let x = b[1 + i]
                subtractInPlace(x, base, cnt)
                if active.contains(i) {
                    fillMask(maskList[i], delta: x, count: cnt, block: blk, start: r.lowerBound, into: maskBuf)
                    let s = scales[i]
                    let w = weights[i]
                    for j in 0..<cnt { x[j] = ((x[j] * maskBuf[j]) * s) * w }
                } else {
                    let w = weights[i]
                    for j in 0..<cnt { x[j] *= w }
                }
            }
            let vs = Array(b[1...m])
            if consensus {
                combineConsensus(
                    vs, weights: weights, base: base, scratch: (maskBuf, spare), out: out, count: cnt, normalize: normalize,
                    lambda: lambda)
            } else {
                combineSum(vs, base: base, out: out, count: cnt, divide: normalize ? weightSum : 1, lambda: lambda)
            }
            sink.write(r, from: out)
        }
    }

    /// out = base + λ · (Σᵢ vᵢ where sign(vᵢ) agrees with sign(Σ vᵢ)) / (Σ wᵢ over the agreeing i, 1 when none)
    /// — mergekit's `get_mask(method="sum")`: zero entries never agree; the majority sign is + when the sum is ≥ 0.
    ///
    /// Plain loops over pointers with selects, model-outer and element-inner, so LLVM vectorises them; explicit
    /// SIMD8 masks (`.&`, `replacing`) compiled to per-lane code here and cost 3× more.
    @inline(__always)
    static func combineConsensus(
        _ vs: [UnsafeMutablePointer<Float>], weights: [Float], base: UnsafeMutablePointer<Float>,
        scratch: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>), out: UnsafeMutablePointer<Float>,
        count: Int, normalize: Bool, lambda: Float
    ) {
        let (sum, div) = scratch
        let mixed = out
        for j in 0..<count {
            sum[j] = 0
            mixed[j] = 0
            div[j] = 0
        }
        for v in vs { for j in 0..<count { sum[j] += v[j] } }
        for (i, v) in vs.enumerated() {
            let w = weights[i]
            for j in 0..<count {
                let x = v[j]
                let agree = sum[j] >= 0 ? x > 0 : x < 0
                mixed[j] += agree ? x : 0
                div[j] += agree ? w : 0
            }
        }
        if normalize {
            for j in 0..<count { mixed[j] /= div[j] == 0 ? 1 : div[j] }
        }
        if lambda != 1 { for j in 0..<count { mixed[j] *= lambda } }
        for j in 0..<count { out[j] = base[j] + mixed[j] }
    }

    /// out = base + λ · Σᵢ vᵢ / divide (divide = Σ wᵢ when normalising, else 1).
    @inline(__always)
    static func combineSum(
        _ vs: [UnsafeMutablePointer<Float>], base: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
        count: Int, divide: Float, lambda: Float
    ) {
        for j in 0..<count { out[j] = 0 }
        for v in vs { for j in 0..<count { out[j] += v[j] } }
        if divide != 1 { for j in 0..<count { out[j] /= divide } }
        if lambda != 1 { for j in 0..<count { out[j] *= lambda } }
        for j in 0..<count { out[j] = base[j] + out[j] }
    }

    @inline(__always)
    static func subtractInPlace(_ x: UnsafeMutablePointer<Float>, _ base: UnsafeMutablePointer<Float>, _ count: Int) {
        for j in 0..<count { x[j] -= base[j] }
    }

    /// Writes the 0/1 mask of one block of a task vector.
    @inline(__always)
    static func fillMask(
        _ mask: Mask, delta: UnsafeMutablePointer<Float>, count: Int, block: Int, start: Int,
        into out: UnsafeMutablePointer<Float>
    ) {
        switch mask {
        case .keepAll:
            for j in 0..<count { out[j] = 1 }
        case .band(let keep, let drop):
            keep.mask(delta, count: count, block: block, into: out)
            if let drop {
                let tmp = UnsafeMutablePointer<Float>.allocate(capacity: count)
                defer { tmp.deallocate() }
                drop.mask(delta, count: count, block: block, into: tmp)
                for j in 0..<count { out[j] *= 1 - tmp[j] }
            }
        case .random(let threshold, let key):
            for j in 0..<count { out[j] = Counter.uniform24(key: key, index: start + j) < threshold ? 1 : 0 }
        case .bytes(let b):
            for j in 0..<count { out[j] = Float(b[start + j]) }
        }
    }

    /// Tensors of at least this many elements estimate each threshold's level-1 bucket from a sample first.
    static let bandMinimum = 1 << 20
    /// One block in this many is sampled for the estimate.
    static let sampleStride = 16

    /// Finds every requested top-k of |xᵢ − base|, exactly (ties at the threshold kept in index order).
    ///
    /// Large tensors take two passes over the inputs: a sample (one block in `sampleStride`) estimates a band of
    /// level-1 buckets around each threshold; the level-1 pass then also collects every entry inside that band,
    /// which is what the level-2 pass and the tie counts need. Requests whose exact bucket falls outside their
    /// band (or whose band overflows) get the level-2 pass as before (small tensors always do); the result is the
    /// same either way. `bandMinimum` is a parameter so tests can run both routes on one input.
    static func selectTopK(
        n: Int, base: TensorSource, models: [TensorSource], requests: [(model: Int, k: Int)],
        bandMinimum: Int = GTA.bandMinimum
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
                    BlockStream.run(count: n, sources: sources) { w, blk, r, b in
                        for i in wanted {
                            subtractInPlace(b[1 + i], b[0], r.count)
                            let hist = H.value + (w * models.count + i) * l1
                            // The model's first band is collected inside the histogram loop, any second one after it.
                            if let qi = fusedBand[i], let band = bands[qi]?.band, C.value[w * nq + qi] {
                                C.value[w * nq + qi] = MagnitudeTopK.accumulateLevel1(
                                    b[1 + i], count: r.count, into: hist, lowest: band.lowerBound, highest: band.upperBound,
                                    block: blk, members: &M.value[w * nq + qi], cap: caps[qi])
                            } else {
                                MagnitudeTopK.accumulateLevel1(b[1 + i], count: r.count, into: hist)
                            }
                        }
                        for qi in separate where C.value[w * nq + qi] {
                            guard let band = bands[qi]?.band else { continue }
                            C.value[w * nq + qi] = MagnitudeTopK.collectBand(
                                b[1 + requests[qi].model], count: r.count, lowest: band.lowerBound, highest: band.upperBound,
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
                                        x, count: r.count, bucket: bucket, into: H.value + slot * l2, members: &M.value[slot],
                                        block: blk, cap: cap)
                                } else {
                                    MagnitudeTopK.accumulateLevel2(x, count: r.count, bucket: bucket, into: H.value + slot * l2)
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
                    k: requests[qi].k, level1: [], level2: hist2, bucket1: located[qi].bucket, above1: located[qi].above)
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
                            C.value[ti * blocks + blk] = sel[t.element].countEqual(b[1 + requests[t.element].model], count: r.count)
                        }
                    }
                }
                for (ti, t) in tied.enumerated() { tieCounts[t.element] = Array(counts[(ti * blocks)..<((ti + 1) * blocks)]) }
            }
        }
        return (0..<nq).map { qi in
            var sel = result[qi] ?? .none
            if let counts = tieCounts[qi] {
                var before = [Int](repeating: 0, count: blocks)
                var acc = 0
                for blk in 0..<blocks {
                    before[blk] = acc
                    acc += counts[blk]
                }
                sel.equalBefore = before
            }
            return sel
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
        hist.withUnsafeMutableBufferPointer { h in
            guard let hp = h.baseAddress else { return }
            for blk in stride(from: sampleStride / 2, to: BlockStream.blockCount(n), by: sampleStride) {
                let r = (blk * bs)..<min(n, (blk + 1) * bs)
                sources[0].read(r, into: scratch)
                for i in wanted {
                    sources[1 + i].read(r, into: scratch + bs)
                    subtractInPlace(scratch + bs, scratch, r.count)
                    MagnitudeTopK.accumulateLevel1(scratch + bs, count: r.count, into: hp + i * l1)
                }
                sampled += r.count
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

    /// DELLA's MagPrune: within each row, keep probability rises linearly with the rank of |dᵢ| from
    /// density − ε (smallest) to density + ε (largest); draws come from the counter-based generator.
    static func dellaMask(
        _ c: StreamingMergeContext, base: TensorSource, model: TensorSource, stream: Int, density: Double, epsilon: Double
    ) -> UnsafeMutableBufferPointer<UInt8> {
        let n = c.count
        let cols = c.shape.count >= 2 ? c.shape[c.shape.count - 1] : n
        let rows = cols == 0 ? 0 : n / cols
        let mask = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(1, n))
        let key = Counter.key(seed: c.seed, tensor: c.tensorName, stream: stream)
        let M = UncheckedSendable(mask)
        Parallel.forEachChunk(rows, minChunk: max(1, 65536 / max(1, cols))) { rr in
            let b = UnsafeMutablePointer<Float>.allocate(capacity: cols)
            let x = UnsafeMutablePointer<Float>.allocate(capacity: cols)
            defer {
                b.deallocate()
                x.deallocate()
            }
            var order = [Int](repeating: 0, count: cols)
            for row in rr {
                let r = (row * cols)..<((row + 1) * cols)
                base.read(r, into: b)
                model.read(r, into: x)
                for j in 0..<cols { x[j] = abs(x[j] - b[j]) }
                for j in 0..<cols { order[j] = j }
                order.sort { x[$0] < x[$1] || (x[$0] == x[$1] && $0 < $1) }
                for (rank, j) in order.enumerated() {
                    let norm = cols > 1 ? Double(rank) / Double(cols - 1) : 0
                    let p = (density - epsilon) + norm * 2 * epsilon
                    let threshold = UInt32(min(1, max(0, p)) * 16_777_216)
                    M.value[r.lowerBound + j] = Counter.uniform24(key: key, index: r.lowerBound + j) < threshold ? 1 : 0
                }
            }
        }
        return mask
    }
}

/// A counter-based generator: the draw for element `index` is a hash of (seed, tensor, model, index), so masks
/// are the same on every pass, in any block order and on any number of threads.
enum Counter {
    static func key(seed: UInt64, tensor: String, stream: Int) -> UInt64 {
        var g = SplitMix64(seed: seed, key: tensor, stream: UInt64(stream))
        return g.next()
    }

    /// A uniform integer in [0, 2²⁴) for element `index`.
    @inline(__always)
    static func uniform24(key: UInt64, index: Int) -> UInt32 {
        var z = key &+ UInt64(truncatingIfNeeded: index) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return UInt32(truncatingIfNeeded: z >> 40)
    }
}

/// `base + λ Σ wᵢ (xᵢ − base)` (Ilharco et al. 2023); negative weights subtract a task (forgetting).
public enum TaskArithmeticMerge: StreamingMergeMethod {
    public static let name = "task_arithmetic"
    public static let basePolicy = BasePolicy.required
    public static let summary = "task arithmetic: base + λ Σ wᵢ τᵢ"
    public static let parameters = GTA.parameters(.none, normalize: false, rescale: false)
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .none, consensus: false), c, into: sink)
    }
}

/// TIES (Yadav et al. 2023): keep each task vector's top-`density` magnitudes, elect a sign per entry by the sum,
/// average the agreeing entries.
public enum TiesMerge: StreamingMergeMethod {
    public static let name = "ties"
    public static let basePolicy = BasePolicy.required
    public static let summary = "TIES: magnitude trim, sign election, disjoint mean"
    public static let parameters = GTA.parameters(.magnitude, normalize: true, rescale: false)
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .magnitude, consensus: true), c, into: sink)
    }
}

/// DARE + TIES sign consensus (Yu et al. 2024).
public enum DareTiesMerge: StreamingMergeMethod {
    public static let name = "dare_ties"
    public static let basePolicy = BasePolicy.required
    public static let summary = "DARE TIES: random drop, L1 rescale, sign consensus"
    public static let parameters = GTA.parameters(.random, normalize: false, rescale: true)
    public static let isRandomised = true
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .random, consensus: true), c, into: sink)
    }
}

/// DARE without consensus.
public enum DareLinearMerge: StreamingMergeMethod {
    public static let name = "dare_linear"
    public static let basePolicy = BasePolicy.required
    public static let summary = "linear DARE: random drop, L1 rescale, weighted sum"
    public static let parameters = GTA.parameters(.random, normalize: false, rescale: true)
    public static let isRandomised = true
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .random, consensus: false), c, into: sink)
    }
}

/// Model Breadcrumbs (Davari & Belilovsky 2023): drop the largest `gamma` and the smallest magnitudes.
public enum BreadcrumbsMerge: StreamingMergeMethod {
    public static let name = "breadcrumbs"
    public static let basePolicy = BasePolicy.required
    public static let summary = "Model Breadcrumbs: drop outliers and small entries"
    public static let parameters = GTA.parameters(.magnitudeOutliers, normalize: false, rescale: false)
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .magnitudeOutliers, consensus: false), c, into: sink)
    }
}

/// Breadcrumbs with TIES sign consensus.
public enum BreadcrumbsTiesMerge: StreamingMergeMethod {
    public static let name = "breadcrumbs_ties"
    public static let basePolicy = BasePolicy.required
    public static let summary = "Model Breadcrumbs with TIES sign consensus"
    public static let parameters = GTA.parameters(.magnitudeOutliers, normalize: false, rescale: false)
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .magnitudeOutliers, consensus: true), c, into: sink)
    }
}

/// DELLA (Deep et al. 2024): rank-dependent random drop (MagPrune), L1 rescale, sign consensus.
public enum DellaMerge: StreamingMergeMethod {
    public static let name = "della"
    public static let basePolicy = BasePolicy.required
    public static let summary = "DELLA: magnitude-ranked stochastic drop, rescale, sign consensus"
    public static let parameters = GTA.parameters(.dellaMagprune, normalize: true, rescale: true)
    public static let isRandomised = true
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .dellaMagprune, consensus: true), c, into: sink)
    }
}

/// DELLA without consensus.
public enum DellaLinearMerge: StreamingMergeMethod {
    public static let name = "della_linear"
    public static let basePolicy = BasePolicy.required
    public static let summary = "linear DELLA: magnitude-ranked stochastic drop, rescale, weighted sum"
    public static let parameters = GTA.parameters(.dellaMagprune, normalize: false, rescale: true)
    public static let isRandomised = true
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .dellaMagprune, consensus: false), c, into: sink)
    }
}
