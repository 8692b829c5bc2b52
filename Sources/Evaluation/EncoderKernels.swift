import CheckpointIO
import COpenBLAS
import Foundation

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

    /// In-place exact GELU, `x · ½ · (1 + erf(x / √2))`, as BERT's "gelu".
    static func gelu(_ x: UnsafeMutableBufferPointer<Float>) {
        let box = UncheckedSendable(x)
        Parallel.forEachChunk(x.count, minChunk: 1 << 15) { range in
            let x = box.value
            for i in range {
                let v = x[i]
                x[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752))
            }
        }
    }

    /// In-place softmax of each row of an `n × n` matrix.
    static func softmaxRows(_ s: UnsafeMutablePointer<Float>, n: Int) {
        for r in 0..<n {
            let row = s + r * n
            var m = -Float.infinity
            for j in 0..<n { m = max(m, row[j]) }
            var sum: Float = 0
            for j in 0..<n {
                let e = expf(row[j] - m)
                row[j] = e
                sum += e
            }
            let inv = 1 / sum
            for j in 0..<n { row[j] *= inv }
        }
    }
}
