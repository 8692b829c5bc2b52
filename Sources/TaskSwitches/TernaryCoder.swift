import CheckpointIO

/// Codes a ternary tensor (mask S_A and signs S_P of one T-Switch) with the adaptive binary range coder.
///
/// The tensor is viewed as rows × cols (cols = last dimension; a vector is one row). Per row, one bit says whether
/// the row keeps anything (the rows of untouched tokens in an embedding matrix are empty). In a non-empty row, one
/// mask bit per entry is coded in a context of: the two mask bits to its left, the bit above it, how many of the
/// three rows before that kept this column, and the density class of the previous non-empty row. Each kept entry
/// then gets a sign bit in a context of the signs to its left and above (none, +, −).
///
/// Task vectors are not i.i.d.: whole rows and columns of a weight matrix move together, so these contexts code
/// *below* the i.i.d. floor H(d) + d on real fine-tunes, and within ~1 % of it on random masks (measurements in
/// `docs/pack-format.md`; the three-bit left/above context alone lost to zstd on real embeddings).
///
/// Rows are grouped into blocks of about `blockEntries` entries, each coded independently with fresh models, so
/// blocks encode and decode in parallel.
package enum TernaryCoder {
    static let blockEntries = 1 << 20
    /// The longest row the coder takes (its per-column state is 3 bytes per column). Real last dimensions are
    /// far shorter; the bound keeps a crafted pack from asking for gigabytes of state.
    static let maxColumns = 1 << 26

    /// The row ranges of the blocks of a rows × cols tensor.
    static func blocks(rows: Int, cols: Int) -> [Range<Int>] {
        guard rows > 0 else { return [] }
        let per = max(1, blockEntries / max(1, cols))
        return stride(from: 0, to: rows, by: per).map { $0..<min(rows, $0 + per) }
    }

    /// Encodes kept positive and negative flat indices (ascending, disjoint) into one byte stream per block.
    package static func encode(positive: [UInt32], negative: [UInt32], rows: Int, cols: Int) -> [[UInt8]] {
        let n = rows * cols
        let ternary = UnsafeMutableBufferPointer<Int8>.allocate(capacity: max(1, n))
        defer { ternary.deallocate() }
        ternary.initialize(repeating: 0)
        for i in positive { ternary[Int(i)] = 1 }
        for i in negative { ternary[Int(i)] = -1 }
        let ranges = blocks(rows: rows, cols: cols)
        var out = [[UInt8]](repeating: [], count: ranges.count)
        out.withUnsafeMutableBufferPointer { ob in
            let O = UncheckedSendable(ob)
            let T = UncheckedSendable(UnsafeBufferPointer(ternary))
            Parallel.forEachChunk(ranges.count, minChunk: 1) { chunk in
                for b in chunk {
                    var enc = Encoding(encoder: RangeEncoder(capacity: ranges[b].count * cols / 8), source: T.value)
                    var sink = NoSink()
                    code(&enc, rows: ranges[b], cols: cols, sink: &sink)
                    O.value[b] = enc.encoder.finish()
                }
            }
        }
        return out
    }

    struct Damaged: Error {}

    /// Decodes the blocks back into ascending positive and negative flat indices.
    ///
    /// - Parameter maxKept: the recorded kept count; a block that decodes more is damaged, so a crafted stream
    ///   cannot make the decoder allocate more than the record declares (and the pack limits bound).
    /// - Throws: `Damaged` when a block's stream ends early or decodes more than `maxKept` entries.
    static func decode(_ streams: [UnsafeRawBufferPointer], rows: Int, cols: Int, maxKept: Int = .max) throws(Damaged)
        -> (
            positive: [UInt32], negative: [UInt32]
        )
    {
        let ranges = blocks(rows: rows, cols: cols)
        guard ranges.count == streams.count else { throw Damaged() }
        var parts = [(pos: [UInt32], neg: [UInt32], ok: Bool)](repeating: ([], [], false), count: ranges.count)
        parts.withUnsafeMutableBufferPointer { pb in
            let P = UncheckedSendable(pb)
            let S = UncheckedSendable(streams)
            Parallel.forEachChunk(ranges.count, minChunk: 1) { chunk in
                for b in chunk {
                    var dec = Decoding(decoder: RangeDecoder(S.value[b]))
                    var sink = IndexSink(limit: maxKept)
                    code(&dec, rows: ranges[b], cols: cols, sink: &sink)
                    P.value[b] = (sink.positive, sink.negative, !dec.decoder.overran && !sink.full)
                }
            }
        }
        guard parts.allSatisfy(\.ok) else { throw Damaged() }
        var positive: [UInt32] = []
        var negative: [UInt32] = []
        positive.reserveCapacity(parts.reduce(0) { $0 + $1.pos.count })
        negative.reserveCapacity(parts.reduce(0) { $0 + $1.neg.count })
        for p in parts {
            positive += p.pos
            negative += p.neg
        }
        return (positive, negative)
    }

    // MARK: The model, shared by encoder and decoder

    /// Codes one bit: the encoder writes `bit` and returns it, the decoder ignores it and returns what it reads.
    protocol BitCoder {
        /// The true value at a flat index (encoder only; the decoder returns 0).
        func source(_ i: Int) -> Int8
        mutating func code(_ bit: Bool, _ m: inout BinaryModel) -> Bool
        /// The decoder ran past its input: stop (the block is damaged).
        var failed: Bool { get }
    }

    struct Encoding: BitCoder {
        var encoder: RangeEncoder
        let source: UnsafeBufferPointer<Int8>
        func source(_ i: Int) -> Int8 { source[i] }
        var failed: Bool { false }
        @inline(__always) mutating func code(_ bit: Bool, _ m: inout BinaryModel) -> Bool {
            encoder.encode(bit, &m)
            return bit
        }
    }

    struct Decoding: BitCoder {
        var decoder: RangeDecoder
        func source(_ i: Int) -> Int8 { 0 }
        var failed: Bool { decoder.overran }
        @inline(__always) mutating func code(_ bit: Bool, _ m: inout BinaryModel) -> Bool { decoder.decode(&m) }
    }

    protocol Sink {
        mutating func kept(_ i: Int, negative: Bool)
        /// More entries arrived than the sink takes: stop coding.
        var full: Bool { get }
    }
    struct NoSink: Sink {
        mutating func kept(_ i: Int, negative: Bool) {}
        var full: Bool { false }
    }
    struct IndexSink: Sink {
        var positive: [UInt32] = []
        var negative: [UInt32] = []
        let limit: Int
        private(set) var full = false
        init(limit: Int = .max) { self.limit = limit }
        mutating func kept(_ i: Int, negative n: Bool) {
            guard positive.count + negative.count < limit else {
                full = true
                return
            }
            if n { negative.append(UInt32(i)) } else { positive.append(UInt32(i)) }
        }
    }

    /// Density class of a row with `kept` of `cols` entries: < 1/32, < 1/8, < 1/3, or more.
    @inline(__always)
    static func densityClass(_ kept: Int, _ cols: Int) -> Int {
        kept * 32 < cols ? 0 : (kept * 8 < cols ? 1 : (kept * 3 < cols ? 2 : 3))
    }

    /// The one coding loop: the encoder and the decoder walk the same contexts, so they cannot drift apart.
    @inline(__always)
    static func code<C: BitCoder, S: Sink>(_ c: inout C, rows: Range<Int>, cols: Int, sink: inout S) {
        var rowModels = [BinaryModel](repeating: BinaryModel(), count: 2)
        var mask = [BinaryModel](repeating: BinaryModel(), count: 2 * 2 * 2 * 4 * 4)
        var sign = [BinaryModel](repeating: BinaryModel(), count: 9)
        // Per column: the kept bits of the last four rows (bit 0 = the row above), and the row above's values.
        var history = [UInt8](repeating: 0, count: cols)
        var above = [Int8](repeating: 0, count: cols)
        var current = [Int8](repeating: 0, count: cols)
        var previousNonEmpty = 0
        var rowClass = 0
        for r in rows {
            if c.failed || sink.full { return }
            let base = r * cols
            var nonEmpty = false
            for k in 0..<cols where c.source(base + k) != 0 {
                nonEmpty = true
                break
            }
            nonEmpty = c.code(nonEmpty, &rowModels[previousNonEmpty])
            previousNonEmpty = nonEmpty ? 1 : 0
            if !nonEmpty {
                for k in 0..<cols {
                    history[k] = (history[k] << 1) & 0x0F
                    above[k] = 0
                }
                continue
            }
            var kept = 0
            var l1 = 0
            var l2 = 0
            var leftSign = 1
            for k in 0..<cols {
                let h = Int(history[k])
                let ctx =
                    l1 | (l2 << 1) | ((h & 1) << 2) | (((h >> 1) & 1 + (h >> 2) & 1 + (h >> 3) & 1) << 3)
                    | (rowClass << 5)
                let v = c.source(base + k)
                let bit = c.code(v != 0, &mask[ctx])
                var value: Int8 = 0
                if bit {
                    let s = c.code(v < 0, &sign[leftSign * 3 + Int(above[k]) + 1])
                    value = s ? -1 : 1
                    sink.kept(base + k, negative: s)
                    kept += 1
                    leftSign = s ? 0 : 2
                } else {
                    leftSign = 1
                }
                current[k] = value
                l2 = l1
                l1 = bit ? 1 : 0
                history[k] = ((history[k] << 1) | (bit ? 1 : 0)) & 0x0F
            }
            swap(&above, &current)
            rowClass = densityClass(kept, cols)
        }
    }
}
