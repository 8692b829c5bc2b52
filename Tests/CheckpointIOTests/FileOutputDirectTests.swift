import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

@Suite("FileOutput with O_DIRECT")
struct FileOutputDirectTests {
    /// Pieces of odd sizes that cross block and staging-buffer boundaries, with random contents.
    static func pieces(seed: UInt64) -> [[UInt8]] {
        var rng = SplitMix(seed)
        let sizes = [1, 4095, 0, 4097, FileOutput.stagingBytes + 3, 123_457, FileOutput.stagingBytes - 1, 5]
        return sizes.map { n in (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
    }

    @Test("direct and buffered files hold exactly the bytes written, durable or not (not durable: buffered)")
    func contents() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let parts = Self.pieces(seed: 3)
        let want = parts.flatMap { $0 }
        for direct in [true, false] {
            for durable in [true, false] {
                let path = dir.appendingPathComponent("f-\(direct)-\(durable)").path
                let out = try FileOutput(target: path, direct: direct)
                out.durable = durable
                for p in parts { try out.write(p) }
                if !direct || !durable { #expect(!out.direct, "direct output is only for durable files") }
                #expect(out.written == want.count)
                #expect(!FileManager.default.fileExists(atPath: path), "nothing at the target before commit")
                try out.commit()
                let back = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
                #expect(back.count == want.count && back == want, "direct \(direct) (in effect: \(out.direct))")
            }
        }
    }

    @Test("an uncommitted direct file leaves nothing at the target and no temporary")
    func abandoned() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("half").path
        do {
            let out = try FileOutput(target: path, direct: true)
            for p in Self.pieces(seed: 4).prefix(5) { try out.write(p) }
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(left.isEmpty, "left behind: \(left)")
    }

    @Test("a safetensors file above the direct minimum reads back bit-exactly")
    func largeSafeTensors() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let n = SafeTensorsWriter.directMinimum / 2 + 999  // BF16: just above the minimum with the second tensor
        var rng = SplitMix(5)
        let a = (0..<n).map { _ in Float(rng.normal()) }
        let b = (0..<3).map { _ in Float(rng.normal()) }
        let path = dir.appendingPathComponent("big.safetensors").path
        let w = try SafeTensorsWriter(
            path: path,
            tensors: [TensorSpec(name: "a", dtype: .BF16, shape: [n]), TensorSpec(name: "b", dtype: .F32, shape: [3])])
        try w.write("a", floats: a)
        try w.write("b", floats: b)
        try w.finish()
        let file = try SafeTensorsFile(path: path)
        let backA = try file.tensor("a").floats().map(\.bitPattern)
        let wantA = a.map { DTypeConversion.floatFromBFloat16Bits(DTypeConversion.bfloat16Bits($0)).bitPattern }
        #expect(backA == wantA)
        #expect(try file.tensor("b").floats() == b)
    }
}
