/// The forward pass of a mixed batch: every sequence runs on its own group's weights (a weighted set of switch
/// packs per group), all groups in one pass over the layers.
///
/// Sequences are packed group by group, so each group's tokens are one block of rows. In the tile-fused layout
/// (`MixedForward+TileFused.swift`, the default) all groups go through each linear layer tile by tile, each tile
/// switched per group in cache just before its product. In the per-group layout (`MixedLayout.layerPerGroup`),
/// layer by layer, each group's weights for that layer are written into scratch of one layer
/// (`GroupWeights.materialize`: base copied and switched tile by tile) and the group's rows run through the same
/// kernels as a plain batch. Either way a group that leaves a tensor unchanged reads the encoder's own weights. Embedding rows are switched only where a token looks them up.
/// The base is never modified, and memory beyond a plain batch is one layer plus the looked-up rows.
///
/// Measured against the alternatives in docs/bench-mixed.md.
extension BertEncoder {
    public func withHiddenStates<R>(
        _ batch: TokenBatch, groups: [Int], weights: any GroupWeights, _ body: (HiddenStates) throws -> R
    ) rethrows -> R {
        precondition(groups.count == batch.count, "one group per sequence")
        let h = config.hiddenSize
        let order = (0..<batch.count).sorted { (groups[$0], $0) < (groups[$1], $1) }
        let (tokenIDs, positions, starts, lengths) = packTokens(batch, order: order)
        // Each group's sequences (in packed order) and rows.
        var spans: [Span] = []
        for b in order {
            if let last = spans.last, last.group == groups[b] {
                spans[spans.count - 1].sequences.append(b)
                spans[spans.count - 1].rows = last.rows.lowerBound..<(starts[b] + lengths[b])
            } else {
                spans.append(Span(group: groups[b], sequences: [b], rows: starts[b]..<(starts[b] + lengths[b])))
            }
        }
        let widest = spans.map(\.rows.count).max() ?? 0
        return try withWorkspace { workspace in
            workspace.reserve(tokens: tokenIDs.count, hidden: h, intermediate: config.intermediateSize)
            // One group gains nothing from fusing (its layer is written once either way), and the per-group layout
            // runs the ordinary kernels, so a one-mix batch stays bit for bit the in-place switch's result.
            let fused = weights.layout == .tileFused && spans.count > 1
            let scratchCount = fused ? tileFusedScratchCount(groups: spans.count) : layerElementCount
            if workspace.layerScratch.count < scratchCount {
                workspace.layerScratch = [Float](repeating: 0, count: scratchCount)
            }
            if workspace.rowScratch.count < 2 * widest * h + h {
                workspace.rowScratch = [Float](repeating: 0, count: 2 * widest * h + h)
            }
            if fused {
                forwardTileFused(
                    tokenIDs: tokenIDs, positions: positions, starts: starts, lengths: lengths, spans: spans,
                    weights: weights, workspace: &workspace)
            } else {
                forwardMixed(
                    tokenIDs: tokenIDs, positions: positions, starts: starts, lengths: lengths, spans: spans,
                    weights: weights, workspace: &workspace)
            }
            return try workspace.x.withUnsafeBufferPointer { hidden in
                let rows = UnsafeBufferPointer(rebasing: hidden[0..<(tokenIDs.count * h)])
                return try body(HiddenStates(values: rows, starts: starts, lengths: lengths, hiddenSize: h))
            }
        }
    }

    /// One group's block of a mixed batch: its sequences (batch indices, packed order) and their rows.
    struct Span {
        let group: Int
        var sequences: [Int]
        var rows: Range<Int>
    }

    /// Values of one layer's tensors: the scratch a group's switched layer is written into.
    var layerElementCount: Int {
        let h = config.hiddenSize
        let inter = config.intermediateSize
        return 4 * h * h + 2 * inter * h + 3 * h + h + inter + h + 4 * h
    }

    private func forwardMixed(
        tokenIDs: [Int], positions: [Int], starts: [Int], lengths: [Int], spans: [Span], weights: any GroupWeights,
        workspace: inout Workspace
    ) {
        let h = config.hiddenSize
        let inter = config.intermediateSize
        let eps = config.layerNormEps
        guard !tokenIDs.isEmpty else { return }
        withEmbeddedGroups(
            tokenIDs: tokenIDs, positions: positions, starts: starts, lengths: lengths, spans: spans, weights: weights,
            workspace: &workspace
        ) { b in
            for (i, own) in layers.enumerated() {
                let names = LayerNames(layer: i)
                for (s, span) in spans.enumerated() {
                    let r = span.rows
                    let layer = groupLayer(names, own: own, group: span.group, weights: weights, scratch: b.scratch)
                    runLayer(
                        layer ?? own, x: rebased(b.x, r, h), qkv: rebased(b.qkv, r, 3 * h),
                        ctx: rebased(b.ctx, r, h), mid: rebased(b.mid, r, inter), tokens: r.count,
                        starts: b.local[s].starts, lengths: b.local[s].lengths, heads: config.headCount,
                        headSize: config.headSize, scale: 1 / Float(config.headSize).squareRoot(), eps: eps)
                }
            }
        }
    }

