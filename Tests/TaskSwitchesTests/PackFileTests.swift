import CheckpointIO
import Foundation
import TensorKernels
import TestSupport
import Testing

@testable import TaskSwitches

/// The pack format: round trips, the checksum and the coder, and every kind of damaged file.
struct PackFileTests {
    static func randomSwitch(_ name: String, shape: [Int], density: Double, seed: UInt64) -> TensorSwitch {
        var g = SplitMix64(seed: seed)
        var pos: [UInt32] = []
        var neg: [UInt32] = []
        for i in 0..<shape.reduce(1, *) where Double.random(in: 0..<1, using: &g) < density {
            if Bool.random(using: &g) { pos.append(UInt32(i)) } else { neg.append(UInt32(i)) }
        }
        return TensorSwitch(name: name, shape: shape, baseDType: .F32, lambda: 0.0123, positive: pos, negative: neg)
    }

    static func samplePack() -> SwitchPack {
        SwitchPack(
            task: "code-lang", baseFingerprint: BaseFingerprint(value: 0x0123_4567_89AB_CDEF), dropRatio: 0.7,
            tieRule: .lowestIndex,
            tensors: [
                randomSwitch("a.weight", shape: [300, 64], density: 0.3, seed: 1),
                randomSwitch("a.bias", shape: [300], density: 0.05, seed: 2),
                TensorSwitch(name: "scale", shape: [], baseDType: .BF16, lambda: 0.5, positive: [], negative: [0]),
            ],
            head: [DenseTensor(name: "classifier.weight", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])],
            labels: ["c", "python"])
    }

    @Test("CRC-32C matches the RFC 3720 check value")
    func crc() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    }

    @Test("a pack survives encode and decode unchanged", arguments: [0.001, 0.05, 0.3, 0.5, 0.9])
    func roundTrip(density: Double) throws {
        var pack = Self.samplePack()
        pack.tensors[0] = Self.randomSwitch("a.weight", shape: [2100, 700], density: density, seed: 9)  // 2 blocks
        let bytes = PackFile.encode(pack)
        let back = try PackFile.decode(bytes, file: "mem.tsw")
        #expect(back == pack)
    }

    @Test("random masks code within 2 % of the entropy floor H(d) + d", arguments: [0.05, 0.1, 0.3, 0.5])
    func nearFloor(density: Double) {
        let s = Self.randomSwitch("w", shape: [1000, 1000], density: density, seed: 5)
        let (rows, cols) = s.rowsCols
        let bits = Double(
            TernaryCoder.encode(positive: s.positive, negative: s.negative, rows: rows, cols: cols).reduce(0) {
                $0 + $1.count
            } * 8)
        let d = s.density
        let floor = (-(d * log2(d)) - (1 - d) * log2(1 - d) + d) * 1e6
        #expect(bits / floor < 1.02)
        #expect(bits / floor > 0.98)  // a random mask cannot be coded below its entropy
    }

    @Test("a file written to disk reads back, and the write is atomic")
    func writeRead() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("t.tsw").path
        let pack = Self.samplePack()
        try PackFile.write(pack, to: path)
        #expect(try PackFile.read(path) == pack)
        let err = switchError { () throws(SwitchError) in try PackFile.write(pack, to: path) }
        #expect(err?.code == .outputExists)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["t.tsw"])  // no temporary left
    }

    @Test("every flipped byte is an error, never a wrong pack")
    func corruption() throws {
        let bytes = PackFile.encode(Self.samplePack())
        var g = SplitMix64(seed: 3)
        var positions = Array(stride(from: 0, to: bytes.count, by: max(1, bytes.count / 300)))
        positions += (0..<200).map { _ in Int.random(in: 0..<bytes.count, using: &g) }
        for p in positions {
            var damaged = bytes
            damaged[p] ^= UInt8(1 << (p % 8))
            let err = switchError { () throws(SwitchError) in
                _ = try PackFile.decode(damaged, file: "bad.tsw")
            }
            let e = try #require(err, "flipping byte \(p) went unnoticed")
            #expect([.corruptPack, .truncatedPack, .notAPack, .unsupportedVersion].contains(e.code))
            #expect(e.message.contains("bad.tsw"))
        }
    }

    @Test("every truncation is reported as truncated")
    func truncation() {
        let bytes = PackFile.encode(Self.samplePack())
        for n in Array(0..<40) + Array(stride(from: 40, to: bytes.count, by: 7)) {
            let cut = Array(bytes[0..<n])
            let err = switchError { () throws(SwitchError) in
                _ = try PackFile.decode(cut, file: "cut.tsw")
            }
            if n < 8 && n > 0 {
                #expect(err?.code == .truncatedPack, "cut at \(n)")
            } else if n == 0 {
                #expect(err?.code == .notAPack)
            } else {
                #expect(err?.code == .truncatedPack, "cut at \(n): \(String(describing: err))")
                #expect(err?.message.contains("truncated") == true)
            }
        }
    }

    @Test("a newer format version is refused, naming the version")
    func newerVersion() {
        var bytes = PackFile.encode(Self.samplePack())
        bytes[8] = 7
        let err = switchError { () throws(SwitchError) in
            _ = try PackFile.decode(bytes, file: "new.tsw")
        }
        #expect(err?.code == .unsupportedVersion)
        #expect(err?.message.contains("version 7") == true)
    }

    @Test("a file that is not a pack says so")
    func notAPack() {
        let bytes = Array("{\"hello\": 1} and more text".utf8)
        let err = switchError { () throws(SwitchError) in
            _ = try PackFile.decode(bytes, file: "x.json")
        }
        #expect(err?.code == .notAPack)
    }
}

extension PackFileTests {
    @Test("a well-formed record that declares impossible rows is refused without decoding")
    func craftedShape() throws {
        // A valid file (correct CRCs) whose tensor claims rows of 2^30 entries.
        let huge = TensorSwitch(name: "w", shape: [1 << 30], baseDType: .F32, lambda: 1, positive: [], negative: [])
        var w = ByteWriter()
        w.string(huge.name)
        w.string("F32")
        w.u8(1)
        w.u64(1 << 30)
        w.f32(1)
        w.u64(0)
        w.u64(0)
        w.u32(1)
        w.u32(5)
        w.raw([0, 0, 0, 0, 0])
        var err: SwitchError?
        w.bytes.withUnsafeBytes { b in
            do throws(SwitchError) {
                _ = try PackFile.decodeTensor(b, index: 0, file: "crafted.tsw")
            } catch { err = error }
        }
        #expect(err?.code == .corruptPack)
        #expect(err?.message.contains("rows of 1073741824 entries") == true)
    }

    @Test("a stream cut short inside a block is detected by the decoder itself")
    func shortStream() throws {
        let s = Self.randomSwitch("w", shape: [200, 100], density: 0.3, seed: 4)
        let streams = TernaryCoder.encode(positive: s.positive, negative: s.negative, rows: 200, cols: 100)
        let cut = Array(streams[0].prefix(streams[0].count / 2))
        let damaged = cut.withUnsafeBytes { b in
            (try? TernaryCoder.decode([b], rows: 200, cols: 100)) == nil
        }
        #expect(damaged)
    }
}
