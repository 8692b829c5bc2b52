import CMergeKernels
import CheckpointIO
import Foundation
import Testing

@testable import TensorKernels

/// The AVX-512 and AVX2 C kernels of the fused BF16 loop against the portable Swift loop (level 0), on every level
/// this CPU runs, on `FusedStreamTests`' BF16 sample; that suite checks the default level against the scalar
/// definition.
@Suite("Fused BF16 loop: vector levels")
struct FusedKernelLevelTests {
    /// Runs the loop at `level` on inputs starting `offset` bytes into their buffers; returns the output bits.
    static func run(
        level: Int, arrays: [[UInt16]], weights: [Float], divide: Float, lambda: Float, withBase: Bool,
        offset: Int
    ) -> [UInt16] {
        let n = arrays[0].count
        let buffers = arrays.map { a -> UnsafeMutableRawBufferPointer in
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: n * 2 + offset, alignment: 64)
            for (i, v) in a.enumerated() { b.storeBytes(of: v, toByteOffset: offset + 2 * i, as: UInt16.self) }
            return b
        }
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: n * 2 + offset, alignment: 64)
        defer {
            for b in buffers { b.deallocate() }
            out.deallocate()
        }
        let sources = buffers.map {
            TensorSource(bytes: UnsafeRawBufferPointer(rebasing: $0[offset...]), dtype: .BF16, count: n)
        }
        let sink = TensorSink(bytes: UnsafeMutableRawBufferPointer(rebasing: out[offset...]), dtype: .BF16, count: n)
        let done =
            withBase
            ? FusedStream.weightedDeltaSum(
                base: sources[0], models: Array(sources[1...]), weights: weights, divide: divide, lambda: lambda,
                into: sink, level: level)
            : FusedStream.weightedSum(sources, weights: weights, divide: divide, into: sink, level: level)
        #expect(done)
        return (0..<n).map { out.load(fromByteOffset: offset + 2 * $0, as: UInt16.self) }
    }

    /// The sample cases of the level comparison.
    static let cases: [(Int, Int, Float, Float)] = [
        (140_003, 0, 1, 1), (200_003, 2, 2.5, 0.7), (70_001, 6, 1, -1), (65_552, 2, 3, 1),
    ]

    /// Checks that `level` gives the portable loop's bits on every case, with and without a base.
    static func checkLevel(_ level: Int) {
        for (n, offset, divide, lambda) in cases {
            let arrays = (0..<4).map { FusedStreamTests.bf16Sample(n, seed: UInt64(n + $0)) }
            for withBase in [true, false] {
                let weights: [Float] = withBase ? [1, -0.5, 0.3] : [0.5, 1.5, -1, 0.25]
                let portable = run(
                    level: 0, arrays: arrays, weights: weights, divide: divide, lambda: lambda, withBase: withBase,
                    offset: offset)
                let vector = run(
                    level: level, arrays: arrays, weights: weights, divide: divide, lambda: lambda, withBase: withBase,
                    offset: offset)
                #expect(
                    zip(vector, portable).filter { $0 != $1 }.count == 0, "level \(level), n \(n), base \(withBase)")
            }
        }
    }

    // One test per level, skipped (and reported as skipped) on a CPU without it rather than passing vacuously.
    @Test(
        "the AVX2 loop gives the portable loop's bits, with and without a base, at any offset and length",
        .enabled(if: FusedStream.vectorLevel >= 1, "this CPU has no AVX2: the AVX2 kernel was not tested"))
    func avx2Agrees() { Self.checkLevel(1) }

    @Test(
        "the AVX-512 loop gives the portable loop's bits, with and without a base, at any offset and length",
        .enabled(
            if: FusedStream.vectorLevel >= 2, "this CPU has no AVX-512 (F + BW): the AVX-512 kernel was not tested"))
    func avx512Agrees() { Self.checkLevel(2) }

    @Test("the detected level matches the CPU flags the kernel reports in /proc/cpuinfo")
    func levelDetected() throws {
        #if os(Linux) && arch(x86_64)
            let info = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
            guard let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else {
                Issue.record("no flags line in /proc/cpuinfo")
                return
            }
            let flags = Set(line.split(separator: " ").map(String.init))
            let expected = flags.isSuperset(of: ["avx512f", "avx512bw"]) ? 2 : flags.contains("avx2") ? 1 : 0
            #expect(Int(tswitch_fused_level()) == expected)
        #endif
    }
}