    /// The workspace buffers a mixed pass works in, borrowed for one pass.
    struct MixedBuffers {
        let x: UnsafeMutableBufferPointer<Float>
        let qkv: UnsafeMutableBufferPointer<Float>
        let ctx: UnsafeMutableBufferPointer<Float>
        let mid: UnsafeMutableBufferPointer<Float>
        /// Scratch of one layer (`layerScratch`), for tensors as a group sees them.
        let scratch: UnsafeMutableBufferPointer<Float>
        /// Per span, its sequences' starts (relative to the span's first row) and lengths, for attention.
        let local: [(starts: [Int], lengths: [Int])]
    }

    /// Borrows the workspace's buffers, writes every group's embedded rows into `x` (switched as the group sees
    /// the embeddings), then runs `body` over the layers: what both mixed layouts start with.
    func withEmbeddedGroups(
        tokenIDs: [Int], positions: [Int], starts: [Int], lengths: [Int], spans: [Span], weights: any GroupWeights,
        workspace: inout Workspace, _ body: (MixedBuffers) -> Void
    ) {
        let local = spans.map { span in
            (
                starts: span.sequences.map { starts[$0] - span.rows.lowerBound },
                lengths: span.sequences.map { lengths[$0] }
            )
        }
        workspace.x.withUnsafeMutableBufferPointer { x in
            workspace.qkv.withUnsafeMutableBufferPointer { qkv in
                workspace.ctx.withUnsafeMutableBufferPointer { ctx in
                    workspace.mid.withUnsafeMutableBufferPointer { mid in
                        workspace.layerScratch.withUnsafeMutableBufferPointer { scratch in
                            workspace.rowScratch.withUnsafeMutableBufferPointer { rowScratch in
                                for span in spans {
                                    embed(
                                        span, tokenIDs: tokenIDs, positions: positions, weights: weights, x: x,
                                        rowScratch: rowScratch, layerScratch: scratch)
                                }
                                body(MixedBuffers(x: x, qkv: qkv, ctx: ctx, mid: mid, scratch: scratch, local: local))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Rows `r` of a row-major matrix `width` wide.
    func rebased(_ all: UnsafeMutableBufferPointer<Float>, _ r: Range<Int>, _ width: Int)
        -> UnsafeMutableBufferPointer<Float>
    {
        UnsafeMutableBufferPointer(rebasing: all[(r.lowerBound * width)..<(r.upperBound * width)])
    }

    /// Word + position + token-type embeddings of one group's rows, switched as the group sees them, then the
    /// embedding LayerNorm with the group's gain and bias: the same sums as a plain batch.
    func embed(
        _ span: Span, tokenIDs: [Int], positions: [Int], weights: any GroupWeights,
        x: UnsafeMutableBufferPointer<Float>,
        rowScratch: UnsafeMutableBufferPointer<Float>, layerScratch: UnsafeMutableBufferPointer<Float>
    ) {
        let h = config.hiddenSize
        let r = span.rows
        let n = r.count
        let word = UnsafeMutableBufferPointer(rebasing: rowScratch[0..<(n * h)])
        let position = UnsafeMutableBufferPointer(rebasing: rowScratch[(n * h)..<(2 * n * h)])
        let tokenType = UnsafeMutableBufferPointer(rebasing: rowScratch[(2 * n * h)..<(2 * n * h + h)])
        weights.gatherRows(
            "embeddings.word_embeddings.weight", group: span.group, rows: Array(tokenIDs[r]), width: h, into: word)
        weights.gatherRows(
            "embeddings.position_embeddings.weight", group: span.group, rows: Array(positions[r]), width: h,
            into: position)
        weights.gatherRows(
            "embeddings.token_type_embeddings.weight", group: span.group, rows: [0], width: h, into: tokenType)
        let xb = rebased(x, r, h)
        for row in 0..<n {
            for j in 0..<h { xb[row * h + j] = word[row * h + j] + position[row * h + j] + tokenType[j] }
        }
        var offset = 0
        let gamma = vector(
            "embeddings.LayerNorm.weight", own: embeddingNormWeight, group: span.group, weights: weights,
            scratch: layerScratch, offset: &offset)
        let beta = vector(
            "embeddings.LayerNorm.bias", own: embeddingNormBias, group: span.group, weights: weights,
            scratch: layerScratch, offset: &offset)
        gamma.withUnsafeBufferPointer { g in
            beta.withUnsafeBufferPointer { b in
                EncoderKernels.layerNorm(xb, rows: n, gamma: g, beta: b, eps: config.layerNormEps)
            }
        }
    }

    /// A tensor as `group` sees it: the encoder's own when the group leaves it unchanged, else switched into the
    /// next free part of `scratch`.
    func vector(
        _ name: String, own: EncoderWeight, group: Int, weights: any GroupWeights,
        scratch: UnsafeMutableBufferPointer<Float>, offset: inout Int
    ) -> EncoderWeight {
        guard weights.switches(name, group: group) else { return own }
        let out = UnsafeMutableBufferPointer(rebasing: scratch[offset..<(offset + own.count)])
        offset += own.count
        weights.materialize(name, group: group, into: out)
        return EncoderWeight(borrowing: UnsafeBufferPointer(out))
    }

    /// The tensor names of one layer, built once per layer of a pass rather than per group.
    struct LayerNames {
        let prefix: String
        /// Query, key, value (without `.weight`/`.bias`), in stacking order.
        let parts: [String]
        /// Every tensor of the layer.
        let all: [String]

        init(layer i: Int) {
            prefix = "encoder.layer.\(i)."
            parts = ["query", "key", "value"].map { "encoder.layer.\(i).attention.self.\($0)" }
            let others = [
                "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
                "output.LayerNorm",
            ].map { "encoder.layer.\(i).\($0)" }
            all = (parts + others).flatMap { [$0 + ".weight", $0 + ".bias"] }
        }
    }

    /// A layer as `group` sees it, written into `scratch`; nil when the group changes none of its tensors.
    private func groupLayer(
        _ names: LayerNames, own: Layer, group: Int, weights: any GroupWeights,
        scratch: UnsafeMutableBufferPointer<Float>
    ) -> Layer? {
        let p = names.prefix
        let parts = names.parts
        guard names.all.contains(where: { weights.switches($0, group: group) }) else { return nil }
        var offset = 0
        /// The stacked Q, K, V weight (or bias): each part switched or copied from the encoder's own stack.
        func stacked(_ suffix: String, own: EncoderWeight) -> EncoderWeight {
            let names = parts.map { $0 + suffix }
            guard names.contains(where: { weights.switches($0, group: group) }) else { return own }
            let part = own.count / 3
            let out = UnsafeMutableBufferPointer(rebasing: scratch[offset..<(offset + own.count)])
            offset += own.count
            own.withUnsafeBufferPointer { src in
                for (k, name) in names.enumerated() {
                    let slice = UnsafeMutableBufferPointer(rebasing: out[(k * part)..<((k + 1) * part)])
                    if weights.switches(name, group: group) {
                        weights.materialize(name, group: group, into: slice)
                    } else {
                        _ = slice.update(
                            fromContentsOf: UnsafeBufferPointer(rebasing: src[(k * part)..<((k + 1) * part)]))
                    }
                }
            }
            return EncoderWeight(borrowing: UnsafeBufferPointer(out))
        }
        func one(_ name: String, _ own: EncoderWeight) -> EncoderWeight {
            vector(p + name, own: own, group: group, weights: weights, scratch: scratch, offset: &offset)
        }
        return Layer(
            qkvWeight: stacked(".weight", own: own.qkvWeight), qkvBias: stacked(".bias", own: own.qkvBias),
            attentionOutWeight: one("attention.output.dense.weight", own.attentionOutWeight),
            attentionOutBias: one("attention.output.dense.bias", own.attentionOutBias),
            attentionNormWeight: one("attention.output.LayerNorm.weight", own.attentionNormWeight),
            attentionNormBias: one("attention.output.LayerNorm.bias", own.attentionNormBias),
            intermediateWeight: one("intermediate.dense.weight", own.intermediateWeight),
            intermediateBias: one("intermediate.dense.bias", own.intermediateBias),
            outputWeight: one("output.dense.weight", own.outputWeight),
            outputBias: one("output.dense.bias", own.outputBias),
            outputNormWeight: one("output.LayerNorm.weight", own.outputNormWeight),
            outputNormBias: one("output.LayerNorm.bias", own.outputNormBias))
    }
}
