import CMergeKernels
import CheckpointIO

#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Single-pass merge loops straight from the stored inputs into the stored output, for the common case where every
/// input and the output share one dtype (BF16 or F32): each element is loaded, combined in registers and stored
/// once, with no `Float` block in between. `BlockStream` widens every input into a scratch block and the method then
/// sweeps those blocks several times; on a 1.1 B-parameter BF16 task-arithmetic merge that cost 4.3 CPU-seconds,
/// this loop about a quarter of that (docs/bench-merge.md).
///
/// The arithmetic is the same IEEE operations in the same order as the block-wise code (f32, no FMA contraction,
/// round-to-nearest-even narrowing with NaN → 0x7FC0 as `DTypeConversion.bfloat16Bits`), so results are bit-identical;
/// `FusedStreamTests` checks that against the scalar definitions.
public enum FusedStream {
    /// Steps of 16 elements per parallel chunk at least (64 K elements: below that one thread is faster).
    static let minChunkSteps = 1 << 12

    /// The BF16 loop's vector level: 2 AVX-512, 1 AVX2 (C kernels in CMergeKernels, chosen at run time), 0 the
    /// portable Swift loop (baseline x86-64 / SSE2, or another architecture). All levels give identical bits; the
    /// AVX-512 loop takes less CPU time than the Swift loop (docs/bench-merge.md). `TSWITCH_FUSED_LEVEL=0|1` caps
    /// it, for profiling.
    static let vectorLevel: Int = {
        let detected = Int(tswitch_fused_level())
        guard let s = getenv("TSWITCH_FUSED_LEVEL"), let cap = Int(String(cString: s)) else { return detected }
        return max(0, min(detected, cap))
    }()

    /// out = base + λ · ((Σᵢ (xᵢ − base) · wᵢ) / divide), summed from 0 in input order: task arithmetic and the
    /// unmasked, consensus-free members of its family. Returns false (and writes nothing) when the dtypes have no
    /// fused loop; the caller then takes the block-wise path.
    public static func weightedDeltaSum(
        base: TensorSource, models: [TensorSource], weights: [Float], divide: Float, lambda: Float,
        into sink: TensorSink
    ) -> Bool {
        weightedDeltaSum(
            base: base, models: models, weights: weights, divide: divide, lambda: lambda, into: sink, level: vectorLevel
        )
    }

    /// `weightedDeltaSum` at a given BF16 vector level (at most `vectorLevel`).
    static func weightedDeltaSum(
        base: TensorSource, models: [TensorSource], weights: [Float], divide: Float, lambda: Float,
        into sink: TensorSink,
        level: Int
    ) -> Bool {
        precondition(level <= vectorLevel, "vector level not supported by this CPU")
        precondition(models.count == weights.count, "one weight per model")
        let n = sink.count
        guard base.count == n, models.allSatisfy({ $0.count == n }) else { return false }
        let dtypes = Set([base.dtype, sink.dtype] + models.map(\.dtype))
        guard dtypes.count == 1, let dtype = dtypes.first else { return false }
        let k = DeltaSumKernel(
            base: base.bytes.baseAddress, models: models.map(\.bytes.baseAddress), weights: weights, divide: divide,
            lambda: lambda, out: sink.bytes.baseAddress, count: n, level: level)
        switch dtype {
        case .BF16: k.run(BF16Lanes.self)
        case .F32: k.run(F32Lanes.self)
        default: return false
        }
        return true
    }

    /// out = (Σᵢ xᵢ · wᵢ) / divide, summed from 0 in input order (linear merging, model soups). Returns false when
    /// the dtypes have no fused loop.
    public static func weightedSum(
        _ sources: [TensorSource], weights: [Float], divide: Float, into sink: TensorSink
    ) -> Bool {
        weightedSum(sources, weights: weights, divide: divide, into: sink, level: vectorLevel)
    }

    /// `weightedSum` at a given BF16 vector level (at most `vectorLevel`).
    static func weightedSum(
        _ sources: [TensorSource], weights: [Float], divide: Float, into sink: TensorSink, level: Int
    ) -> Bool {
        precondition(level <= vectorLevel, "vector level not supported by this CPU")
        precondition(sources.count == weights.count, "one weight per source")
        let n = sink.count
        guard !sources.isEmpty, sources.allSatisfy({ $0.count == n }) else { return false }
        let dtypes = Set([sink.dtype] + sources.map(\.dtype))
        guard dtypes.count == 1, let dtype = dtypes.first else { return false }
        let k = DeltaSumKernel(
            base: nil, models: sources.map(\.bytes.baseAddress), weights: weights, divide: divide, lambda: 1,
            out: sink.bytes.baseAddress, count: n, level: level)
        switch dtype {
        case .BF16: k.run(BF16Lanes.self)
        case .F32: k.run(F32Lanes.self)
        default: return false
        }
        return true
    }
}

