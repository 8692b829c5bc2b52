import CEncoderKernels
import COpenBLAS
import CheckpointIO
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

    /// Whether the AVX-512 kernels of `CEncoderKernels` run: the CPU has AVX-512F and the OS saves its
    /// registers. Swift compiles for baseline x86-64, where `SIMD8<Float>` is two SSE halves; the C kernels carry
    /// their own target attribute. The Swift paths below are the fallback and the tests' reference.
    static let hasAVX512: Bool = ts_encoder_has_avx512() != 0

    /// `c[rows × out] = a[rows × inner] · wᵀ`, plus `c`'s own values when `accumulate`; `w` is stored `out × inner`
    /// (PyTorch's Linear layout).
    ///
    /// Rows are split into one block per core, each a single-threaded OpenBLAS product (blocks are disjoint rows of
    /// `a` and `c`; `w` is shared read-only). Biases are left to the kernel that reads the product next. Products
    /// followed by a residual connection accumulate into the residual stream itself (`beta = 1`), which needs no
    /// pass over `c` beforehand; the others run with `beta = 0`, which OpenBLAS runs as a zeroing pass over `c`
    /// (`sgemm_beta`, memset) before its kernel accumulates into it. That pass costs what the bias fill it replaces
    /// did (one core, 2048 rows, the encoder's four shapes: within 1 %, C harness, 2026-11-22); row blocks small
    /// enough to keep `c` in L2 are slower (128-512 rows: up to 28 %; the weights are repacked per call).
    static func linear(
        _ a: UnsafePointer<Float>, rows: Int, inner: Int, weight: UnsafePointer<Float>, out: Int,
        into c: UnsafeMutablePointer<Float>, accumulate: Bool = false
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
                blasint(inner), weight, blasint(inner), accumulate ? 1 : 0, c + lo * out, blasint(out))
        }
        if blocks == 1 {
            run(0)
        } else {
            DispatchQueue.concurrentPerform(iterations: blocks, execute: run)
        }
    }

    /// LayerNorm of each row, `(x − mean) / sqrt(var + eps) · gamma + beta` with the biased variance as PyTorch,
    /// written to `out` (in place when nil).
    ///
    /// With `bias` (a linear layer's, `width` values), each row of `x` is first replaced by `x + bias`: the bias is
    /// folded into the normalization's first pass over the row instead of a fill pass before the product.
    static func layerNorm(
        _ x: UnsafeMutableBufferPointer<Float>, rows: Int, gamma: UnsafeBufferPointer<Float>,
        beta: UnsafeBufferPointer<Float>, eps: Float, bias: UnsafeBufferPointer<Float>? = nil,
        into out: UnsafeMutablePointer<Float>? = nil, vectorized: Bool = hasAVX512
    ) {
        precondition(!vectorized || hasAVX512, "the AVX-512 LayerNorm needs AVX-512")
        let width = gamma.count
        precondition(x.count >= rows * width && (bias?.count ?? width) == width)
        let box = UncheckedSendable((x, gamma, beta, out ?? x.start, bias))
        Parallel.forEachChunk(rows, minChunk: max(1, 16384 / max(1, width))) { range in
            let (x, gamma, beta, out, bias) = box.value
            let lo = range.lowerBound * width
            if vectorized {
                ts_layernorm_avx512(
                    x.start + lo, bias?.baseAddress, out + lo, range.count, width, gamma.start,
                    beta.start, eps)
                return
            }
            for r in range {
                let row = x.start + r * width
                let dst = out + r * width
                if let bias {
                    for j in 0..<width { row[j] += bias[j] }
                }
                var sum: Float = 0
                for j in 0..<width { sum += row[j] }
                let mean = sum / Float(width)
                var sq: Float = 0
                for j in 0..<width {
                    let d = row[j] - mean
                    sq += d * d
                }
                let inv = 1 / (sq / Float(width) + eps).squareRoot()
                for j in 0..<width { dst[j] = (row[j] - mean) * inv * gamma[j] + beta[j] }
            }
        }
    }

    /// In-place exact GELU, `x · ½ · (1 + erf(x / √2))`, as BERT's "gelu": 16 lanes in the AVX-512 kernel, else 8
    /// lanes with `VectorMath.erf` (both within 4.2e-7 of `erff`; the scalar `erff` took a fifth of the encoder's
    /// time).
    ///
    /// With `bias` (`width` values), `x` holds rows of that width and becomes `GELU(x + bias)`: the linear layer's
    /// bias is folded into this pass, so its product needs no fill pass.
    static func gelu(
        _ x: UnsafeMutableBufferPointer<Float>, bias: UnsafeBufferPointer<Float>? = nil, vectorized: Bool = hasAVX512
    ) {
        precondition(!vectorized || hasAVX512, "the AVX-512 GELU needs AVX-512")
        let width = bias?.count ?? 1
        precondition(width > 0 && x.count % width == 0, "GELU rows: \(x.count) values are not rows of \(width)")
        let box = UncheckedSendable((x, bias))
        Parallel.forEachChunk(x.count / width, minChunk: max(1, (1 << 15) / width)) { rows in
            let (x, bias) = box.value
            let range = (rows.lowerBound * width)..<(rows.upperBound * width)
            if vectorized {
                if let bias {
                    ts_bias_gelu_avx512(x.start + range.lowerBound, rows.count, width, bias.start)
                } else {
                    ts_gelu_avx512(x.start + range.lowerBound, range.count)
                }
                return
            }
            if let bias {
                for r in rows {
                    let row = x.start + r * width
                    for j in 0..<width { row[j] += bias[j] }
                }
            }
            let p = UnsafeMutableRawPointer(x.start)
            var i = range.lowerBound
            while i + 8 <= range.upperBound {
                let v = p.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                p.storeBytes(of: geluLanes(v), toByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            if i < range.upperBound {
                var v = SIMD8<Float>(repeating: 0)
                for k in 0..<(range.upperBound - i) { v[k] = x[i + k] }
                let g = geluLanes(v)
                for k in 0..<(range.upperBound - i) { x[i + k] = g[k] }
            }
        }
    }

    @inline(__always)
    static func geluLanes(_ v: SIMD8<Float>) -> SIMD8<Float> {
        0.5 * v * (1 + VectorMath.erf(v * 0.70710678118654752))
    }

    /// Self-attention of packed sequences: for each sequence `b` (rows `starts[b] ..< starts[b] + lengths[b]`) and
    /// head, `ctx = softmax(scale · Q Kᵀ) V` over the sequence's own tokens, Q, K, V being the fused `tokens × 3H`
    /// product plus `bias` (3H values, added here rather than by a fill pass before the product). Sequences run in
    /// parallel, each writing its own rows of `ctx`; when there are too few to keep every core busy, its heads are
    /// split into separate work items (each writing its own columns).
    ///
    /// `fused` runs the AVX-512 kernel (head sizes a multiple of 16): all heads of the item packed with their bias in
    /// one sweep over the token rows, then per head scores, softmax and context while the n × n scores stay in cache.
    /// Otherwise Q, K, V of each (sequence, head) are copied with their bias, then two OpenBLAS products and
    /// `softmaxRows`.
    static func attention(
        qkv: UnsafePointer<Float>, bias: UnsafePointer<Float>, ctx: UnsafeMutablePointer<Float>, starts: [Int],
        lengths: [Int], heads: Int, headSize d: Int, scale: Float, fused: Bool? = nil
    ) {
        let h = heads * d
        let fused = fused ?? (hasAVX512 && d % 16 == 0)
        precondition(
            !fused || (hasAVX512 && d % 16 == 0), "the fused attention needs AVX-512 and a head size multiple of 16")
        let groups = starts.count >= 2 * Parallel.coreCount ? 1 : heads
        let perGroup = heads / groups
        let longest = lengths.max() ?? 0
        let scratch = fused ? ts_attention_scratch_floats(longest, perGroup, d) : longest * longest + 3 * longest * d
        let box = UncheckedSendable((qkv, bias, ctx))
        Parallel.forEachChunk(starts.count * groups, minChunk: 1) { range in
            let (q0, bias, c0) = box.value
            let s = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratch))
            defer { s.deallocate() }
            for item in range {
                let b = item / groups
                let firstHead = (item % groups) * perGroup
                let start = starts[b]
                let n = lengths[b]
                guard n > 0 else { continue }
                if fused {
                    ts_attention_avx512(
                        q0 + start * 3 * h + firstHead * d, 3 * h, n, perGroup, d, h, scale, bias + firstHead * d,
                        c0 + start * h + firstHead * d, h, s)
                    continue
                }
                for head in firstHead..<(firstHead + perGroup) {
                    let q = q0 + start * 3 * h + head * d
                    let qb = bias + head * d
                    // Q, K, V of this pair as three n × d blocks, each with its bias.
                    let packed = s + n * n
                    for part in 0..<3 {
                        for i in 0..<n {
                            for c in 0..<d {
                                packed[(part * n + i) * d + c] = q[i * 3 * h + part * h + c] + qb[part * h + c]
                            }
                        }
                    }
                    let ld = blasint(d)
                    cblas_sgemm(
                        CblasRowMajor, CblasNoTrans, CblasTrans, blasint(n), blasint(n), blasint(d), scale, packed, ld,
                        packed + n * d, ld, 0, s, blasint(n))
                    softmaxRows(s, n: n)
                    cblas_sgemm(
                        CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(n), blasint(d), blasint(n), 1, s, blasint(n),
                        packed + 2 * n * d, ld, 0, c0 + start * h + head * d, blasint(h))
                }
            }
        }
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
                raw.storeBytes(
                    of: raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self) * inv, toByteOffset: j * 4,
                    as: SIMD8<Float>.self)
                j += 8
            }
            for k in full..<n { row[k] *= inv[0] }
        }
    }
}
