import Foundation
import Testing

@testable import CheckpointIO

/// Shared helpers of the CheckpointIO tests: fixture paths, raw array loading, error capture.
enum Fixture {
    /// The copied `Fixtures` folder of this test target.
    static let root: URL = {
        guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            fatalError("the Fixtures resource folder is missing from the test bundle")
        }
        return url
    }()

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
    do {
        try body()
        return nil
    } catch let error as CheckpointError {
        return error
    } catch {
        Issue.record("expected a CheckpointError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// A fresh empty folder under the system temporary directory, removed by the caller.
func temporaryFolder(_ label: String = #function) throws -> URL {
    let safe = label.filter { $0.isLetter || $0.isNumber }
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("tswitch-io-\(safe)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
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
