import CheckpointIO
import COpenBLAS
import Foundation
import TensorKernels

/// The row-wise steps of a transformer layer on `rows × width` row-major buffers, and the OpenBLAS matrix product.
///
/// Each kernel splits rows across cores; rows are independent, so chunks touch disjoint memory.
enum EncoderKernels {
    /// OpenBLAS runs single-threaded and the encoder splits work across cores itself.
    ///
    /// Measured on the shared 2-core machine (load average 8-10 from other jobs), 64 texts of 128 tokens: OpenBLAS
    /// with 2 threads 1.9 sentences/s (its worker threads spin-wait and lose their cores), 1 thread 4.2 sentences/s,
    /// 1 thread with rows split over 2 cores by the encoder 5.4 sentences/s and more without the load.
    static let singleThreadedBLAS: Void = { openblas_set_num_threads(1) }()

    /// `c[rows × out] = beta·c + a[rows × inner] · wᵀ`, with `w` stored `out × inner` (PyTorch's Linear layout).
    ///
    /// Rows are split into one block per core, each a single-threaded OpenBLAS product (blocks are disjoint rows of
    /// `a` and `c`; `w` is shared read-only).
    static func linear(
        _ a: UnsafePointer<Float>, rows: Int, inner: Int, weight: UnsafePointer<Float>, out: Int,
        into c: UnsafeMutablePointer<Float>, beta: Float
    ) {
        guard rows > 0 else { return }
        _ = singleThreadedBLAS
        let blocks = max(1, min(Parallel.coreCount, rows / 16))
        let per = (rows + blocks - 1) / blocks
        let box = UncheckedSendable((a, weight, c))
        let run: @Sendable (Int) -> Void = { i in
            let (a, weight, c) = box.value
            let lo = i * per
            let n = min(rows, lo + per) - lo
            guard n > 0 else { return }
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasTrans, blasint(n), blasint(out), blasint(inner), 1, a + lo * inner,
                blasint(inner), weight, blasint(inner), beta, c + lo * out, blasint(out))
        }
        if blocks == 1 {
            run(0)
        } else {
            DispatchQueue.concurrentPerform(iterations: blocks, execute: run)
        }
    }

    /// Fills each row of `c` with `bias` (plus `residual`'s row when given), ready for a `beta = 1` product.
    static func fillRows(
        _ c: UnsafeMutableBufferPointer<Float>, rows: Int, bias: UnsafeBufferPointer<Float>,
        residual: UnsafeBufferPointer<Float>? = nil
    ) {
        let width = bias.count
        let box = UncheckedSendable((c, bias, residual))
        Parallel.forEachChunk(rows, minChunk: max(1, 16384 / max(1, width))) { range in
            let (c, bias, residual) = box.value
            for r in range {
                let dst = c.baseAddress! + r * width
                if let residual {
                    let src = residual.baseAddress! + r * width
                    for j in 0..<width { dst[j] = src[j] + bias[j] }
                } else {
                    dst.update(from: bias.baseAddress!, count: width)
                }
            }
        }
    }

    /// In-place LayerNorm of each row: `(x − mean) / sqrt(var + eps) · gamma + beta`, biased variance as PyTorch.
    static func layerNorm(
        _ x: UnsafeMutableBufferPointer<Float>, rows: Int, gamma: UnsafeBufferPointer<Float>,
        beta: UnsafeBufferPointer<Float>, eps: Float
    ) {
        let width = gamma.count
        let box = UncheckedSendable((x, gamma, beta))
        Parallel.forEachChunk(rows, minChunk: max(1, 16384 / max(1, width))) { range in
            let (x, gamma, beta) = box.value
            for r in range {
                let row = x.baseAddress! + r * width
                var sum: Float = 0
                for j in 0..<width { sum += row[j] }
                let mean = sum / Float(width)
                var sq: Float = 0
                for j in 0..<width {
                    let d = row[j] - mean
                    sq += d * d
                }
                let inv = 1 / (sq / Float(width) + eps).squareRoot()
                for j in 0..<width { row[j] = (row[j] - mean) * inv * gamma[j] + beta[j] }
            }
        }
    }

    /// In-place exact GELU, `x · ½ · (1 + erf(x / √2))`, as BERT's "gelu", 8 lanes at a time with
    /// `VectorMath.erf` (within 3e-7 of `erff`; the scalar `erff` took a fifth of the encoder's time).
    static func gelu(_ x: UnsafeMutableBufferPointer<Float>) {
        let box = UncheckedSendable(x)
        Parallel.forEachChunk(x.count, minChunk: 1 << 15) { range in
            let p = UnsafeMutableRawPointer(box.value.baseAddress!)
            var i = range.lowerBound
            while i + 8 <= range.upperBound {
                let v = p.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                p.storeBytes(of: geluLanes(v), toByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            if i < range.upperBound {
                var v = SIMD8<Float>(repeating: 0)
                for k in 0..<(range.upperBound - i) { v[k] = box.value[i + k] }
                let g = geluLanes(v)
                for k in 0..<(range.upperBound - i) { box.value[i + k] = g[k] }
            }
        }
    }

    @inline(__always)
    static func geluLanes(_ v: SIMD8<Float>) -> SIMD8<Float> {
        0.5 * v * (1 + VectorMath.erf(v * 0.70710678118654752))
    }

    /// In-place softmax of each row of an `n × n` matrix, 8 lanes at a time with `VectorMath.exp`.
    static func softmaxRows(_ s: UnsafeMutablePointer<Float>, n: Int) {
        let full = n & ~7
        let tail = n - full
        for r in 0..<n {
            let row = s + r * n
            let raw = UnsafeMutableRawPointer(row)
            var mv = SIMD8<Float>(repeating: -.infinity)
            var j = 0
            while j < full {
                let v = raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                mv.replace(with: v, where: v .> mv)  // pointwiseMax compiles to a per-lane call
                j += 8
            }
            var m = mv.max()
            for k in full..<n { m = max(m, row[k]) }
            let mb = SIMD8<Float>(repeating: m)
            var sv = SIMD8<Float>(repeating: 0)
            j = 0
            while j < full {
                let e = VectorMath.exp(raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self) - mb)
                raw.storeBytes(of: e, toByteOffset: j * 4, as: SIMD8<Float>.self)
                sv += e
                j += 8
            }
            var sum = sv.sum()
            if tail > 0 {
                var v = SIMD8<Float>(repeating: 0)
                for k in 0..<tail { v[k] = row[full + k] - m }
                let e = VectorMath.exp(v)
                for k in 0..<tail {
                    row[full + k] = e[k]
                    sum += e[k]
                }
            }
            let inv = SIMD8<Float>(repeating: 1 / sum)
            j = 0
            while j < full {
                raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self) * inv, toByteOffset: j * 4, as: SIMD8<Float>.self)
                j += 8
            }
            for k in full..<n { row[k] *= inv[0] }
        }
    }
}
