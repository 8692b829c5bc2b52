import CEncoderKernels
import COpenBLAS
import CheckpointIO
import Foundation
import TensorKernels

/// The tile-fused layout of a mixed batch (`MixedLayout.tileFused`): all groups go through each linear layer in
/// lockstep, one tile of the weight's output rows at a time. Per tile, each group switches just that tile (base
/// copied, its lists' entries in the tile's range added: the same `SwitchKernel` adds in the same order as
/// `materialize`, so the weights are bit for bit the same) into a small per-core scratch, and one single-threaded
/// product writes the group's rows × the tile's output columns. Tiles are split across cores (disjoint output
/// columns). The base is read once per layer for all groups and the switched tile never leaves the core's L2;
/// per group and layer today's layout moved the whole layer three times (base read, scratch written, scratch read)
/// whatever its row count, which is what short texts paid for.
///
/// A group with many rows (`wholeTensorRows`) still gets its whole tensor written and one product over its rows,
/// which amortizes the write and is faster than re-reading its rows per tile. Attention and the LayerNorms run per
/// group as in the other layout, with the group's switched vectors.
extension BertEncoder {
    /// Values of a switched tile: 512 KB, which with a group's rows stays in the 1 MB L2 of this machine's cores;
    /// 96 KB-2 MB measured (docs/bench-mixed.md): fewer, larger tiles mean fewer products per group.
    static let fusedTileFloats: Int = environmentInt("TSWITCH_MIXED_TILE_KB").map { $0 * 256 } ?? 512 * 256

    /// Groups with at least this many rows switch the whole tensor and run one OpenBLAS product: their rows would
    /// be re-read per tile (128-token batches of 8 groups, 512 rows each, take this path; not tuned further).
    static let wholeTensorRows: Int = environmentInt("TSWITCH_MIXED_WHOLE_ROWS") ?? 256

    /// Whether tile products run on the AVX-512 dot-product kernel (`ts_small_gemm_nt_avx512`), which reads the
    /// switched tile in place, rather than OpenBLAS, which packs it first: per group that packing was a third pass
    /// over every weight (14 % of the 32-group profile). `TSWITCH_MIXED_GEMM=blas` forces OpenBLAS (measurement).
    static let dotKernel: Bool =
        EncoderKernels.hasAVX512 && ProcessInfo.processInfo.environment["TSWITCH_MIXED_GEMM"] != "blas"

    /// A positive integer from the environment: the two measurement knobs above, read once.
    private static func environmentInt(_ name: String) -> Int? {
        guard let s = ProcessInfo.processInfo.environment[name], let v = Int(s), v > 0 else { return nil }
        return v
    }

    /// Values of one group's switched vectors of a layer (biases and LayerNorm gains), in `groupVectors` order.
    var groupVectorCount: Int { 9 * config.hiddenSize + config.intermediateSize }

    /// The largest weight of a layer (the stacked Q, K, V or a feed-forward matrix).
    var largestLayerMatrix: Int {
        max(3 * config.hiddenSize * config.hiddenSize, config.intermediateSize * config.hiddenSize)
    }

    /// Values of one core's tile scratch: a tile of `fusedTileFloats` rounded up to whole rows of the widest input.
    var tileCapacity: Int { Self.fusedTileFloats + max(config.hiddenSize, config.intermediateSize) }

    /// Scratch the tile-fused layout needs for `groups` groups: their vectors, one whole tensor, a tile per core.
    func tileFusedScratchCount(groups: Int) -> Int {
        groups * groupVectorCount + largestLayerMatrix + Parallel.coreCount * tileCapacity
    }

