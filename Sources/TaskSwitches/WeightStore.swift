import CheckpointIO
import TensorKernels

/// The resident `Float` tensors of a `SwitchableModel`, and the loops that switch them.
///
/// Owned by the model's lock; never shared outside it. A switch of one tensor is a *transition*: write back the
/// values saved by the packs applied so far (newest first), then add the new packs in order, saving what they
/// overwrite. Two loops perform it, both adding through `SwitchKernel` (so the same result, bit for bit):
/// - **scatter**: one parallel pass per index list (restore, then apply). Cheap when few cache lines are touched.
/// - **sweep**: one pass over the tensor in cache-sized tiles, parallel across cores; each tile is restored and
///   re-applied while it is in cache. When most 64-byte lines hold a kept entry (density ≳ 1/16), the scatter
///   reads and writes every line once per list (four lists for a switch A → B); the sweep moves each line once.
final class WeightStore {
    let buffers: [UnsafeMutableBufferPointer<Float>]

    /// Values one pack overwrote in one tensor, in the order of its positive then negative indices.
    struct Undo {
        let tensor: Int
        let positive: [UInt32]
        let negative: [UInt32]
        let saved: SavedValues
    }

    /// An uninitialized Float buffer (no zero fill: every slot is written before it is read).
    final class SavedValues {
        let start: UnsafeMutablePointer<Float>
        let buffer: UnsafeMutableBufferPointer<Float>
        init(count: Int) {
            start = .allocate(capacity: max(1, count))
            buffer = UnsafeMutableBufferPointer(start: start, count: count)
        }
        deinit { start.deallocate() }
    }

    /// Which loop switches a tensor.
    enum Path { case scatter, sweep }

    /// Elements per sweep tile: 16 K floats (64 KB) stay in L2 while every list visits them.
    static let tile = 1 << 14

