/// Dequantization of ggml's block formats to f32, bit for bit what `gguf.quants.dequantize` computes (and, for
/// Q8_K, which that package lacks, what ggml's `dequantize_row_q8_K` computes).
///
/// Each block decodes on its own, so blocks are split across cores. The arithmetic keeps the reference's order
/// of operations exactly (`(d * sc) * q - (dmin * m)` and so on, each product rounded to f32, no fused
/// multiply-add): that is what makes the results bit-exact rather than merely close. Element order within a
/// block follows ggml's layouts (documented per type below).
public enum GGMLDequantize {
    /// Converts `source` (whole blocks of `type`) into `destination`, which holds every element.
    public static func toFloat(
        _ source: UnsafeRawBufferPointer, type: GGMLType, into destination: UnsafeMutableBufferPointer<Float>
    ) {
        switch type {
        case .F32: DTypeConversion.toFloat(source, dtype: .F32, into: destination); return
        case .F16: DTypeConversion.toFloat(source, dtype: .F16, into: destination); return
        case .BF16: DTypeConversion.toFloat(source, dtype: .BF16, into: destination); return
        default: break
        }
        let blocks = destination.count / type.blockSize
        precondition(
            destination.count % type.blockSize == 0 && source.count == blocks * type.typeSize,
            "source and destination sizes differ")
        guard blocks > 0, let src = source.baseAddress, let dst = destination.baseAddress else { return }
        let s = UncheckedSendable(src.assumingMemoryBound(to: UInt8.self))
        let d = UncheckedSendable(dst)
        let decode: (UnsafePointer<UInt8>, UnsafeMutablePointer<Float>) -> Void
        switch type {
        case .Q4_0: decode = q4_0
        case .Q4_1: decode = q4_1
        case .Q5_0: decode = q5_0
        case .Q5_1: decode = q5_1
        case .Q8_0: decode = q8_0
        case .Q2_K: decode = q2_K
        case .Q3_K: decode = q3_K
        case .Q4_K: decode = q4_K
        case .Q5_K: decode = q5_K
        case .Q6_K: decode = q6_K
        case .Q8_K: decode = q8_K
        default: preconditionFailure("GGMLDequantize called with \(type.name)")
        }
        let (bs, ts) = (type.blockSize, type.typeSize)
        Parallel.forEachChunk(blocks, minChunk: max(1, (1 << 17) / bs)) { r in
            for b in r { decode(s.value + b * ts, d.value + b * bs) }
        }
    }

    @inline(__always)
    private static func half(_ p: UnsafePointer<UInt8>) -> Float {
        DTypeConversion.floatFromHalfBits(UInt16(p[0]) | UInt16(p[1]) << 8)
    }

    // MARK: - 32-element blocks

    /// d (f16), 16 bytes of nibbles: element j < 16 is the low nibble of byte j, j ≥ 16 the high nibble of j - 16.
    private static func q4_0(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let d = half(p)
        let q = p + 2
        for j in 0..<16 {
            y[j] = d * Float(Int(q[j] & 0x0F) - 8)
            y[j + 16] = d * Float(Int(q[j] >> 4) - 8)
        }
    }

    /// d, m (f16), nibbles as Q4_0: `d * q + m`.
    private static func q4_1(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let d = half(p), m = half(p + 2)
        let q = p + 4
        for j in 0..<16 {
            y[j] = d * Float(q[j] & 0x0F) + m
            y[j + 16] = d * Float(q[j] >> 4) + m
        }
    }

    @inline(__always)
    private static func u32(_ p: UnsafePointer<UInt8>) -> UInt32 {
        UInt32(p[0]) | UInt32(p[1]) << 8 | UInt32(p[2]) << 16 | UInt32(p[3]) << 24
    }

