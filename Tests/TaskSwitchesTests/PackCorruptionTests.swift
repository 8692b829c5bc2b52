import CheckpointIO
import Foundation
import TensorKernels
import TestSupport
import Testing

@testable import TaskSwitches

/// Damage and hostile sizes in packs: every single-bit flip of a real pack, every `PackFile.Limits` bound crossed
/// by one, and packs applied to a base they were not made for. (`PackFileTests` samples flipped bytes and cuts.)
struct PackCorruptionTests {
    /// A real pack of the toy pair (three switched tensors, a scalar, a head and labels) and its bytes.
    static func realPack() throws -> (pack: SwitchPack, bytes: [UInt8]) {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, f) = try toyPair(dir)
        let pack = try SwitchPack.build(
            base: try ModelFolder(path: b.path), fineTuned: try ModelFolder(path: f.path), dropRatio: 0.7, task: "toy",
            head: [DenseTensor(name: "classifier.weight", shape: [2, 2], values: [1, -1, 0.5, 2])],
            labels: ["no", "yes"])
        return (pack, PackFile.encode(pack))
    }

    /// Decodes `bytes` (a pack, unless `decode` says otherwise) with each single bit flipped in turn; every flip
    /// must be a typed error naming the file. Returns how often each error code came up.
    static func flipEveryBit(
        _ bytes: [UInt8], file: String = "flip.tsw",
        decode: ([UInt8], String) throws(SwitchError) -> Void = { b, f throws(SwitchError) in
            _ = try PackFile.decode(b, file: f)
        }
    ) throws -> [SwitchError.Code: Int] {
        var codes: [SwitchError.Code: Int] = [:]
        for bit in 0..<(bytes.count * 8) {
            var damaged = bytes
            damaged[bit / 8] ^= UInt8(1 << (bit % 8))
            let err = switchError { () throws(SwitchError) in try decode(damaged, file) }
            let e = try #require(err, "flipping bit \(bit % 8) of byte \(bit / 8) went unnoticed")
            #expect([.corruptPack, .truncatedPack, .notAPack, .unsupportedVersion, .limitExceeded].contains(e.code))
            #expect(e.message.hasPrefix("\(file): "))
            codes[e.code, default: 0] += 1
        }
        return codes
    }

    @Test("every single-bit flip of a real pack, in every header and section byte, is a typed error")
    func everyBit() throws {
        let (_, bytes) = try Self.realPack()
        #expect(bytes.count > 1000)
        let codes = try Self.flipEveryBit(bytes)
        // The checksums catch the payload flips; the preamble and section headers get their own messages.
        #expect(codes[.corruptPack, default: 0] > bytes.count * 4)
        #expect(codes[.notAPack, default: 0] == 64)
    }

    @Test("a reserved flag bit or version 0 in the preamble is damage, not ignored")
    func preamble() throws {
        var bytes = try Self.realPack().bytes
        bytes[12] = 1
        let flags = switchError { () throws(SwitchError) in _ = try PackFile.decode(bytes, file: "f.tsw") }
        #expect(flags?.code == .corruptPack)
        #expect(flags?.message.contains("reserved flags") == true)
        bytes[12] = 0
        bytes[8] = 0
        let zero = switchError { () throws(SwitchError) in _ = try PackFile.decode(bytes, file: "f.tsw") }
        #expect(zero?.code == .corruptPack)
    }

    @Test("a newer version is refused naming both versions, before any section is read")
    func newerVersion() throws {
        var bytes = try Self.realPack().bytes
        bytes[8] = 3
        bytes.removeLast(bytes.count - 20)  // a newer reader's sections may be anything
        let err = switchError { () throws(SwitchError) in _ = try PackFile.decode(bytes, file: "v3.tsw") }
        #expect(err?.code == .unsupportedVersion)
        #expect(err?.message.contains("format version 3, newer than this reader (version 2)") == true)
    }

    /// Decodes `bytes` with limits that differ from the standard ones in one field.
    static func decode(_ bytes: [UInt8], _ change: (inout PackFile.Limits) -> Void) -> SwitchError? {
        var limits = PackFile.Limits()
        change(&limits)
        return switchError { () throws(SwitchError) in _ = try PackFile.decode(bytes, file: "lim.tsw", limits: limits) }
    }

    @Test("each pack limit accepts its exact value and refuses one less")
    func limitsByOne() throws {
        let (pack, bytes) = try Self.realPack()
        let sections = 2 + pack.tensors.count + pack.head.count
        let rank = pack.tensors.map(\.shape.count).max() ?? 0
        let elements = pack.tensors.map(\.elementCount).max() ?? 0
        let kept = pack.keptCount
        let head = pack.head.map(\.values.count).max() ?? 0
        let meta = try #require(metaLength(bytes))
        let cases: [(String, Int, WritableKeyPath<PackFile.Limits, Int>)] = [
            ("sections", sections, \.maxSections), ("rank", rank, \.maxRank),
            ("elements", elements, \.maxTensorElements),
            ("kept", kept, \.maxKeptEntries), ("head", head, \.maxHeadElements), ("meta", meta, \.maxMetaBytes),
        ]
        for (label, value, key) in cases {
            #expect(Self.decode(bytes) { $0[keyPath: key] = value } == nil, "\(label) at its limit \(value)")
            let err = Self.decode(bytes) { $0[keyPath: key] = value - 1 }
            #expect(err?.code == .limitExceeded, "\(label) one past the limit \(value - 1)")
            #expect(err?.message.contains("lim.tsw") == true)
        }
    }

    /// The payload length of the first section (META).
    func metaLength(_ bytes: [UInt8]) -> Int? {
        guard bytes.count > 28, Array(bytes[16..<20]) == Array("META".utf8) else { return nil }
        return (0..<8).reduce(0) { $0 | Int(bytes[20 + $1]) << (8 * $1) }
    }

    @Test("the standard limits refuse rank 33 and a META one byte over 16 MiB")
    func standardLimits() throws {
        // A tensor record of rank 33 (dimensions of 1), checked before its shape is read.
        var w = ByteWriter()
        w.string("w")
        w.string("F32")
        w.u8(33)
        for _ in 0..<33 { w.u64(1) }
        var err: SwitchError?
        w.bytes.withUnsafeBytes { b in
            do throws(SwitchError) { _ = try PackFile.decodeTensor(b, index: 0, file: "r.tsw") } catch { err = error }
        }
        #expect(err?.code == .limitExceeded)
        #expect(err?.message.contains("33 dimensions; at most 32") == true)
        // META: labels padded so the JSON is exactly the limit, then one byte more.
        var pack = try Self.realPack().pack
        let base = PackFile.encode(pack)
        let overhead = try #require(metaLength(base)) - 12  // `["no","yes"]` is 12 bytes
        let target = PackFile.Limits.standard.maxMetaBytes - overhead - 4  // `[""]` around one label
        pack.labels = [String(repeating: "x", count: target)]
        let atLimit = PackFile.encode(pack)
        #expect(metaLength(atLimit) == PackFile.Limits.standard.maxMetaBytes)
        #expect(switchError { () throws(SwitchError) in _ = try PackFile.decode(atLimit, file: "m.tsw") } == nil)
        pack.labels = [String(repeating: "x", count: target + 1)]
        let over = switchError { () throws(SwitchError) in _ = try PackFile.decode(PackFile.encode(pack), file: "m.tsw")
        }
        #expect(over?.code == .limitExceeded)
    }

    @Test("a zero-size shape with a dimension past 2^32 is refused (found by fuzzing)")
    func zeroDimension() {
        var w = ByteWriter()
        w.string("w")
        w.string("F32")
        w.u8(2)
        w.u64(0)
        w.u64(1 << 63)
        var err: SwitchError?
        w.bytes.withUnsafeBytes { b in
            do throws(SwitchError) { _ = try PackFile.decodeTensor(b, index: 0, file: "z.tsw") } catch { err = error }
        }
        #expect(err?.code == .corruptPack)
        #expect(err?.message.contains("impossible shape") == true)
    }

    @Test("a record whose stream decodes more entries than it declares stops at the declared count")
    func keptBudget() throws {
        let s = PackFileTests.randomSwitch("w", shape: [64, 64], density: 0.3, seed: 8)
        var record = PackFile.encodeTensor(s)
        // Declared counts sit after name (4+1), dtype (4+3), rank (1), shape (2×8), lambda (4).
        let at = 5 + 7 + 1 + 16 + 4
        let declared = UInt64(s.positive.count / 2)
        for i in 0..<8 { record[at + i] = UInt8(truncatingIfNeeded: declared >> (8 * UInt64(i))) }
        var err: SwitchError?
        record.withUnsafeBytes { b in
            do throws(SwitchError) { _ = try PackFile.decodeTensor(b, index: 0, file: "k.tsw") } catch { err = error }
        }
        #expect(err?.code == .corruptPack)
        let streams = TernaryCoder.encode(positive: s.positive, negative: s.negative, rows: 64, cols: 64)
        let stopped = streams[0].withUnsafeBytes { b in
            (try? TernaryCoder.decode([b], rows: 64, cols: 64, maxKept: s.keptCount - 1)) == nil
        }
        #expect(stopped)
    }

    @Test("a pack is refused on the same base in another dtype, and on a tensor of another shape")
    func wrongDTypeAndShape() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (b, f) = try toyPair(dir)
        let base = try ModelFolder(path: b.path)
        let pack = try SwitchPack.build(
            base: base, fineTuned: try ModelFolder(path: f.path), dropRatio: 0.5, task: "toy")
        // The same values stored as BF16: another fingerprint.
        let bf16 = dir.appendingPathComponent("bf16")
        let w = try ModelWriter(
            directory: bf16.path,
            tensors: base.tensorInfos.map {
                TensorSpec(name: $0.name, dtype: $0.dtype.isConvertibleFloat ? .BF16 : $0.dtype, shape: $0.shape)
            })
        for info in base.tensorInfos {
            let t = try base.tensor(info.name)
            if info.dtype.isConvertibleFloat {
                try w.write(info.name, floats: try t.floats())
            } else {
                try w.write(info.name, bytes: t.bytes)
            }
        }
        try w.finish()
        let other = try ModelFolder(path: bf16.path)
        let out = dir.appendingPathComponent("out")
        let dtypeErr = switchError { () throws(SwitchError) in
            try SwitchApplier.write(base: other, packs: [(pack, 1)], output: out.path)
        }
        #expect(dtypeErr?.code == .wrongBase)
        // A pack claiming another shape for a tensor (its fingerprint still matches): refused, nothing written.
        var reshaped = pack
        let t = reshaped.tensors[0]
        reshaped.tensors[0] = TensorSwitch(
            name: t.name, shape: [t.elementCount], baseDType: t.baseDType, lambda: t.lambda, positive: t.positive,
            negative: t.negative)
        let decoded = try PackFile.decode(PackFile.encode(reshaped), file: "reshaped.tsw")
        let shapeErr = switchError { () throws(SwitchError) in
            try SwitchApplier.write(base: base, packs: [(decoded, 1)], output: out.path)
        }
        #expect(shapeErr?.code == .shapeMismatch)
        #expect(shapeErr?.message.contains(t.name) == true)
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }
}