    func forwardTileFused(
        tokenIDs: [Int], positions: [Int], starts: [Int], lengths: [Int], spans: [Span], weights: any GroupWeights,
        workspace: inout Workspace
    ) {
        let h = config.hiddenSize
        let inter = config.intermediateSize
        let heads = config.headCount
        let d = config.headSize
        let scale = 1 / Float(d).squareRoot()
        let eps = config.layerNormEps
        guard !tokenIDs.isEmpty else { return }
        let vectorCount = groupVectorCount
        let vectorsEnd = spans.count * vectorCount
        let wholeEnd = vectorsEnd + largestLayerMatrix
        withEmbeddedGroups(
            tokenIDs: tokenIDs, positions: positions, starts: starts, lengths: lengths, spans: spans, weights: weights,
            workspace: &workspace
        ) { b in
            let (xAll, qAll, cAll, mAll, scratch) = (b.x, b.qkv, b.ctx, b.mid, b.scratch)
            let whole = UnsafeMutableBufferPointer(rebasing: scratch[vectorsEnd..<wholeEnd])
            let tiles = UnsafeMutableBufferPointer(rebasing: scratch[wholeEnd...])
            func linear(
                _ names: [String], _ own: EncoderWeight, _ a: UnsafeMutableBufferPointer<Float>,
                inner: Int, out: Int, _ c: UnsafeMutableBufferPointer<Float>, accumulate: Bool
            ) {
                fusedLinear(
                    names, own: own, spans: spans, weights: weights, input: a.start, inner: inner,
                    out: out, into: c.start, accumulate: accumulate, whole: whole,
                    tileScratch: tiles)
            }
            for (i, own) in layers.enumerated() {
                let names = LayerNames(layer: i)
                let p = names.prefix
                let vectors = spans.enumerated().map { s, span in
                    groupVectors(
                        names, own: own, group: span.group, weights: weights,
                        scratch: UnsafeMutableBufferPointer(
                            rebasing: scratch[(s * vectorCount)..<((s + 1) * vectorCount)]))
                }
                linear(
                    names.parts.map { $0 + ".weight" }, own.qkvWeight, xAll, inner: h,
                    out: 3 * h, qAll, accumulate: false)
                for (s, span) in spans.enumerated() {
                    let r = span.rows
                    vectors[s].qkvBias.withUnsafeBufferPointer { bias in
                        EncoderKernels.attention(
                            qkv: qAll.start + r.lowerBound * 3 * h, bias: bias.start,
                            ctx: cAll.start + r.lowerBound * h, starts: b.local[s].starts,
                            lengths: b.local[s].lengths, heads: heads, headSize: d, scale: scale)
                    }
                }
                linear(
                    [p + "attention.output.dense.weight"], own.attentionOutWeight, cAll,
                    inner: h, out: h, xAll, accumulate: true)
                for (s, span) in spans.enumerated() {
                    let v = vectors[s]
                    normalize(
                        rebased(xAll, span.rows, h), rows: span.rows.count,
                        v.attentionNormWeight, v.attentionNormBias, v.attentionOutBias, eps: eps)
                }
                linear(
                    [p + "intermediate.dense.weight"], own.intermediateWeight, xAll, inner: h,
                    out: inter, mAll, accumulate: false)
                for (s, span) in spans.enumerated() {
                    vectors[s].intermediateBias.withUnsafeBufferPointer {
                        EncoderKernels.gelu(rebased(mAll, span.rows, inter), bias: $0)
                    }
                }
                linear(
                    [p + "output.dense.weight"], own.outputWeight, mAll, inner: inter, out: h,
                    xAll, accumulate: true)
                for (s, span) in spans.enumerated() {
                    let v = vectors[s]
                    normalize(
                        rebased(xAll, span.rows, h), rows: span.rows.count, v.outputNormWeight,
                        v.outputNormBias, v.outputBias, eps: eps)
                }
            }
        }
    }

    /// LayerNorm of `rows` rows after adding a linear layer's bias, as `runLayer` does.
    private func normalize(
        _ x: UnsafeMutableBufferPointer<Float>, rows: Int, _ gamma: EncoderWeight, _ beta: EncoderWeight,
        _ bias: EncoderWeight, eps: Float
    ) {
        gamma.withUnsafeBufferPointer { g in
            beta.withUnsafeBufferPointer { b in
                bias.withUnsafeBufferPointer {
                    EncoderKernels.layerNorm(x, rows: rows, gamma: g, beta: b, eps: eps, bias: $0)
                }
            }
        }
    }

