import CheckpointIO
import TensorKernels

/// The switches of a mixed batch, lent by `SwitchableModel.withMixes`: the resident base and, per *mix* (one
/// weighted set of packs, shared by a group of examples), the lists each switched tensor adds.
///
/// A batch in which every example has its own mix cannot switch the resident model in place: the examples of one
/// forward pass need different weights at the same time. Instead a caller asks, layer by layer and group by group,
/// for a tensor as one mix sees it (`materialize`, `gatherRows`) in scratch of about one layer, runs that group's
/// rows through it, and moves on; the base is never changed and no per-task copy of the model exists.
///
/// The values written are those `SwitchableModel.activate` would leave in place, bit for bit: the same
/// `SwitchKernel` adds, packs in the order given, within a pack positive before negative.
///
/// Valid only inside the `withMixes` body that lends it (it points at the resident weights); do not keep it.
public struct MixedSwitches: @unchecked Sendable {
    // @unchecked: the base buffers are read-only here and held unchanged by the model's lock for the body's
    // duration; everything else is immutable.

    /// One index list of one switch, with the constant it adds (`c`, or `c · values[j]` when values are stored).
    struct AddList {
        let indices: [UInt32]
        let values: [Float]
        let c: Float
        /// The switch the list comes from and the list's position in its `masks`.
        let source: TensorSwitch
        let list: Int
    }

    let base: [UnsafeBufferPointer<Float>]
    let index: [String: Int]
    /// Per mix: tensor position → its lists in the order they are added.
    let lists: [[Int: [AddList]]]
    public let specs: [TensorSpec]

    init(
        base: [UnsafeBufferPointer<Float>], index: [String: Int], specs: [TensorSpec],
        mixes: [[Int: [(TensorSwitch, Float)]]]
    ) {
        self.base = base
        self.index = index
        self.specs = specs
        lists = mixes.map { byTensor in
            byTensor.mapValues { switches in
                switches.flatMap { sw, weight -> [AddList] in
                    // The constant and the list order of `WeightStore.transition`, so the sums agree bit for bit.
                    let c = weight * sw.lambda
                    switch sw.payload {
                    case .signs(let positive, let negative):
                        return [
                            AddList(indices: positive, values: [], c: c, source: sw, list: 0),
                            AddList(indices: negative, values: [], c: -c, source: sw, list: 1),
                        ]
                    case .values(let indices, let kept):
                        return [AddList(indices: indices, values: kept.values, c: c, source: sw, list: 0)]
                    }
                }
            }
        }
    }

    /// Number of mixes (groups) the transaction was opened with.
    public var mixCount: Int { lists.count }

    /// A tensor's base values, or nil when the model holds no tensor of that name.
    public func base(_ name: String) -> UnsafeBufferPointer<Float>? { index[name].map { base[$0] } }

    /// Whether `mix` changes tensor `name` at all (if not, its rows can read the base directly).
    public func switches(_ name: String, mix: Int) -> Bool {
        guard let t = index[name], let l = lists[mix][t] else { return false }
        return l.contains { !$0.indices.isEmpty }
    }

    /// Entries `mix` adds to tensor `name` (for the bytes a batch touches).
    public func keptEntries(_ name: String, mix: Int) -> Int {
        guard let t = index[name] else { return 0 }
        return (lists[mix][t] ?? []).reduce(0) { $0 + $1.indices.count }
    }

    /// Writes tensor `name` as `mix` sees it (base + the mix's switches) into `out`, in cache-sized tiles split
    /// across cores: each tile is copied from the base and switched while it is in cache.
    ///
    /// - Returns: false, writing nothing, when the model has no such tensor or the mix leaves it unchanged.
    /// - Precondition: `out` holds exactly the tensor's elements.
    @discardableResult
    public func materialize(_ name: String, mix: Int, into out: UnsafeMutableBufferPointer<Float>) -> Bool {
        guard let t = index[name], let adds = lists[mix][t], adds.contains(where: { !$0.indices.isEmpty }) else {
            return false
        }
        let src = base[t]
        precondition(out.count == src.count, "scratch for '\(name)' holds \(out.count) values, the tensor \(src.count)")
        guard let dst = out.baseAddress, let from = src.baseAddress else { return true }
        let n = src.count
        let tile = WeightStore.tile
        WeightStore.withPinned(adds.map(\.indices)) { indices in
            WeightStore.withPinned(adds.map(\.values)) { values in
                let constants = adds.map(\.c)
                let tiles = (n + tile - 1) / tile
                let shared = UncheckedSendable((indices, values, dst, from))
                Parallel.forEachChunk(tiles, minChunk: 4) { range in
                    let (indices, values, dst, from) = shared.value
                    var cursor = indices.map { SwitchKernel.lowerBound($0, UInt32(clamping: range.lowerBound * tile)) }
                    for k in range {
                        let lo = k * tile
                        let hi = min(n, lo + tile)
                        (dst + lo).update(from: from + lo, count: hi - lo)
                        for l in indices.indices {
                            cursor[l] = SwitchKernel.add(
                                constants[l], at: indices[l], times: values[l].isEmpty ? nil : values[l], to: dst,
                                from: cursor[l], below: hi)
                        }
                    }
                }
            }
        }
        return true
    }

    /// One tensor as one mix sees it, resolved once so that writing it tile by tile looks nothing up: what the
    /// tile-fused mixed forward pass switches a weight tile with, just before its product reads it.
    public struct TensorMix: @unchecked Sendable {
        // @unchecked: `base` is read-only and valid for the lending `withMixes` body, like `MixedSwitches`.
        let base: UnsafeBufferPointer<Float>
        let adds: [AddList]
        /// The lists' switches as bit masks, one per list, when this CPU runs the masked pass (AVX-512).
        let masks: [SwitchMasks]?
        /// The masked pass's lists, built once when no list stores values (sign lists start nowhere in particular);
        /// with stored values each tile finds where its values start.
        let signLists: [SwitchKernel.MaskedList]?

