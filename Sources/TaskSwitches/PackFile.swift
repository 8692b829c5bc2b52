import CheckpointIO
import Foundation
import TensorKernels

/// Reads and writes `.tsw` pack files (layout in `docs/pack-format.md`).
///
/// A file is a 16-byte preamble (magic, version, flags) and a list of sections, each with a 4-byte tag, a 64-bit
/// payload length and the CRC-32C of the payload. Sections: `META` (JSON), one `TSWT` per tensor switch, one `HEAD`
/// per head tensor, and `END!` (the section count) last, so a file cut at a section boundary is still detected.
public enum PackFile {
    /// `\x89TSWPACK` then `\r\n`-free bytes: the high byte catches 7-bit transfers, the name catches mix-ups.
    public static let magic: [UInt8] = [0x89, 0x54, 0x53, 0x57, 0x50, 0x41, 0x43, 0x4B]  // "\x89TSWPACK"
    /// The newest format version this code reads and writes: 2 for packs holding random-mask (`RVAL`) sections,
    /// so version-1 readers, which skip unknown tags, refuse them instead of applying nothing; T-Switch packs are
    /// still written as version 1, byte for byte as before.
    public static let version: UInt32 = 2

    /// The version a pack is written with.
    static func version(of pack: SwitchPack) -> UInt32 { pack.kind == .tSwitch ? 1 : 2 }
    /// Coder identifier stored in META: context-modelled adaptive binary range coder, blocks of 2^20 entries.
    public static let coderName = "ctx-range-v1"

    /// Sizes a hostile pack cannot push past, checked before anything of that size is allocated or decoded; the
    /// decoder's memory is then at most 4 bytes per kept entry plus the file itself (docs/robustness.md).
    public struct Limits: Sendable {
        /// Bytes of the META JSON (a real one is under 1 KB plus the labels).
        public var maxMetaBytes = 16 << 20
        /// Sections in one file: META, one per switched tensor, one per head tensor, END!.
        public var maxSections = 10_000_000
        /// Dimensions of a switched or head tensor (as for safetensors).
        public var maxRank = 32
        /// Entries of one switched tensor: indices are UInt32.
        public var maxTensorElements = 1 << 32
        /// Kept entries of the whole pack (4 bytes each once decoded): 16 GiB of indices, a 7B model at α = 0.4.
        public var maxKeptEntries = 1 << 32
        /// Values of one head tensor (4 bytes each).
        public var maxHeadElements = 1 << 28

        public init(
            maxMetaBytes: Int = 16 << 20, maxSections: Int = 10_000_000, maxRank: Int = 32,
            maxTensorElements: Int = 1 << 32, maxKeptEntries: Int = 1 << 32, maxHeadElements: Int = 1 << 28
        ) {
            self.maxMetaBytes = maxMetaBytes
            self.maxSections = maxSections
            self.maxRank = maxRank
            self.maxTensorElements = maxTensorElements
            self.maxKeptEntries = maxKeptEntries
            self.maxHeadElements = maxHeadElements
        }

        public static let standard = Limits()
    }

    // MARK: Writing

    /// Encodes the pack into bytes.
    public static func encode(_ pack: SwitchPack) -> [UInt8] {
        let version = version(of: pack)
        var out = SectionWriter(magic: magic, version: version)
        var meta: [String: Any] = [
            "format": "tswitch-pack",
            "version": Int(version),
            "task": pack.task,
            "drop_ratio": pack.dropRatio,
            "tie_rule": pack.tieRule.rawValue,
            "base_fingerprint": pack.baseFingerprint.description,
            "tensor_count": pack.tensors.count,
            "head_tensor_count": pack.head.count,
            "labels": pack.labels,
            "coder": coderName,
        ]
        if pack.kind == .randomMask {
            meta["kind"] = pack.kind.rawValue
            meta["seed"] = String(pack.seed)  // a string: JSON numbers lose u64 precision in many readers
            meta["tie_rule"] = nil
            meta["coder"] = nil
        }
        // JSONSerialization of plain strings, numbers and arrays cannot fail.
        let metaBytes = (try? JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys])) ?? Data("{}".utf8)
        out.section("META", Array(metaBytes))
        // Tensors are coded in parallel inside `TernaryCoder.encode` (by block).
        for t in pack.tensors {
            if let v = t.values {
                out.section("RVAL", encodeRandom(t, v))
            } else {
                out.section("TSWT", encodeTensor(t))
            }
        }
        for h in pack.head {
            var w = ByteWriter()
            w.string(h.name)
            w.u8(UInt8(h.shape.count))
            for d in h.shape { w.u64(UInt64(d)) }
            h.values.withUnsafeBytes { w.bytes.append(contentsOf: $0) }  // little-endian hosts only (MappedFile)
            out.section("HEAD", w.bytes)
        }
        return out.finish()
    }

    static func encodeTensor(_ t: TensorSwitch) -> [UInt8] {
        var w = ByteWriter()
        w.string(t.name)
        w.string(t.baseDType.rawValue)
        w.u8(UInt8(t.shape.count))
        for d in t.shape { w.u64(UInt64(d)) }
        w.f32(t.lambda)
        w.u64(UInt64(t.positive.count))
        w.u64(UInt64(t.negative.count))
        let (rows, cols) = t.rowsCols
        let streams = TernaryCoder.encode(positive: t.positive, negative: t.negative, rows: rows, cols: cols)
        w.u32(UInt32(streams.count))
        for s in streams { w.u32(UInt32(s.count)) }
        for s in streams { w.raw(s) }
        return w.bytes
    }

    /// One `RVAL` record: the tensor's mask parameters and its values at every mask entry (zeros included, so
    /// the reader pairs them with the regenerated mask), as zstd-compressed byte planes.
    static func encodeRandom(_ t: TensorSwitch, _ v: KeptValues) -> [UInt8] {
        // The writer made the mask from these parameters; its entries are a superset of `positive`.
        let mask = RandomMask.positions(count: t.elementCount, dropRatio: v.dropRatio, seed: v.maskSeed) ?? []
        var aligned = [Float](repeating: 0, count: mask.count)
        var j = 0
        for (k, i) in mask.enumerated() where j < t.positive.count && t.positive[j] == i {
            aligned[k] = v.values[j]
            j += 1
        }
        precondition(j == t.positive.count, "tensor '\(t.name)' keeps entries outside its random mask")
        let frame = KeptValues.pack(aligned, code: v.code, step: v.step)
        var w = ByteWriter()
        w.string(t.name)
        w.string(t.baseDType.rawValue)
        w.u8(UInt8(t.shape.count))
        for d in t.shape { w.u64(UInt64(d)) }
        w.u64(v.dropRatio.bitPattern)
        w.u64(v.maskSeed)
        w.f32(t.lambda)
        w.u64(UInt64(mask.count))
        w.u8(v.code.tag)
        w.f32(v.step)
        w.u64(UInt64(frame.count))
        w.raw(frame)
        return w.bytes
    }

    /// Writes the pack atomically (temporary file, fsync, rename).
    ///
    /// - Returns: the number of bytes written.
    @discardableResult
    public static func write(_ pack: SwitchPack, to path: String, overwrite: Bool = false) throws(SwitchError) -> Int {
        if !overwrite, FileManager.default.fileExists(atPath: path) {
            throw SwitchError(.outputExists, "\(path): already exists.")
        }
        let bytes = encode(pack)
        try io { () throws(CheckpointError) in
            let out = try FileOutput(target: path)
            try out.write(bytes)
            try out.commit()
        }
        return bytes.count
    }
}