    /// A layer's vectors (biases, LayerNorm gains and biases) as `group` sees them, switched into `scratch`
    /// (`groupVectorCount` values); its matrices are left as the encoder's own (the tiles switch those).
    private func groupVectors(
        _ names: LayerNames, own: Layer, group: Int, weights: any GroupWeights,
        scratch: UnsafeMutableBufferPointer<Float>
    ) -> Layer {
        var offset = 0
        var layer = own
        let biases = names.parts.map { $0 + ".bias" }
        if biases.contains(where: { weights.switches($0, group: group) }) {
            let part = own.qkvBias.count / 3
            let out = UnsafeMutableBufferPointer(rebasing: scratch[0..<(3 * part)])
            offset = 3 * part
            own.qkvBias.withUnsafeBufferPointer { src in
                for (k, name) in biases.enumerated() {
                    let slice = UnsafeMutableBufferPointer(rebasing: out[(k * part)..<((k + 1) * part)])
                    if let tiles = weights.tiles(name, group: group) {
                        tiles.write(0..<part, into: slice.start)
                    } else {
                        _ = slice.update(
                            fromContentsOf: UnsafeBufferPointer(rebasing: src[(k * part)..<((k + 1) * part)]))
                    }
                }
            }
            layer.qkvBias = EncoderWeight(borrowing: UnsafeBufferPointer(out))
        }
        // Vectors are written single-threaded through `tiles`: a parallel `materialize` per vector cost a dispatch
        // per group, layer and vector (2.3 % of the 32-group profile).
        func one(_ name: String, _ own: EncoderWeight) -> EncoderWeight {
            guard let tiles = weights.tiles(names.prefix + name, group: group) else { return own }
            let out = UnsafeMutableBufferPointer(rebasing: scratch[offset..<(offset + own.count)])
            offset += own.count
            tiles.write(0..<own.count, into: out.start)
            return EncoderWeight(borrowing: UnsafeBufferPointer(out))
        }
        layer.attentionOutBias = one("attention.output.dense.bias", own.attentionOutBias)
        layer.attentionNormWeight = one("attention.output.LayerNorm.weight", own.attentionNormWeight)
        layer.attentionNormBias = one("attention.output.LayerNorm.bias", own.attentionNormBias)
        layer.intermediateBias = one("intermediate.dense.bias", own.intermediateBias)
        layer.outputBias = one("output.dense.bias", own.outputBias)
        layer.outputNormWeight = one("output.LayerNorm.weight", own.outputNormWeight)
        layer.outputNormBias = one("output.LayerNorm.bias", own.outputNormBias)
        return layer
    }

