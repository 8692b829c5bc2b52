#if canImport(CCheckpointKernels)
    import CCheckpointKernels
#endif

/// Vectorized conversion between stored float formats and `Float`.
///
/// Sources and destinations of raw bytes may be unaligned (a header that is not padded to 8 bytes shifts every
/// tensor), so raw loads and stores are unaligned. Widening is exact. Narrowing rounds to nearest even:
/// - F16 matches numpy bit for bit, NaN payloads included (payload's top bits kept; a payload that vanishes
///   becomes 1).
/// - BF16 matches ml_dtypes/Eigen bit for bit: NaN becomes the quiet NaN 0x7FC0 with its sign.
/// The package builds for baseline x86_64 (no F16C), where `Float(Float16)` is a library call at 4-7 ns; the SIMD8
/// bit-trick widening runs below 0.3 ns per element per core.
/// BF16 and F16 widening into outputs larger than `streamingMinElements` uses non-temporal stores (a C kernel, see
/// `CCheckpointKernels.h`): the output is not read back from memory before being overwritten, which is what bounds a
/// multi-GB checkpoint read (see docs/bench-io.md).
public enum DTypeConversion {
    /// Elements per parallel chunk: below ~1 MB of work a second thread costs more than it saves.
    static let minChunk = 1 << 18

    /// Outputs of at least this many elements (16 MB of f32) bypass the cache when widening BF16 or F16: they are larger
    /// than the last-level cache share of one core, so the consumer could not find them in cache anyway.
    public static let streamingMinElements = 1 << 22

    /// Converts `source` (stored as `dtype`) into `destination`.
    public static func toFloat(
        _ source: UnsafeRawBufferPointer, dtype: DType, into destination: UnsafeMutableBufferPointer<Float>
    ) {
        let n = destination.count
        precondition(source.count == n * dtype.bitWidth / 8, "source and destination sizes differ")
        guard n > 0, let src = source.baseAddress, let dst = destination.baseAddress else { return }
        let s = UncheckedSendable(src)
        let d = UncheckedSendable(dst)
        #if canImport(CCheckpointKernels)
            let stream = n >= streamingMinElements
        #endif
        Parallel.forEachChunk(n, minChunk: minChunk) { r in
            switch dtype {
            case .F32: widenF32(s.value, d.value, r)
            case .BF16:
                #if canImport(CCheckpointKernels)
                    if stream {
                        tswitch_bf16_to_f32_stream(s.value + 2 * r.lowerBound, d.value + r.lowerBound, r.count)
                        return
                    }
                #endif
                widenBF16(s.value, d.value, r)
            case .F16:
                #if canImport(CCheckpointKernels)
                    if stream {
                        tswitch_f16_to_f32_stream(s.value + 2 * r.lowerBound, d.value + r.lowerBound, r.count)
                        return
                    }
                #endif
                widenF16(s.value, d.value, r)
            case .F64: widenF64(s.value, d.value, r)
            default: preconditionFailure("toFloat called with \(dtype)")
            }
        }
    }

    /// Converts `source` into `destination`, stored as `dtype` (F32, F16, BF16 or F64).
    public static func fromFloat(
        _ source: UnsafeBufferPointer<Float>, to dtype: DType, into destination: UnsafeMutableRawBufferPointer
    ) {
        let n = source.count
        precondition(destination.count == n * dtype.bitWidth / 8, "source and destination sizes differ")
        guard n > 0, let src = source.baseAddress, let dst = destination.baseAddress else { return }
        let s = UncheckedSendable(src)
        let d = UncheckedSendable(dst)
        Parallel.forEachChunk(n, minChunk: minChunk) { r in
            switch dtype {
            case .F32:
                UnsafeMutableRawPointer(d.value + r.lowerBound * 4).copyMemory(
                    from: s.value + r.lowerBound, byteCount: r.count * 4)
            case .BF16: narrowBF16(s.value, d.value, r)
            case .F16: narrowF16(s.value, d.value, r)
            case .F64:
                for i in r { (d.value + i * 8).storeBytes(of: Double(s.value[i]), as: Double.self) }
            default: preconditionFailure("fromFloat called with \(dtype)")
            }
        }
    }

    // MARK: - Widening

    @inline(__always)
    private static func widenF32(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ r: Range<Int>) {
        UnsafeMutableRawPointer(dst + r.lowerBound).copyMemory(from: src + r.lowerBound * 4, byteCount: r.count * 4)
    }

