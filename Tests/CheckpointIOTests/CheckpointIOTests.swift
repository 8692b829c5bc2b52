import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

/// Shared helpers of the CheckpointIO tests: fixture paths, raw array loading, error capture.
enum Fixture {
    /// The copied `Fixtures` folder of this test target.
    static let root = TestPaths.fixtures(in: .module)

    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// A raw little-endian array written by numpy's `tofile`.
    static func array<T: FixedWidthInteger>(_ relative: String, as _: T.Type) throws -> [T] {
        let data = try Data(contentsOf: root.appendingPathComponent(relative))
        precondition(data.count % MemoryLayout<T>.size == 0)
        return data.withUnsafeBytes { raw in
            (0..<(data.count / MemoryLayout<T>.size)).map {
                T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self))
            }
        }
    }

    static func json(_ relative: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent(relative)))
    }
}

/// Runs `body` and returns the `CheckpointError` it throws, or nil when it succeeds.
func checkpointError(
    _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation
) -> CheckpointError? {
    thrownError(CheckpointError.self, sourceLocation: sourceLocation, body)
}

/// FNV-1a 64 over bytes, the hash `scripts/fixtures/io_models.py` stores per tensor.
func fnv1a64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes {
        h ^= UInt64(b)
        h = h &* 0x100_0000_01B3
    }
    return h
}

func fnv1a64(_ floats: [Float]) -> UInt64 { floats.withUnsafeBytes { fnv1a64($0) } }