/// A stored layout read and written 16 elements at a time as two `SIMD8<Float>` halves. Which element lands in
/// which lane does not matter to elementwise arithmetic as long as every input and the output use the same layout.
protocol Lanes16 {
    static var elementBytes: Int { get }
    static func load(_ p: UnsafeRawPointer) -> (SIMD8<Float>, SIMD8<Float>)
    static func store(_ h: (SIMD8<Float>, SIMD8<Float>), _ p: UnsafeMutableRawPointer)
    static func loadOne(_ p: UnsafeRawPointer) -> Float
    static func storeOne(_ x: Float, _ p: UnsafeMutableRawPointer)
}

/// BF16 is the top half of an f32, so a 32-bit word holding elements 2j, 2j+1 widens with a shift (even element)
/// and a mask (odd element): no shuffles, and every operation stays a 32-bit lane operation that SSE2 has.
enum BF16Lanes: Lanes16 {
    static var elementBytes: Int { 2 }

    @inline(__always)
    static func load(_ p: UnsafeRawPointer) -> (SIMD8<Float>, SIMD8<Float>) {
        let w = p.loadUnaligned(as: SIMD8<UInt32>.self)
        return (unsafeBitCast(w &<< 16, to: SIMD8<Float>.self), unsafeBitCast(w & 0xFFFF_0000, to: SIMD8<Float>.self))
    }

    /// Round to nearest even into the top 16 bits; NaN becomes 0x7FC0 with its sign. The NaN select is done with an
    /// arithmetic-shift mask rather than a SIMD compare, which compiled to per-lane code (see DTypeConversion).
    @inline(__always)
    static func roundedTop(_ x: SIMD8<Float>) -> SIMD8<UInt32> {
        let f = unsafeBitCast(x, to: SIMD8<UInt32>.self)
        let rounded = f &+ 0x7FFF &+ ((f &>> 16) & 1)
        let nan = (f & 0x8000_0000) | 0x7FC0_0000
        let magnitude = unsafeBitCast(f & 0x7FFF_FFFF, to: SIMD8<Int32>.self)
        let isNaN = unsafeBitCast((SIMD8<Int32>(repeating: 0x7F80_0000) &- magnitude) &>> 31, to: SIMD8<UInt32>.self)
        return (rounded & ~isNaN) | (nan & isNaN)
    }

    @inline(__always)
    static func store(_ h: (SIMD8<Float>, SIMD8<Float>), _ p: UnsafeMutableRawPointer) {
        let words = (roundedTop(h.0) &>> 16) | (roundedTop(h.1) & 0xFFFF_0000)
        p.storeBytes(of: words, as: SIMD8<UInt32>.self)
    }

    @inline(__always)
    static func loadOne(_ p: UnsafeRawPointer) -> Float {
        DTypeConversion.floatFromBFloat16Bits(p.loadUnaligned(as: UInt16.self))
    }

    @inline(__always)
    static func storeOne(_ x: Float, _ p: UnsafeMutableRawPointer) {
        p.storeBytes(of: DTypeConversion.bfloat16Bits(x), as: UInt16.self)
    }
}

enum F32Lanes: Lanes16 {
    static var elementBytes: Int { 4 }