    private static func widenF64(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ r: Range<Int>) {
        for i in r { dst[i] = Float(src.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
    }

    private static func widenBF16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ r: Range<Int>) {
        if Int(bitPattern: src) % 2 == 0 {
            widenBF16(src.assumingMemoryBound(to: UInt16.self) + r.lowerBound, dst + r.lowerBound, count: r.count)
            return
        }
        for i in r {
            dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16)
        }
    }

    /// BF16 bits to Float for `count` aligned elements on the calling thread.
    ///
    /// Plain loops over typed pointers: LLVM vectorises them to 8 lanes. The explicit `SIMD8<UInt16>` conversions
    /// compiled to per-lane code on Swift 6.3 (BF16 narrowing measured 8.6 ns/element against 0.3 ns here).
    @inline(__always)
    public static func widenBF16(
        _ source: UnsafePointer<UInt16>, _ destination: UnsafeMutablePointer<Float>, count: Int
    ) {
        let out = UnsafeMutableRawPointer(destination).assumingMemoryBound(to: UInt32.self)
        for i in 0..<count { out[i] = UInt32(source[i]) << 16 }
    }

    /// Float to BF16 bits for `count` aligned elements on the calling thread (see `widenBF16(_:_:count:)`).
    @inline(__always)
    public static func narrowBF16(
        _ source: UnsafePointer<Float>, _ destination: UnsafeMutablePointer<UInt16>, count: Int
    ) {
        let bits = UnsafeRawPointer(source).assumingMemoryBound(to: UInt32.self)
        for i in 0..<count {
            let f = bits[i]
            let rounded = (f &+ 0x7FFF &+ ((f >> 16) & 1)) >> 16
            let nan = ((f >> 16) & 0x8000) | 0x7FC0
            destination[i] = UInt16(truncatingIfNeeded: (f & 0x7FFF_FFFF) > 0x7F80_0000 ? nan : rounded)
        }
    }

    /// Half to float: shift exponent and mantissa into place and multiply by 2^112, which rebiases the exponent and
    /// normalizes subnormals exactly; Inf and NaN get the all-ones exponent with their payload.
    @inline(__always)
    private static func halfToFloatBits(_ h: SIMD8<UInt32>) -> SIMD8<UInt32> {
        let sign = (h & 0x8000) &<< 16
        let em = h & 0x7FFF
        let shifted = em &<< 13
        var f = unsafeBitCast(shifted, to: SIMD8<Float>.self) * 0x1p112
        let special = em .>= 0x7C00
        let specialBits = shifted | 0x7F80_0000
        f.replace(with: unsafeBitCast(specialBits, to: SIMD8<Float>.self), where: special)
        return unsafeBitCast(f, to: SIMD8<UInt32>.self) | sign
    }

