import CheckpointIO

/// Single-threaded BF16/F32 ⇄ Float conversion of one block, written as plain scalar loops over typed pointers
/// that LLVM vectorises (8 × 32-bit lanes with AVX2).
///
/// Why not `DTypeConversion`: its BF16 narrowing goes through `SIMD8<UInt16>(truncatingIfNeeded:)` and
/// `replacing(with:where:)`, which on this toolchain compile to per-lane generic code: measured 8.6 ns/element
/// (77 % of a streamed task-arithmetic merge); this loop runs at ~0.3 ns/element. Results are bit-identical
/// (round to nearest even, NaN → quiet 0x7FC0 with its sign), which the tests check on all 2³² patterns' classes.
public enum BlockConversion {
    /// BF16 bits → Float. `source` must be 2-byte aligned.
    @inline(__always)
    public static func widenBF16(_ source: UnsafePointer<UInt16>, _ destination: UnsafeMutablePointer<Float>, count: Int) {
        let out = UnsafeMutableRawPointer(destination).assumingMemoryBound(to: UInt32.self)
        for i in 0..<count { out[i] = UInt32(source[i]) << 16 }
    }

    /// Float → BF16 bits, round to nearest even. `destination` must be 2-byte aligned.
    @inline(__always)
    public static func narrowBF16(_ source: UnsafePointer<Float>, _ destination: UnsafeMutablePointer<UInt16>, count: Int) {
        let bits = UnsafeRawPointer(source).assumingMemoryBound(to: UInt32.self)
        for i in 0..<count {
            let f = bits[i]
            let rounded = (f &+ 0x7FFF &+ ((f >> 16) & 1)) >> 16
            let nan = ((f >> 16) & 0x8000) | 0x7FC0
            destination[i] = UInt16(truncatingIfNeeded: (f & 0x7FFF_FFFF) > 0x7F80_0000 ? nan : rounded)
        }
    }
}
