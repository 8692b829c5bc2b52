import CheckpointIO
import TensorKernels

// The masks of the generalized task arithmetic family: one block's 0/1 mask, DELLA's rank-sampled mask, and the
// counter-based generator their random draws come from.

extension GTA {
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

    /// DELLA's MagPrune: within each row, keep probability rises linearly with the rank of |dᵢ| from
    /// density − ε (smallest) to density + ε (largest); draws come from the counter-based generator.
    static func dellaMask(
        _ c: StreamingMergeContext, base: TensorSource, model: TensorSource, stream: Int, density: Double,
        epsilon: Double
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