    init(specs: [TensorSpec]) {
        buffers = specs.map { s in
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, s.elementCount))
            b.initialize(repeating: 0)
            return UnsafeMutableBufferPointer(rebasing: b[0..<s.elementCount])
        }
    }

    deinit {
        for b in buffers { b.baseAddress?.deallocate() }
    }

    /// The measured rule (docs/bench-switch.md): the sweep when the lists of a transition hold at least one entry
    /// per 64 elements of the tensor (most 64-byte lines touched by some list), else the scatter.
    static func path(elements: Int, entries: Int) -> Path {
        entries * 64 >= elements && elements >= 2 * tile ? .sweep : .scatter
    }

    /// Restores `undo` (applied in this order, so restored newest first) and applies `switches` to one tensor,
    /// returning the undo entries of the switches, in order.
    func transition(
        tensor: Int, undo: [Undo], switches: [(TensorSwitch, Float)], path forced: Path? = nil
    ) -> [Undo] {
        let w = buffers[tensor]
        let entries =
            undo.reduce(0) { $0 + $1.positive.count + $1.negative.count }
            + switches.reduce(0) { $0 + $1.0.keptCount }
        let path = forced ?? Self.path(elements: w.count, entries: entries)
        let saved = switches.map { SavedValues(count: $0.0.keptCount) }
        switch path {
        case .scatter:
            // Newest first, and within a pack negative before positive: the reverse of the order of application,
            // so the base comes back exactly even where lists overlap.
            for u in undo.reversed() {
                let sv = UnsafeBufferPointer(u.saved.buffer)
                Self.gatherBack(u.negative, w, saved: UnsafeBufferPointer(rebasing: sv[u.positive.count...]))
                Self.gatherBack(u.positive, w, saved: sv)
            }
            for (k, (sw, weight)) in switches.enumerated() {
                let c = weight * sw.lambda
                switch sw.payload {
                case .values(let indices, let kept):
                    Self.scatter(indices, w, saved: saved[k].buffer, adding: c, times: kept.values)
                case .signs(let positive, let negative):
                    // x − c and x + (−c) are the same IEEE operation, so one loop serves both signs.
                    Self.scatter(positive, w, saved: saved[k].buffer, offset: 0, adding: c)
                    Self.scatter(negative, w, saved: saved[k].buffer, offset: positive.count, adding: -c)
                }
            }
        case .sweep:
            Self.sweep(w, undo: undo, switches: switches, saved: saved)
        }
        return zip(switches, saved).map { sw, s in
            Undo(tensor: tensor, positive: sw.0.positive, negative: sw.0.negative, saved: s)
        }
    }

    // MARK: Scatter

    /// w[indices[j]] += c (or c · values[j], a random-mask switch) for each j, saving the old value in
    /// saved[offset + j]; indices are disjoint, so chunks run in parallel (`SwitchKernel` does the adding).
    private static func scatter(
        _ indices: [UInt32], _ w: UnsafeMutableBufferPointer<Float>, saved: UnsafeMutableBufferPointer<Float>,
        offset: Int = 0, adding c: Float, times values: [Float]? = nil
    ) {
        indices.withUnsafeBufferPointer { ib in
            (values ?? []).withUnsafeBufferPointer { vb in
                let I = UncheckedSendable(ib)
                let V = UncheckedSendable(values == nil ? nil : vb)
                let W = UncheckedSendable(w.start)
                let S = UncheckedSendable(saved.start + offset)
                Parallel.forEachChunk(ib.count, minChunk: 1 << 16) { r in
                    SwitchKernel.add(
                        c, at: I.value, times: V.value, to: W.value, saving: S.value, from: r.lowerBound,
                        stop: r.upperBound)
                }
            }
        }
    }

    private static func gatherBack(
        _ indices: [UInt32], _ w: UnsafeMutableBufferPointer<Float>, saved: UnsafeBufferPointer<Float>
    ) {
        indices.withUnsafeBufferPointer { ib in
            let I = UncheckedSendable(ib)
            let W = UncheckedSendable(w)
            let S = UncheckedSendable(saved)
            Parallel.forEachChunk(ib.count, minChunk: 1 << 16) { r in
                for j in r { W.value[Int(I.value[j])] = S.value[j] }
            }
        }
    }

    // MARK: Sweep

    /// Walks the tensor in tiles, parallel over ranges of tiles; in each tile the undo lists run newest first
    /// (negative before positive), then the switches in order, so every element sees the same operations in the same order as the scatter.
    private static func sweep(
        _ w: UnsafeMutableBufferPointer<Float>, undo: [Undo], switches: [(TensorSwitch, Float)], saved: [SavedValues]
    ) {
        // Index lists in processing order, with their saved-value slots and the constant they add (nil: restore).
        // A list with values (random-mask switch) adds c · values[j]; an empty value list means c alone.
        var indexLists: [[UInt32]] = []
        var valueLists: [[Float]] = []
        var slots: [UnsafeMutablePointer<Float>] = []
        var adds: [Float?] = []
        for u in undo.reversed() {
            indexLists += [u.negative, u.positive]
            valueLists += [[], []]
            slots += [u.saved.start + u.positive.count, u.saved.start]
            adds += [nil, nil]
        }
        for (k, (sw, weight)) in switches.enumerated() {
            let c = weight * sw.lambda
            indexLists += [sw.positive, sw.negative]
            valueLists += [sw.values?.values ?? [], []]
            slots += [saved[k].start, saved[k].start + sw.positive.count]
            adds += [c, -c]
        }
        withPinned(indexLists) { pinned in
            withPinned(valueLists) { pinnedValues in
                let L = UncheckedSendable((pinned, slots, adds, pinnedValues))
                let W = UncheckedSendable(w)
                let tiles = (w.count + tile - 1) / tile
                Parallel.forEachChunk(tiles, minChunk: 4) { range in
                    let (lists, slots, adds, vals) = L.value
                    let w = W.value
                    // Per list, the first index at or after the range (binary search), then forward tile by tile.
                    let lo = UInt32(clamping: range.lowerBound * tile)
                    var cursor = lists.map { SwitchKernel.lowerBound($0, lo) }
                    for t in range {
                        let end = min(w.count, (t + 1) * tile)
                        for l in lists.indices {
                            let idx = lists[l]
                            let sv = slots[l]
                            let n = idx.count
                            var j = cursor[l]
                            if let c = adds[l] {
                                j = SwitchKernel.add(
                                    c, at: idx, times: vals[l].isEmpty ? nil : vals[l], to: w.start,
                                    saving: sv, from: j, below: end)
                            } else {
                                while j < n && Int(idx[j]) < end {
                                    w[Int(idx[j])] = sv[j]
                                    j += 1
                                }
                            }
                            cursor[l] = j
                        }
                    }
                }
            }
        }
    }

    /// Runs `body` with buffer pointers to every array (nested `withUnsafeBufferPointer` calls).
    static func withPinned<T>(_ arrays: [[T]], _ body: ([UnsafeBufferPointer<T>]) -> Void) {
        func pin(_ k: Int, _ acc: [UnsafeBufferPointer<T>]) {
            if k == arrays.count { return body(acc) }
            arrays[k].withUnsafeBufferPointer { pin(k + 1, acc + [$0]) }
        }
        pin(0, [])
    }
}