    /// d (f16), qh (u32: bit j is element j's fifth bit), nibbles as Q4_0; q - 16.
    private static func q5_0(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let d = half(p)
        let qh = u32(p + 2)
        let q = p + 6
        for j in 0..<16 {
            let lo = Int(q[j] & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4
            let hi = Int(q[j] >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = d * Float(lo - 16)
            y[j + 16] = d * Float(hi - 16)
        }
    }

    /// d, m (f16), qh, nibbles: `d * q + m`.
    private static func q5_1(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let d = half(p), m = half(p + 2)
        let qh = u32(p + 4)
        let q = p + 8
        for j in 0..<16 {
            let lo = Int(q[j] & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4
            let hi = Int(q[j] >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = d * Float(lo) + m
            y[j + 16] = d * Float(hi) + m
        }
    }

    /// d (f16), 32 int8.
    private static func q8_0(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let d = half(p)
        for j in 0..<32 { y[j] = Float(Int8(bitPattern: p[2 + j])) * d }
    }

    // MARK: - 256-element K-quant blocks

    /// scales[16] (low nibble scale, high nibble min per 16 elements), qs[64] (2 bits), d, dmin (f16).
    /// Element 128h + 32s + l is bits 2s of qs[32h + l].
    private static func q2_K(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let scales = p, qs = p + 16
        let d = half(p + 80), dmin = half(p + 82)
        for g in 0..<16 {
            let dl = d * Float(scales[g] & 0x0F)
            let ml = dmin * Float(scales[g] >> 4)
            for e in (16 * g)..<(16 * g + 16) {
                let h = e >> 7, s = (e >> 5) & 3, l = e & 31
                y[e] = dl * Float((qs[32 * h + l] >> UInt8(2 * s)) & 3) - ml
            }
        }
    }

    /// hmask[32], qs[64], scales[12] (16 six-bit scales, biased by 32), d (f16).
    /// Element 128h + 32s + l: low bits 2s of qs[32h + l]; its high bit is bit e / 32 of hmask[l], and a clear bit
    /// subtracts 4.
    private static func q3_K(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let hmask = p, qs = p + 32, sc = p + 96
        let d = half(p + 108)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { scale in
            for i in 0..<16 {
                let low = (i < 8 ? sc[i] : sc[i - 8] >> 4) & 0x0F
                let high = (sc[8 + (i & 3)] >> UInt8(2 * (i >> 2))) & 3
                scale[i] = d * Float(Int(low | high << 4) - 32)
            }
            for e in 0..<256 {
                let h = e >> 7, s = (e >> 5) & 3, l = e & 31
                let low = Int((qs[32 * h + l] >> UInt8(2 * s)) & 3)
                let bit = Int((hmask[l] >> UInt8(e >> 5)) & 1)
                y[e] = scale[e >> 4] * Float(low - ((bit ^ 1) << 2))
            }
        }
    }

    /// The 8 six-bit scales and mins of Q4_K and Q5_K, packed in 12 bytes.
    @inline(__always)
    private static func scaleMin(_ s: UnsafePointer<UInt8>, _ j: Int) -> (Float, Float) {
        if j < 4 { return (Float(s[j] & 63), Float(s[j + 4] & 63)) }
        return (Float((s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30)), Float((s[j + 4] >> 4) | ((s[j] >> 2) & 0x30)))
    }

    /// d, dmin (f16), scales[12], qs[128]. Sub-block g = 2c + s (32 elements) is nibble s of qs[32c + l]:
    /// `(d * sc) * q - (dmin * m)`.
    private static func q4_K(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let d = half(p), dmin = half(p + 2)
        let scales = p + 4, qs = p + 16
        for g in 0..<8 {
            let (sc, m) = scaleMin(scales, g)
            let dl = d * sc, ml = dmin * m
            let c = g >> 1, shift = UInt8(4 * (g & 1))
            for l in 0..<32 { y[32 * g + l] = dl * Float((qs[32 * c + l] >> shift) & 0x0F) - ml }
        }
    }

    /// d, dmin, scales[12], qh[32] (bit g of qh[l] is the fifth bit of sub-block g), qs[128] as Q4_K.
    private static func q5_K(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let d = half(p), dmin = half(p + 2)
        let scales = p + 4, qh = p + 16, qs = p + 48
        for g in 0..<8 {
            let (sc, m) = scaleMin(scales, g)
            let dl = d * sc, ml = dmin * m
            let c = g >> 1, shift = UInt8(4 * (g & 1))
            for l in 0..<32 {
                let q = (qs[32 * c + l] >> shift) & 0x0F | ((qh[l] >> UInt8(g)) & 1) << 4
                y[32 * g + l] = dl * Float(q) - ml
            }
        }
    }

    /// ql[128], qh[64], scales[16] (int8), d (f16). Element 128h + 64s + k: nibble s of ql[64h + k]; element
    /// 128h + 32t + l: bits 2t of qh[32h + l] on top; q - 32, times `d * scale[e / 16]`.
    private static func q6_K(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let ql = p, qh = p + 128, sc = p + 192
        let d = half(p + 208)
        for e in 0..<256 {
            let h = e >> 7, r = e & 127
            let low = (ql[64 * h + (r & 63)] >> UInt8(4 * (r >> 6))) & 0x0F
            let high = (qh[32 * h + (r & 31)] >> UInt8(2 * (r >> 5))) & 3
            let dl = d * Float(Int8(bitPattern: sc[e >> 4]))
            y[e] = dl * Float(Int(low | high << 4) - 32)
        }
    }

    /// d (f32), 256 int8, 16 int16 block sums (unused here): `d * q`, as ggml's `dequantize_row_q8_K`.
    private static func q8_K(_ p: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        let d = Float(bitPattern: u32(p))
        for j in 0..<256 { y[j] = d * Float(Int8(bitPattern: p[4 + j])) }
    }
}
