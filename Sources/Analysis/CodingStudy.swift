import CZstd
import CheckpointIO
import TaskSwitches
import TensorKernels

/// Measures candidate codings of T-Switch masks and signs on a real task vector, to justify the pack's coder.
///
/// For each density d (drop ratio 1 − d), P-Discard is run on every float tensor and the total size is computed
/// for: the pack's context-modelled range coder; zstd (level 19) over the bit-packed mask followed by the packed
/// signs; zstd over a 2-bit-per-entry ternary array; and the official code's group-of-4 layout. Sizes are compared
/// with the i.i.d. entropy floor H(d) + d bits per parameter (per tensor, summed).
public enum CodingStudy {
    public struct Row: Sendable {
        public let dropRatio: Double
        public let density: Double
        public let parameters: Int
        /// Σ over tensors of n·(H(dₜ) + dₜ), in bits.
        public let floorBits: Double
        /// Bits per coding, keyed by coding name.
        public let bits: [String: Double]
    }

    public static let codings = [
        "ctx-range (ours)", "zstd-19 bitmask+signs", "zstd-19 2-bit ternary", "official group-of-4",
    ]

    public static func run(base: ModelFolder, fineTuned: ModelFolder, dropRatios: [Double]) throws(SwitchError) -> [Row]
    {
        var rows: [Row] = []
        for alpha in dropRatios {
            let pack = try SwitchPack.build(base: base, fineTuned: fineTuned, dropRatio: alpha, task: "study")
            var floor = 0.0
            var bits = [String: Double]()
            for t in pack.tensors {
                let n = t.elementCount
                let d = t.density
                if d > 0 && d < 1 { floor += Double(n) * (entropy(d) + d) } else { floor += Double(t.keptCount) }
                let (r, c) = t.rowsCols
                let ours = TernaryCoder.encode(positive: t.positive, negative: t.negative, rows: r, cols: c)
                bits[codings[0], default: 0] += Double(ours.reduce(0) { $0 + $1.count } * 8)
                // Bit-packed mask (n bits), then one bit per kept entry in index order.
                var mask = [UInt8](repeating: 0, count: (n + 7) / 8)
                var ternary2 = [UInt8](repeating: 0, count: (n + 3) / 4)
                var signOf = [Int8](repeating: 0, count: n)
                for i in t.positive { signOf[Int(i)] = 1 }
                for i in t.negative { signOf[Int(i)] = -1 }
                var signs = [UInt8]()
                signs.reserveCapacity(t.keptCount / 8 + 1)
                var acc: UInt8 = 0
                var nb = 0
                var groups = 0
                for i in 0..<n {
                    let v = signOf[i]
                    if v != 0 {
                        mask[i >> 3] |= 1 << UInt8(i & 7)
                        ternary2[i >> 2] |= (v > 0 ? 1 : 2) << UInt8(2 * (i & 3))
                        if v < 0 { acc |= 1 << UInt8(nb) }
                        nb += 1
                        if nb == 8 {
                            signs.append(acc)
                            acc = 0
                            nb = 0
                        }
                    }
                    if i & 3 == 3 || i == n - 1 {
                        let g = i & ~3
                        if (g...i).contains(where: { signOf[$0] != 0 }) { groups += 1 }
                    }
                }
                if nb > 0 { signs.append(acc) }
                bits[codings[1], default: 0] += Double(zstd(mask + signs) * 8)
                bits[codings[2], default: 0] += Double(zstd(ternary2) * 8)
                // Official: one bit per group of 4, then 4 occupancy bits and one sign per kept entry per non-empty group.
                bits[codings[3], default: 0] += Double((n + 3) / 4 + 4 * groups + t.keptCount)
            }
            let params = pack.parameterCount
            rows.append(
                Row(
                    dropRatio: alpha, density: Double(pack.keptCount) / Double(params), parameters: params,
                    floorBits: floor, bits: bits))
        }
        return rows
    }

    static func entropy(_ d: Double) -> Double { -(d * log2(d)) - (1 - d) * log2(1 - d) }

    /// Compressed size of `bytes` with zstd level 19.
    static func zstd(_ bytes: [UInt8]) -> Int {
        let bound = ZSTD_compressBound(bytes.count)
        var out = [UInt8](repeating: 0, count: bound)
        let n = out.withUnsafeMutableBytes { o in
            bytes.withUnsafeBytes { i in ZSTD_compress(o.baseAddress, bound, i.baseAddress, bytes.count, 19) }
        }
        return ZSTD_isError(n) != 0 ? bytes.count : n
    }
}

#if canImport(Glibc)
    import Glibc
#endif