        init(base: UnsafeBufferPointer<Float>, adds: [AddList], masks: [SwitchMasks]?) {
            self.base = base
            self.adds = adds
            self.masks = masks
            signLists = masks.flatMap { masks in
                adds.allSatisfy(\.values.isEmpty)
                    ? zip(adds, masks).map { SwitchKernel.MaskedList(masks: $1, list: $0.list, c: $0.c, valueStart: 0) }
                    : nil
            }
        }

        /// Number of elements of the tensor.
        public var count: Int { base.count }

        /// Writes elements `elements` of the tensor as the mix sees it into `out` (`elements.count` values): the
        /// base copied, then each list's entries in the range added, list after list, with the same IEEE adds in
        /// the same order as `materialize`, so the values agree bit for bit. Single-threaded (the caller splits
        /// tiles across cores).
        ///
        /// With masks, the 16-aligned part of the range is switched in one vector pass (`SwitchKernel.writeMasked`:
        /// per 16 elements one load, a masked add per list, one store) and only the ragged ends by the lists.
        public func write(_ elements: Range<Int>, into out: UnsafeMutablePointer<Float>) {
            precondition(elements.lowerBound >= 0 && elements.upperBound <= base.count, "tile outside the tensor")
            guard !elements.isEmpty else { return }
            let lo = (elements.lowerBound + 15) & ~15
            let hi = elements.upperBound & ~15
            guard let masks, lo < hi else { return writeLists(elements, into: out) }
            if lo > elements.lowerBound { writeLists(elements.lowerBound..<lo, into: out) }
            let lists =
                signLists
                ?? zip(adds, masks).map { add, m in
                    SwitchKernel.MaskedList(
                        masks: m, list: add.list, c: add.c,
                        valueStart: add.values.isEmpty
                            ? 0 : add.indices.withUnsafeBufferPointer { SwitchKernel.lowerBound($0, UInt32(lo)) })
                }
            SwitchKernel.writeMasked(
                base: base.start, start: lo, count: hi - lo, lists: lists, into: out + (lo - elements.lowerBound))
            if hi < elements.upperBound {
                writeLists(hi..<elements.upperBound, into: out + (hi - elements.lowerBound))
            }
        }

        /// `write` by the index lists: the base copied, each list's entries in the range added.
        func writeLists(_ elements: Range<Int>, into out: UnsafeMutablePointer<Float>) {
            let lo = elements.lowerBound
            out.update(from: base.start + lo, count: elements.count)
            for list in adds {
                list.indices.withUnsafeBufferPointer { indices in
                    let from = SwitchKernel.lowerBound(indices, UInt32(clamping: lo))
                    if list.values.isEmpty {
                        SwitchKernel.add(
                            list.c, at: indices, to: out, origin: lo, from: from, below: elements.upperBound)
                    } else {
                        list.values.withUnsafeBufferPointer { values in
                            _ = SwitchKernel.add(
                                list.c, at: indices, times: values, to: out, origin: lo, from: from,
                                below: elements.upperBound)
                        }
                    }
                }
            }
        }
    }

    /// Tensor `name` as `mix` sees it, for writing tile by tile; nil when the model has no such tensor or the mix
    /// leaves it unchanged (its rows then read the base).
    public func tensorMix(_ name: String, mix: Int) -> TensorMix? {
        guard let t = index[name], let adds = lists[mix][t], adds.contains(where: { !$0.indices.isEmpty }) else {
            return nil
        }
        let kept = adds.filter { !$0.indices.isEmpty }
        // Masks need 16-element blocks and at most 64 lists per pass; a mix beyond that keeps the lists.
        let masked = SwitchMasks.available && kept.count <= 64 && base[t].count >= 16
        return TensorMix(base: base[t], adds: kept, masks: masked ? kept.map(\.source.masks) : nil)
    }

    /// Writes rows `rows` of a `rows × width` tensor (an embedding table) as `mix` sees them, one after another
    /// into `out`: only the rows a batch looks up are switched, each list searched for the row's span.
    ///
    /// - Precondition: the tensor exists, every row is inside it, and `out` holds `rows.count × width` values.
    public func gatherRows(
        _ name: String, mix: Int, rows: [Int], width: Int, into out: UnsafeMutableBufferPointer<Float>
    ) {
        guard let t = index[name], let dst = out.baseAddress else {
            preconditionFailure("no tensor '\(name)' to gather rows from")
        }
        let src = base[t]
        precondition(out.count >= rows.count * width, "scratch too small for \(rows.count) rows of '\(name)'")
        for (r, row) in rows.enumerated() {
            precondition(row >= 0 && (row + 1) * width <= src.count, "row \(row) outside '\(name)'")
            (dst + r * width).update(from: src.start + row * width, count: width)
        }
        guard let adds = lists[mix][t], !adds.isEmpty else { return }
        WeightStore.withPinned(adds.map(\.indices)) { indices in
            WeightStore.withPinned(adds.map(\.values)) { values in
                for l in indices.indices {
                    for (r, row) in rows.enumerated() {
                        let lo = row * width
                        SwitchKernel.add(
                            adds[l].c, at: indices[l], times: values[l].isEmpty ? nil : values[l], to: dst + r * width,
                            origin: lo, from: SwitchKernel.lowerBound(indices[l], UInt32(clamping: lo)),
                            below: lo + width)
                    }
                }
            }
        }
    }
}