    @inline(__always)
    static func load(_ p: UnsafeRawPointer) -> (SIMD8<Float>, SIMD8<Float>) {
        (p.loadUnaligned(as: SIMD8<Float>.self), p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self))
    }

    @inline(__always)
    static func store(_ h: (SIMD8<Float>, SIMD8<Float>), _ p: UnsafeMutableRawPointer) {
        p.storeBytes(of: h.0, as: SIMD8<Float>.self)
        p.storeBytes(of: h.1, toByteOffset: 32, as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func loadOne(_ p: UnsafeRawPointer) -> Float { p.loadUnaligned(as: Float.self) }

    @inline(__always)
    static func storeOne(_ x: Float, _ p: UnsafeMutableRawPointer) { p.storeBytes(of: x, as: Float.self) }
}

/// `FusedStream.weightedDeltaSum` over raw pointers (sources and sink stay alive for the call); without a base,
/// `FusedStream.weightedSum`.
struct DeltaSumKernel: @unchecked Sendable {
    let base: UnsafeRawPointer?
    let models: [UnsafeRawPointer?]
    let weights: [Float]
    let divide: Float
    let lambda: Float
    let out: UnsafeMutableRawPointer?
    let count: Int
    /// `FusedStream.vectorLevel`, or lower (tests compare the levels); used for BF16 only.
    let level: Int

    func run<L: Lanes16>(_ layout: L.Type) {
        guard count > 0, let out, let any = base ?? models.first ?? nil else { return }
        let m = models.count
        let ptrs = models.map { $0 ?? any }
        let steps = count / 16
        let vector = L.self == BF16Lanes.self ? Int32(level) : 0
        Parallel.forEachChunk(steps, minChunk: FusedStream.minChunkSteps) { r in
            ptrs.withUnsafeBufferPointer { mp in
                weights.withUnsafeBufferPointer { wp in
                    if vector > 0 {
                        mp.withMemoryRebound(to: Optional<UnsafeRawPointer>.self) { cp in
                            tswitch_fused_bf16(
                                vector, base, cp.baseAddress, wp.baseAddress, Int32(m), divide, lambda, out,
                                r.lowerBound * 16, r.upperBound * 16)
                        }
                    } else if let base {
                        steps16(L.self, base: base, models: mp, weights: wp, m: m, out: out, r)
                    } else {
                        sumSteps16(L.self, models: mp, weights: wp, m: m, out: out, r)
                    }
                }
            }
        }
        let eb = L.elementBytes
        for j in (steps * 16)..<count {
            let b = base.map { L.loadOne($0 + j * eb) }
            var acc: Float = 0
            for i in 0..<m {
                let x = L.loadOne(ptrs[i] + j * eb)
                acc += (b.map { x - $0 } ?? x) * weights[i]
            }
            if divide != 1 { acc /= divide }
            if lambda != 1 { acc *= lambda }
            L.storeOne(b.map { $0 + acc } ?? acc, out + j * eb)
        }
    }

    @inline(__always)
    private func sumSteps16<L: Lanes16>(
        _: L.Type, models: UnsafeBufferPointer<UnsafeRawPointer>, weights: UnsafeBufferPointer<Float>, m: Int,
        out: UnsafeMutableRawPointer, _ r: Range<Int>
    ) {
        let stride = 16 * L.elementBytes
        let scaleDivide = divide != 1
        let d = SIMD8<Float>(repeating: divide)
        for s in r {
            let off = s * stride
            var a0 = SIMD8<Float>(repeating: 0)
            var a1 = SIMD8<Float>(repeating: 0)
            for i in 0..<m {
                let x = L.load(models[i] + off)
                let w = SIMD8<Float>(repeating: weights[i])
                a0 += x.0 * w
                a1 += x.1 * w
            }
            if scaleDivide {
                a0 /= d
                a1 /= d
            }
            L.store((a0, a1), out + off)
        }
    }

    @inline(__always)
    private func steps16<L: Lanes16>(
        _: L.Type, base: UnsafeRawPointer, models: UnsafeBufferPointer<UnsafeRawPointer>,
        weights: UnsafeBufferPointer<Float>, m: Int, out: UnsafeMutableRawPointer, _ r: Range<Int>
    ) {
        let stride = 16 * L.elementBytes
        let scaleDivide = divide != 1
        let scaleLambda = lambda != 1
        let d = SIMD8<Float>(repeating: divide)
        let l = SIMD8<Float>(repeating: lambda)
        for s in r {
            let off = s * stride
            let b = L.load(base + off)
            var a0 = SIMD8<Float>(repeating: 0)
            var a1 = SIMD8<Float>(repeating: 0)
            for i in 0..<m {
                let x = L.load(models[i] + off)
                let w = SIMD8<Float>(repeating: weights[i])
                a0 += (x.0 - b.0) * w
                a1 += (x.1 - b.1) * w
            }
            if scaleDivide {
                a0 /= d
                a1 /= d
            }
            if scaleLambda {
                a0 *= l
                a1 *= l
            }
            L.store((b.0 + a0, b.1 + a1), out + off)
        }
    }
}