    /// `c[rows × out] (+)= a[rows × inner] · Wᵀ` for every group's rows, `W` (`out × inner`, stacked from `names`
    /// in equal parts) as the group sees it.
    ///
    /// When no group switches `W`, one product over all rows, as a plain batch. Otherwise groups with
    /// `wholeTensorRows` rows or more get `W` written into `whole` and one product each; the rest share a sweep
    /// over tiles of `W`'s rows, split across cores, each group's tile switched into the core's part of
    /// `tileScratch` (or read from the base when the group leaves `W` unchanged) and multiplied at once.
    private func fusedLinear(
        _ names: [String], own: EncoderWeight, spans: [Span], weights: any GroupWeights, input a: UnsafePointer<Float>,
        inner: Int, out n: Int, into c: UnsafeMutablePointer<Float>, accumulate: Bool,
        whole: UnsafeMutableBufferPointer<Float>, tileScratch: UnsafeMutableBufferPointer<Float>
    ) {
        let partRows = n / names.count
        let sources = spans.map { span in names.map { weights.tiles($0, group: span.group) } }
        let rowsTotal = spans.reduce(0) { $0 + $1.rows.count }
        own.withUnsafeBufferPointer { base in
            guard sources.contains(where: { $0.contains { $0 != nil } }) else {
                EncoderKernels.linear(
                    a, rows: rowsTotal, inner: inner, weight: base.start, out: n, into: c, accumulate: accumulate)
                return
            }
            var fused: [Int] = []
            for (s, span) in spans.enumerated() {
                let r = span.rows
                guard r.count >= Self.wholeTensorRows else {
                    fused.append(s)
                    continue
                }
                var weight = base.start
                if sources[s].contains(where: { $0 != nil }) {
                    for (k, name) in names.enumerated() {
                        let part = UnsafeMutableBufferPointer(
                            rebasing: whole[(k * partRows * inner)..<((k + 1) * partRows * inner)])
                        if sources[s][k] != nil {
                            weights.materialize(name, group: span.group, into: part)
                        } else {
                            _ = part.update(
                                fromContentsOf: UnsafeBufferPointer(
                                    rebasing: base[(k * partRows * inner)..<((k + 1) * partRows * inner)]))
                        }
                    }
                    weight = UnsafePointer(whole.start)
                }
                EncoderKernels.linear(
                    a + r.lowerBound * inner, rows: r.count, inner: inner, weight: weight, out: n,
                    into: c + r.lowerBound * n, accumulate: accumulate)
            }
            guard !fused.isEmpty else { return }
            _ = EncoderKernels.singleThreadedBLAS
            let capacity = tileCapacity
            // As few tiles as fit the capacity, a multiple of the cores (equal work each), none across parts.
            var perPart = max(1, (partRows * inner + Self.fusedTileFloats - 1) / Self.fusedTileFloats)
            while (perPart * names.count) % Parallel.coreCount != 0 && perPart < partRows { perPart += 1 }
            let tileRows = (partRows + perPart - 1) / perPart
            var tiles: [(part: Int, rows: Range<Int>)] = []
            for k in names.indices {
                for lo in stride(from: 0, to: partRows, by: tileRows) {
                    tiles.append((k, lo..<min(partRows, lo + tileRows)))
                }
            }
            let cores = min(Parallel.coreCount, tiles.count)
            let per = (tiles.count + cores - 1) / cores
            let groups = fused.map { (rows: spans[$0].rows, sources: sources[$0]) }
            let box = UncheckedSendable((a, c, base.start, tileScratch.start, tiles, groups))
            let beta: Float = accumulate ? 1 : 0
            let dot = Self.dotKernel && inner % 16 == 0
            DispatchQueue.concurrentPerform(iterations: cores) { chunk in
                let (a, c, base, scratchAll, tiles, groups) = box.value
                let scratch = scratchAll + chunk * capacity
                for tile in tiles[(chunk * per)..<min(tiles.count, (chunk + 1) * per)] {
                    let columns = tile.rows.count
                    let firstColumn = tile.part * partRows + tile.rows.lowerBound
                    for group in groups {
                        let weight: UnsafePointer<Float>
                        if let source = group.sources[tile.part] {
                            source.write((tile.rows.lowerBound * inner)..<(tile.rows.upperBound * inner), into: scratch)
                            weight = UnsafePointer(scratch)
                        } else {
                            weight = base + firstColumn * inner
                        }
                        if dot {
                            ts_small_gemm_nt_avx512(
                                a + group.rows.lowerBound * inner, inner, weight, inner,
                                c + group.rows.lowerBound * n + firstColumn, n, group.rows.count, columns, inner,
                                accumulate ? 1 : 0)
                        } else {
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasTrans, blasint(group.rows.count), blasint(columns),
                                blasint(inner), 1, a + group.rows.lowerBound * inner, blasint(inner), weight,
                                blasint(inner), beta, c + group.rows.lowerBound * n + firstColumn, blasint(n))
                        }
                    }
                }
            }
        }
    }
}
