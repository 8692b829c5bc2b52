import CheckpointIO

/// The LoRA math over an adapter folder: the merged weight W + (B·A)·s and the low-rank product itself.
///
/// `merged` reproduces PEFT's `merge_and_unload()` in Float: B·A summed over the rank in order with fused
/// multiply-adds (as a CPU sgemm micro-kernel does), times s, rounded to the adapter's dtype, added to W and
/// rounded to W's dtype. So the task vector of an adapter equals the one of PEFT's merged model, and a pack or a
/// merge made from `base + adapter` equals the one made from the merged model (checked against PEFT and mergekit
/// by the fixtures of `scripts/fixtures/lora_fixtures.py`).
extension LoRAAdapterFolder {
    /// The base tensor `name` after merging the adapter, given its current values and dtype; nil when the adapter
    /// leaves it unchanged. Call `check(against:)` first.
    public func merged(_ name: String, base values: [Float], dtype: DType) throws(CheckpointError) -> [Float]? {
        guard let update = updates[name] else { return nil }
        switch update {
        case .replacement(let key):
            let v = try file.tensor(key).floats()
            guard v.count == values.count else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(path): tensor '\(key)' has \(v.count) elements; the base's '\(name)' has \(values.count).")
            }
            return Self.rounded(v, to: dtype)
        case .biasShift(let key, let scaling):
            let v = try file.tensor(key).floats()
            guard v.count == values.count else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(path): tensor '\(key)' has \(v.count) elements; the base's '\(name)' has \(values.count).")
            }
            // PEFT: base_layer.bias + lora_B.bias * scaling.
            return Self.rounded(zip(values, v).map { $0 + $1 * scaling }, to: dtype)
        case .lowRank(let a, let b, let scaling, let transposed, let embedding):
            let av = try file.tensor(a)
            let bv = try file.tensor(b)
            let r = av.shape[0]
            let (A, B) = (try av.floats(), try bv.floats())
            let (m, n) = (bv.shape[0], av.shape[1])
            // Δ = B·A (m × n), or its transpose (n × m) = Aᵀ·Bᵀ with the same sum order per element.
            let rows = transposed ? n : m
            let cols = transposed ? m : n
            guard rows * cols == values.count else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(path): the update of '\(name)' has \(rows * cols) elements; the base has \(values.count).")
            }
            let left = transposed ? Self.transpose(A, rows: r, cols: n) : B  // rows × r
            let right = transposed ? Self.transpose(B, rows: m, cols: r) : A  // r × cols
            var delta = Self.lowRankProduct(left, right, rows: rows, rank: r, cols: cols, scaling: scaling)
            let factorDType = bv.dtype
            if factorDType != .F32 && factorDType != .F64 { delta = Self.rounded(delta, to: factorDType) }
            if embedding { delta = Self.rounded(delta, to: dtype) }
            delta.withUnsafeMutableBufferPointer { d in
                values.withUnsafeBufferPointer { w in Elementwise.axpy(1, w, d) }  // Δ + 1·W == W + Δ exactly
            }
            return Self.rounded(delta, to: dtype)
        }
    }

    /// Writes `base` with the adapter merged into it to the model folder `output` (base dtypes, config and
    /// tokenizer files kept; atomic), as mergekit does before merging a `model+lora` input.
    public func writeMerged(base: ModelFolder, to output: String, overwrite: Bool = false) throws(CheckpointError) {
        try check(against: base)
        let infos = base.tensorInfos
        let writer = try ModelWriter(
            directory: output, tensors: infos.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) },
            overwrite: overwrite)
        for info in infos {
            let view = try base.tensor(info.name)
            if updates[info.name] != nil, let m = try merged(info.name, base: try view.floats(), dtype: info.dtype) {
                try writer.write(info.name, floats: m)
            } else {
                try writer.write(info.name, from: view)
            }
            view.release()
        }
        try writer.copySupportFiles(from: base, dtype: nil)
        try writer.finish()
    }

    /// (L·R)·scaling for L (rows × rank) and R (rank × cols), row-major: per output row, Σ_k L[i,k]·R[k,:] in k
    /// order with fused multiply-adds, 8 columns at a time; rows split across cores.
    public static func lowRankProduct(
        _ left: [Float], _ right: [Float], rows: Int, rank: Int, cols: Int, scaling: Float
    ) -> [Float] {
        precondition(left.count == rows * rank && right.count == rank * cols, "factor sizes do not match")
        return [Float](unsafeUninitializedCapacity: rows * cols) { out, count in
            left.withUnsafeBufferPointer { lb in
                right.withUnsafeBufferPointer { rb in
                    let L = UncheckedSendable(lb)
                    let R = UncheckedSendable(rb)
                    let O = UncheckedSendable(out)
                    Parallel.forEachChunk(rows, minChunk: max(1, (1 << 15) / max(1, cols * rank))) { range in
                        guard let rp = R.value.baseAddress, let op = O.value.baseAddress else { return }
                        let rr = UnsafeRawPointer(rp)
                        let orr = UnsafeMutableRawPointer(op)
                        let sv = SIMD8<Float>(repeating: scaling)
                        for i in range {
                            var j = 0
                            while j + 8 <= cols {
                                var acc = SIMD8<Float>(repeating: 0)
                                for k in 0..<rank {
                                    let x = rr.loadUnaligned(fromByteOffset: (k * cols + j) * 4, as: SIMD8<Float>.self)
                                    acc = acc.addingProduct(SIMD8(repeating: L.value[i * rank + k]), x)
                                }
                                orr.storeBytes(of: acc * sv, toByteOffset: (i * cols + j) * 4, as: SIMD8<Float>.self)
                                j += 8
                            }
                            while j < cols {
                                var acc: Float = 0
                                for k in 0..<rank {
                                    acc = acc.addingProduct(L.value[i * rank + k], R.value[k * cols + j])
                                }
                                O.value[i * cols + j] = acc * scaling
                                j += 1
                            }
                        }
                    }
                }
            }
            count = rows * cols
        }
    }

    static func transpose(_ x: [Float], rows: Int, cols: Int) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        for i in 0..<rows { for j in 0..<cols { out[j * rows + i] = x[i * cols + j] } }
        return out
    }

    /// Rounds Float values to what `dtype` can hold (round to nearest even), kept as Float.
    static func rounded(_ v: [Float], to dtype: DType) -> [Float] {
        switch dtype {
        case .BF16: return v.map { DTypeConversion.floatFromBFloat16Bits(DTypeConversion.bfloat16Bits($0)) }
        case .F16: return v.map { DTypeConversion.floatFromHalfBits(DTypeConversion.halfBits($0)) }
        default: return v
        }
    }
}
