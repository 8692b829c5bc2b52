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

    /// - Parameter maskedLevel: the level of the fused masked merge pass (`MaskedMerge`); nil takes the block path
    ///   (tests compare them).
    static func merge(
        _ variant: Variant, _ c: StreamingMergeContext, into sink: TensorSink, maskedLevel: Int? = MaskedMerge.level
    ) throws(MergeError) {
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
                masks[i] = .random(
                    threshold: threshold, key: Counter.key(seed: c.seed, tensor: c.tensorName, stream: i))
            case .dellaMagprune:
                let eps = model.number("epsilon")
                if density <= 0 {
                    masks[i] = .band(keep: .none, drop: nil)
                } else {
                    guard density + eps < 1, density - eps > 0 else {
                        throw MergeError(
                            .invalidConfig,
                            "tensor '\(c.tensorName)', model '\(model.model)': DELLA needs density ± epsilon inside (0, 1); got density \(density), epsilon \(eps)."
                        )
                    }
                    masks[i] = .bytes(
                        dellaMask(c, base: base.source, model: model.source, stream: i, density: density, epsilon: eps))
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
        // Magnitude masks (TIES, breadcrumbs): one fused pass from the mapped BF16 inputs when the dtypes allow.
        let maskedBands = maskList.map { mask -> MaskedMerge.Band?? in
            switch mask {
            case .keepAll: .some(nil)
            case .band(let keep, let drop): .some(MaskedMerge.Band(keep: keep, drop: drop))
            case .random, .bytes: nil
            }
        }
        if let level = maskedLevel, maskedBands.allSatisfy({ $0 != nil }),
            MaskedMerge.bf16(
                base: base.source, models: models.map(\.source), bands: maskedBands.map { $0 ?? nil }, scales: scales,
                weights: weights, consensus: consensus, normalize: normalize, divide: normalize ? weightSum : 1,
                lambda: lambda, into: sink, level: level)
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
                    vs, weights: weights, base: base, scratch: (maskBuf, spare), out: out, count: cnt,
                    normalize: normalize,
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
}
