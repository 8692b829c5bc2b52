import CMergeKernels
import CheckpointIO

/// The index lists of one switched tensor as bit masks (bit j of word b: element 16b + j is listed), with the
/// stored values of a random-mask list copied beside them: what lets a tile be switched by one vector pass over
/// it (`SwitchKernel.writeMasked`) rather than one scattered add per kept entry.
///
/// Measured on the 32-pack mixed batch of real texts (docs/bench-mixed.md): the scattered adds and the tile copy
/// were a third of the time a batch spent beyond the base model. Two bits per element for a T-Switch (a 30 %-kept
/// pack's indices take 9.6), built once per pack on its first mixed use and kept with it.
public final class SwitchMasks: @unchecked Sendable {
    // @unchecked: written once in init, read-only afterwards; freed in deinit, while no reader can hold it.

    /// Elements of the tensor.
    public let count: Int
    /// Mask words per list: ⌈count / 16⌉.
    let wordsPerList: Int
    let words: UnsafeMutableBufferPointer<UInt16>
    /// Per list: its stored values (a random-mask list), or nil (a sign list).
    let values: [UnsafeMutableBufferPointer<Float>?]

    /// Whether this CPU runs the masked pass (AVX-512); elsewhere callers keep the index-list loop.
    public static let available: Bool = tswitch_fused_level() >= 2

    /// - Parameters:
    ///   - lists: per list its strictly ascending flat indices (each below `count`) and, for a random-mask list,
    ///     one stored value per index.
    ///   - count: elements of the tensor.
    public init(lists: [(indices: [UInt32], values: [Float]?)], count: Int) {
        self.count = count
        wordsPerList = (count + 15) / 16
        words = .allocate(capacity: max(1, lists.count * wordsPerList))
        words.initialize(repeating: 0)
        var stored: [UnsafeMutableBufferPointer<Float>?] = []
        for (l, list) in lists.enumerated() {
            let row = words.start + l * wordsPerList
            for i in list.indices {
                precondition(Int(i) < count, "index \(i) outside a tensor of \(count) elements")
                row[Int(i >> 4)] |= UInt16(1) << UInt16(i & 15)
            }
            if let v = list.values {
                precondition(v.count == list.indices.count, "one value per index")
                let copy = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, v.count))
                _ = copy.initialize(from: v)
                stored.append(copy)
            } else {
                stored.append(nil)
            }
        }
        values = stored
    }

    deinit {
        words.deallocate()
        for v in values { v?.deallocate() }
    }

    /// Number of lists.
    public var listCount: Int { values.count }
}

extension SwitchKernel {
    /// One list of a masked switch: list `list` of `masks`, added with constant `c`; `valueStart` is the position in
    /// the list of its first entry at or after the written range (0 for a sign list: unused).
    public struct MaskedList {
        public let masks: SwitchMasks
        public let list: Int
        public let c: Float
        public let valueStart: Int

        public init(masks: SwitchMasks, list: Int, c: Float, valueStart: Int) {
            self.masks = masks
            self.list = list
            self.c = c
            self.valueStart = valueStart
        }
    }

    /// Writes elements `start ..< start + count` of a switched tensor into `out`: `base` (element 0 of the tensor)
    /// copied, then the lists added in order, with the IEEE operations of `add` in its order, so the values equal
    /// the index-list path bit for bit.
    ///
    /// - Precondition: `SwitchMasks.available`; `start` and `count` multiples of 16; the range inside every list's
    ///   tensor; at most 64 lists.
    public static func writeMasked(
        base: UnsafePointer<Float>, start: Int, count: Int, lists: [MaskedList], into out: UnsafeMutablePointer<Float>
    ) {
        precondition(SwitchMasks.available, "the masked switch needs AVX-512")
        precondition(start % 16 == 0 && count % 16 == 0, "masked tiles start and end at multiples of 16")
        precondition(lists.count <= Int(TSWITCH_MASK_MAX_LISTS), "more than 64 lists in one masked switch")
        // On the stack: this runs per tile and group, where a heap array per call showed in the profile.
        withUnsafeTemporaryAllocation(of: tswitch_mask_list.self, capacity: max(1, lists.count)) { c in
            for (i, l) in lists.enumerated() {
                precondition(start + count <= l.masks.count, "tile outside the tensor")
                c.initializeElement(
                    at: i,
                    to: tswitch_mask_list(
                        mask: UnsafePointer(l.masks.words.start + l.list * l.masks.wordsPerList + start / 16),
                        values: l.masks.values[l.list].map { UnsafePointer($0.start + l.valueStart) }, c: l.c))
            }
            tswitch_switch_tile_avx512(base + start, out, count, c.baseAddress, Int32(lists.count))
        }
    }
}
