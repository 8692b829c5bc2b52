import Foundation
import Testing

@testable import CheckpointIO

/// Conversion kernels against numpy (F16) and ml_dtypes (BF16) bit patterns from `scripts/fixtures/io_dtypes.py`.
@Suite("DTypeConversion against numpy and ml_dtypes")
struct DTypeConversionTests {
    static let all16: [UInt16] = (0...0xFFFF).map { UInt16($0) }

    /// Converts raw UInt16 bit patterns with the vectorized kernel, starting `shift` bytes into the buffer so the
    /// loads are unaligned, and returns the Float bit patterns.
    func widen(_ halves: [UInt16], _ dtype: DType, shift: Int = 0) -> [UInt32] {
        var raw = [UInt8](repeating: 0, count: shift + halves.count * 2)
        for (i, h) in halves.enumerated() {
            raw[shift + 2 * i] = UInt8(h & 0xFF)
            raw[shift + 2 * i + 1] = UInt8(h >> 8)
        }
        var out = [Float](repeating: 0, count: halves.count)
        raw.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                DTypeConversion.toFloat(UnsafeRawBufferPointer(rebasing: src[shift...]), dtype: dtype, into: dst)
            }
        }
        return out.map(\.bitPattern)
    }

    func narrow(_ inputs: [UInt32], _ dtype: DType) -> [UInt16] {
        let floats = inputs.map { Float(bitPattern: $0) }
        var raw = [UInt8](repeating: 0, count: floats.count * 2)
        floats.withUnsafeBufferPointer { src in
            raw.withUnsafeMutableBytes { DTypeConversion.fromFloat(src, to: dtype, into: $0) }
        }
        return (0..<floats.count).map { UInt16(raw[2 * $0]) | UInt16(raw[2 * $0 + 1]) << 8 }
    }

    /// The first index where the arrays differ (or the shorter length), nil when equal. Tests compare through this
    /// rather than `==` so that a failure reports one index instead of rendering 65,536-element arrays.
    func firstMismatch<T: Equatable>(_ got: [T], _ want: [T]) -> Int? {
        if let i = zip(got, want).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset { return i }
        return got.count == want.count ? nil : min(got.count, want.count)
    }

    @Test("F16 to F32 matches numpy on all 65,536 half bit patterns, NaN payloads included")
    func halfWidening() throws {
        let want = try Fixture.array("dtypes/f16_to_f32.u32", as: UInt32.self)
        #expect(want.count == 65536)
        for shift in [0, 1] {
            let got = widen(Self.all16, .F16, shift: shift)
            let bad = firstMismatch(got, want)
            #expect(
                bad == nil,
                "half 0x\(String(bad ?? 0, radix: 16)): got 0x\(String(got[bad ?? 0], radix: 16)), numpy 0x\(String(want[bad ?? 0], radix: 16))"
            )
        }
        let scalar = Self.all16.map { DTypeConversion.floatFromHalfBits($0).bitPattern }
        do {
            let mismatch = firstMismatch(scalar, want)
            #expect(mismatch == nil, "scalar floatFromHalfBits")
        }
    }

    @Test("BF16 to F32 matches ml_dtypes on all 65,536 bfloat16 bit patterns")
    func bfloatWidening() throws {
        let want = try Fixture.array("dtypes/bf16_to_f32.u32", as: UInt32.self)
        #expect(want.count == 65536)
        for shift in [0, 3] {
            do {
                let mismatch = firstMismatch(widen(Self.all16, .BF16, shift: shift), want)
                #expect(mismatch == nil)
            }
        }
        do {
            let mismatch = firstMismatch(Self.all16.map { DTypeConversion.floatFromBFloat16Bits($0).bitPattern }, want)
            #expect(mismatch == nil)
        }
    }

    @Test("Widening is identical when split across cores and with odd tails")
    func parallelAndTails() throws {
        let want = try Fixture.array("dtypes/f16_to_f32.u32", as: UInt32.self)
        let wantB = try Fixture.array("dtypes/bf16_to_f32.u32", as: UInt32.self)
        // 16 copies = 1 M elements: above the parallel threshold, so several chunks run on different threads.
        let big = [[UInt16]](repeating: Self.all16, count: 16).flatMap { $0 }
        let gotF16 = widen(big, .F16)
        let gotBF16 = widen(big, .BF16)
        for copy in [0, 7, 15] {
            do {
                let mismatch = firstMismatch(Array(gotF16[(copy * 65536)..<((copy + 1) * 65536)]), want)
                #expect(mismatch == nil, "F16 copy \(copy)")
            }
            do {
                let mismatch = firstMismatch(Array(gotBF16[(copy * 65536)..<((copy + 1) * 65536)]), wantB)
                #expect(mismatch == nil, "BF16 copy \(copy)")
            }
        }
        // Lengths that leave every possible tail after the 8- and 16-wide loops.
        for n in [1, 2, 7, 9, 15, 17, 31, 33] {
            let slice = Array(Self.all16[0x3C00..<(0x3C00 + n)])
            #expect(widen(slice, .F16, shift: 1) == Array(want[0x3C00..<(0x3C00 + n)]))
            #expect(widen(slice, .BF16, shift: 1) == Array(wantB[0x3C00..<(0x3C00 + n)]))
        }
    }

    @Test(
        "Large BF16 and F16 outputs take the streaming-store kernels and give the same bits, at any alignment",
        arguments: [DType.BF16, .F16])
    func streamingWidening(_ dtype: DType) throws {
        let want = try Fixture.array(
            dtype == .BF16 ? "dtypes/bf16_to_f32.u32" : "dtypes/f16_to_f32.u32", as: UInt32.self)
        let copies = DTypeConversion.streamingMinElements / 65536 + 1
        let big = [[UInt16]](repeating: Self.all16, count: copies).flatMap { $0 }
        #expect(big.count >= DTypeConversion.streamingMinElements)
        var raw = [UInt8](repeating: 0, count: 1 + big.count * 2)
        for (i, h) in big.enumerated() {
            raw[1 + 2 * i] = UInt8(h & 0xFF)
            raw[2 + 2 * i] = UInt8(h >> 8)
        }
        // Destination starts 1 element into the buffer: the kernel's scalar head realigns it for streaming stores.
        var out = [Float](repeating: 0, count: big.count + 1)
        raw.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                DTypeConversion.toFloat(
                    UnsafeRawBufferPointer(rebasing: src[1...]), dtype: dtype,
                    into: UnsafeMutableBufferPointer(rebasing: dst[1...]))
            }
        }
        #expect(out[0] == 0, "nothing written before the destination")
        for copy in [0, copies / 2, copies - 1] {
            let got = out[(1 + copy * 65536)..<(1 + (copy + 1) * 65536)].map(\.bitPattern)
            do {
                let mismatch = firstMismatch(got, want)
                #expect(mismatch == nil, "copy \(copy)")
            }
        }
    }

    @Test("F32 to F16 rounds to nearest even exactly like numpy on edge cases and random data")
    func halfNarrowing() throws {
        let inputs = try Fixture.array("dtypes/narrow_in.u32", as: UInt32.self)
        let want = try Fixture.array("dtypes/narrow_f16.u16", as: UInt16.self)
        #expect(inputs.count > 10_000)
        let got = narrow(inputs, .F16)
        let bad = firstMismatch(got, want)
        #expect(
            bad == nil,
            "f32 0x\(String(inputs[bad ?? 0], radix: 16)): got 0x\(String(got[bad ?? 0], radix: 16)), numpy 0x\(String(want[bad ?? 0], radix: 16))"
        )
        do {
            let mismatch = firstMismatch(inputs.map { DTypeConversion.halfBits(Float(bitPattern: $0)) }, want)
            #expect(mismatch == nil)
        }
    }

    @Test("F32 to BF16 rounds to nearest even exactly like ml_dtypes, NaN becomes 0x7FC0 with its sign")
    func bfloatNarrowing() throws {
        let inputs = try Fixture.array("dtypes/narrow_in.u32", as: UInt32.self)
        let want = try Fixture.array("dtypes/narrow_bf16.u16", as: UInt16.self)
        let got = narrow(inputs, .BF16)
        let bad = firstMismatch(got, want)
        #expect(
            bad == nil,
            "f32 0x\(String(inputs[bad ?? 0], radix: 16)): got 0x\(String(got[bad ?? 0], radix: 16)), ml_dtypes 0x\(String(want[bad ?? 0], radix: 16))"
        )
        do {
            let mismatch = firstMismatch(inputs.map { DTypeConversion.bfloat16Bits(Float(bitPattern: $0)) }, want)
            #expect(mismatch == nil)
        }
        // The policy in DTypeConversion's documentation, stated directly.
        #expect(DTypeConversion.bfloat16Bits(Float(bitPattern: 0xFF80_0001)) == 0xFFC0)
        #expect(DTypeConversion.bfloat16Bits(Float(bitPattern: 0x7F80_0001)) == 0x7FC0)
        #expect(DTypeConversion.halfBits(Float(bitPattern: 0x7F80_0001)) == 0x7C01)
        #expect(DTypeConversion.halfBits(Float(bitPattern: 0x7FA0_0000)) == 0x7D00)
    }

    @Test("Narrowing then widening is the identity on every representable value")
    func roundTripOfRepresentable() {
        for dtype in [DType.F16, .BF16] {
            let widened = widen(Self.all16, dtype)
            let back = narrow(widened, dtype)
            // BF16 NaNs all become 0x7FC0 (documented policy), so they are excluded there.
            let broken = zip(Self.all16, back).filter { h, b in
                h != b && (dtype == .F16 || !Float(bitPattern: widened[Int(h)]).isNaN)
            }
            #expect(
                broken.isEmpty,
                "\(dtype): \(broken.count) values change, first 0x\(String(broken.first?.0 ?? 0, radix: 16))")
        }
    }

    @Test("F64 and F32 convert through the same entry points")
    func wideTypes() {
        let doubles: [Double] = [1.0, -2.5, 1e-300, 1e300, .infinity, 0.1]
        var raw = [UInt8](repeating: 0, count: doubles.count * 8 + 1)
        raw.withUnsafeMutableBytes { b in
            for (i, d) in doubles.enumerated() { b.storeBytes(of: d, toByteOffset: 1 + 8 * i, as: Double.self) }
        }
        var out = [Float](repeating: 0, count: doubles.count)
        raw.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer {
                DTypeConversion.toFloat(UnsafeRawBufferPointer(rebasing: src[1...]), dtype: .F64, into: $0)
            }
        }
        #expect(out == doubles.map { Float($0) })
        var back = [UInt8](repeating: 0, count: doubles.count * 8)
        out.withUnsafeBufferPointer { src in
            back.withUnsafeMutableBytes { DTypeConversion.fromFloat(src, to: .F64, into: $0) }
        }
        let restored = back.withUnsafeBytes { b in
            (0..<out.count).map { b.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) }
        }
        #expect(restored == out.map { Double($0) })
    }
}
