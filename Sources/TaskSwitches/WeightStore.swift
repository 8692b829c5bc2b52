import CheckpointIO

/// The resident `Float` tensors of a `SwitchableModel`, and the scatter loops that switch them.
///
/// Owned by the model's mutex; never shared outside it.
final class WeightStore {
    let buffers: [UnsafeMutableBufferPointer<Float>]

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

    /// Adds `weight · λ` at the positive indices and subtracts it at the negative ones (θ + w·λ·s in Float, the
    /// same operation `SwitchApplier` performs), returning the overwritten values (positive order, then negative).
    func apply(_ sw: TensorSwitch, weight: Float, to tensor: Int) -> [Float] {
        let c = weight * sw.lambda
        let w = buffers[tensor]
        let np = sw.positive.count
        return [Float](unsafeUninitializedCapacity: sw.keptCount) { saved, count in
            // x − c and x + (−c) are the same IEEE operation, so one loop serves both signs.
            Self.scatter(sw.positive, w, saved: saved, offset: 0, adding: c)
            Self.scatter(sw.negative, w, saved: saved, offset: np, adding: -c)
            count = sw.keptCount
        }
    }

    /// Writes saved values back (the inverse of `apply`).
    func restore(positive: [UInt32], negative: [UInt32], saved: [Float], to tensor: Int) {
        let w = buffers[tensor]
        saved.withUnsafeBufferPointer { sv in
            Self.gatherBack(positive, w, saved: UnsafeBufferPointer(rebasing: sv[0..<positive.count]))
            Self.gatherBack(negative, w, saved: UnsafeBufferPointer(rebasing: sv[positive.count...]))
        }
    }

    /// w[i] += c for each index, saving the old value; indices are disjoint, so chunks run in parallel.
    private static func scatter(
        _ indices: [UInt32], _ w: UnsafeMutableBufferPointer<Float>, saved: UnsafeMutableBufferPointer<Float>,
        offset: Int, adding c: Float
    ) {
        indices.withUnsafeBufferPointer { ib in
            let I = UncheckedSendable(ib)
            let W = UncheckedSendable(w)
            let S = UncheckedSendable(saved)
            Parallel.forEachChunk(ib.count, minChunk: 1 << 16) { r in
                for j in r {
                    let i = Int(I.value[j])
                    let old = W.value[i]
                    S.value[offset + j] = old
                    W.value[i] = old + c
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
}