    private static func widenF16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ r: Range<Int>) {
        var i = r.lowerBound
        let out = UnsafeMutableRawPointer(dst)
        while i + 8 <= r.upperBound {
            let h = SIMD8<UInt32>(truncatingIfNeeded: src.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<UInt16>.self))
            out.storeBytes(of: halfToFloatBits(h), toByteOffset: i * 4, as: SIMD8<UInt32>.self)
            i += 8
        }
        if i < r.upperBound {
            var tail = SIMD8<UInt32>(repeating: 0)
            for k in 0..<(r.upperBound - i) {
                tail[k] = UInt32(src.loadUnaligned(fromByteOffset: (i + k) * 2, as: UInt16.self))
            }
            let w = halfToFloatBits(tail)
            for k in 0..<(r.upperBound - i) { dst[i + k] = Float(bitPattern: w[k]) }
        }
    }

    // MARK: - Narrowing

    private static func narrowBF16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, _ r: Range<Int>) {
        if Int(bitPattern: dst) % 2 == 0 {
            narrowBF16(src + r.lowerBound, dst.assumingMemoryBound(to: UInt16.self) + r.lowerBound, count: r.count)
            return
        }
        for i in r { dst.storeBytes(of: bfloat16Bits(src[i]), toByteOffset: i * 2, as: UInt16.self) }
    }

    /// Float to half bits, round to nearest even, 8 at a time (F. Giesen's float_to_half_fast3_rtne): normal results
    /// round by adding 0xFFF + the kept LSB before the shift; subnormal results come out of a float addition
    /// against a magic constant, whose hardware rounding is nearest-even; NaN follows `halfBits` (payload kept).
    @inline(__always)
    private static func floatToHalfBits(_ x: SIMD8<UInt32>) -> SIMD8<UInt32> {
        let sign = x & 0x8000_0000
        let f = x ^ sign
        // Normal half range: rebias the exponent, round to nearest even.
        let odd = (f &>> 13) & 1
        let normal = (f &+ (0xC800_0FFF &+ odd)) &>> 13  // 0xC8000000 = (15 - 127) << 23 modulo 2^32
        // Subnormal half (or zero): align the mantissa by adding 0.5 (2^-1), so the FPU rounds at 2^-24.
        let magic = SIMD8<UInt32>(repeating: 126 << 23)
        let sub =
            unsafeBitCast(
                unsafeBitCast(f, to: SIMD8<Float>.self) + unsafeBitCast(magic, to: SIMD8<Float>.self),
                to: SIMD8<UInt32>.self) &- magic
        var out = normal.replacing(with: sub, where: f .< (113 << 23))
        out.replace(with: 0x7C00, where: f .>= (143 << 23))  // overflow (and inf) to inf
        let payload = (f &>> 13) & 0x3FF
        let nan = 0x7C00 | payload.replacing(with: 1, where: payload .== 0)
        out.replace(with: nan, where: f .> 0x7F80_0000)
        return out | (sign &>> 16)
    }

    private static func narrowF16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, _ r: Range<Int>) {
        var i = r.lowerBound
        let inp = UnsafeRawPointer(src)
        while i + 8 <= r.upperBound {
            let f = inp.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<UInt32>.self)
            dst.storeBytes(
                of: SIMD8<UInt16>(truncatingIfNeeded: floatToHalfBits(f)), toByteOffset: i * 2, as: SIMD8<UInt16>.self)
            i += 8
        }
        while i < r.upperBound {
            dst.storeBytes(of: halfBits(src[i]), toByteOffset: i * 2, as: UInt16.self)
            i += 1
        }
    }

    // MARK: - Scalars (reference definitions, also used for tails)

    /// Float to BF16 bits, round to nearest even; NaN becomes 0x7FC0 with its sign.
    @inlinable
    public static func bfloat16Bits(_ x: Float) -> UInt16 {
        let f = x.bitPattern
        if f & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: (f >> 16) & 0x8000) | 0x7FC0 }
        return UInt16(truncatingIfNeeded: (f &+ 0x7FFF &+ ((f >> 16) & 1)) >> 16)
    }

    @inlinable
    public static func floatFromBFloat16Bits(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    /// Float to IEEE half bits, round to nearest even, as numpy does (NaN payload kept).
    @inlinable
    public static func halfBits(_ x: Float) -> UInt16 {
        let f = x.bitPattern
        let sign = UInt16(truncatingIfNeeded: (f >> 16) & 0x8000)
        let exp = Int((f >> 23) & 0xFF)
        let mant = f & 0x7F_FFFF
        if exp == 0xFF {
            if mant == 0 { return sign | 0x7C00 }
            let payload = UInt16(truncatingIfNeeded: mant >> 13)
            return sign | 0x7C00 | (payload == 0 ? 1 : payload)
        }
        let e = exp - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }
        if e <= 0 {
            // Subnormal half (or zero): value / 2^-24, rounded to nearest even.
            if e < -10 { return sign }
            let m = mant | 0x80_0000
            let shift = UInt32(14 - e)
            let q = m >> shift
            let rem = m & ((1 << shift) - 1)
            let half: UInt32 = 1 << (shift - 1)
            let up = rem > half || (rem == half && (q & 1) == 1)
            return sign | UInt16(truncatingIfNeeded: q + (up ? 1 : 0))
        }
        var h = UInt32(e) << 10 | (mant >> 13)
        let rem = mant & 0x1FFF
        if rem > 0x1000 || (rem == 0x1000 && (h & 1) == 1) { h += 1 }
        return sign | UInt16(truncatingIfNeeded: h)
    }

    /// IEEE half bits to Float, exact.
    @inlinable
    public static func floatFromHalfBits(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let em = UInt32(h & 0x7FFF)
        if em >= 0x7C00 { return Float(bitPattern: sign | 0x7F80_0000 | ((em & 0x3FF) << 13)) }
        return Float(bitPattern: sign | (Float(bitPattern: em << 13) * 0x1p112).bitPattern)
    }
}
