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
        var out = ByteWriter()
        let version = version(of: pack)
        out.raw(magic)
        out.u32(version)
        out.u32(0)  // flags, reserved
        var sections = 0
        func section(_ tag: String, _ payload: [UInt8]) {
            out.raw(Array(tag.utf8))
            out.u64(UInt64(payload.count))
            out.u32(CRC32C.checksum(payload))
            out.raw(payload)
            sections += 1
        }
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
        section("META", Array(metaBytes))
        // Tensors are coded in parallel inside `TernaryCoder.encode` (by block).
        for t in pack.tensors {
            if let v = t.values { section("RVAL", encodeRandom(t, v)) } else { section("TSWT", encodeTensor(t)) }
        }
        for h in pack.head {
            var w = ByteWriter()
            w.string(h.name)
            w.u8(UInt8(h.shape.count))
            for d in h.shape { w.u64(UInt64(d)) }
            h.values.withUnsafeBytes { w.bytes.append(contentsOf: $0) }  // little-endian hosts only (MappedFile)
            section("HEAD", w.bytes)
        }
        var end = ByteWriter()
        end.u64(UInt64(sections))
        section("END!", end.bytes)
        return out.bytes
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

    // MARK: Reading

    /// Reads and fully validates a pack file: magic, version, every section's checksum, the tensor streams.
    public static func read(_ path: String) throws(SwitchError) -> SwitchPack {
        let file = try io { () throws(CheckpointError) in try MappedFile(path: path) }
        return try decode(file.bytes(0..<file.size), file: path)
    }

    /// Decodes pack bytes held in an array.
    public static func decode(_ bytes: [UInt8], file: String, limits: Limits = .standard) throws(SwitchError)
        -> SwitchPack
    {
        var result: Result<SwitchPack, SwitchError> = .failure(SwitchError(.notAPack, "\(file): empty."))
        bytes.withUnsafeBytes { b in
            result = Result { () throws(SwitchError) in try decode(b, file: file, limits: limits) }
        }
        return try result.get()
    }

    /// Decodes pack bytes; `file` names the source in errors.
    public static func decode(_ bytes: UnsafeRawBufferPointer, file: String, limits: Limits = .standard)
        throws(SwitchError) -> SwitchPack
    {
        func truncated(_ what: String) -> SwitchError {
            SwitchError(.truncatedPack, "\(file): the pack is truncated (\(what)); copy it again.")
        }
        func corrupt(_ what: String) -> SwitchError {
            SwitchError(.corruptPack, "\(file): the pack is corrupt (\(what)); copy it again.")
        }
        guard !bytes.isEmpty else {
            throw SwitchError(.notAPack, "\(file): the file is empty; expected a switch pack.")
        }
        guard bytes.count >= magic.count, bytes.prefix(magic.count).elementsEqual(magic) else {
            if bytes.count < magic.count, magic.starts(with: bytes) {
                throw truncated("the file ends inside the 16-byte preamble")
            }
            throw SwitchError(
                .notAPack, "\(file): not a switch pack (expected the magic bytes \\x89TSWPACK at the start).")
        }
        var r = ByteReader(bytes)
        r.offset = magic.count
        guard let version = try? r.u32(), let flags = try? r.u32() else {
            throw truncated("the file ends inside the 16-byte preamble")
        }
        guard version >= 1 else { throw corrupt("the format version is 0") }
        guard version <= Self.version else {
            throw SwitchError(
                .unsupportedVersion,
                "\(file): the pack has format version \(version), newer than this reader (version \(Self.version)); upgrade tswitch to read it."
            )
        }
        // Reserved: version 1 writes 0, so any other value is damage (the preamble has no checksum of its own).
        guard flags == 0 else { throw corrupt("the reserved flags field is \(flags), not 0") }
        var meta: [String: Any]?
        var tensors: [TensorSwitch] = []
        var head: [DenseTensor] = []
        var sections = 0
        var ended = false
        var kept = 0
        var randomSections = 0
        while r.remaining > 0 {
            guard !ended else { throw corrupt("\(r.remaining) bytes follow the END! section") }
            guard sections < limits.maxSections else {
                throw SwitchError(
                    .limitExceeded, "\(file): the pack has more than \(limits.maxSections) sections, the limit.")
            }
            guard let tagBytes = try? r.take(4), let length = try? r.u64(), let crc = try? r.u32() else {
                throw truncated("the file ends inside the header of section \(sections + 1)")
            }
            let tag = String(decoding: tagBytes, as: UTF8.self)
            guard length <= UInt64(r.remaining), let payload = try? r.take(Int(length)) else {
                throw truncated("section \(sections + 1) ('\(tag)') needs \(length) bytes, \(r.remaining) remain")
            }
            guard CRC32C.checksum(payload) == crc else {
                throw corrupt("the checksum of section \(sections + 1) ('\(tag)') does not match its contents")
            }
            switch tag {
            case "META":
                guard payload.count <= limits.maxMetaBytes else {
                    throw SwitchError(
                        .limitExceeded,
                        "\(file): the META section has \(payload.count) bytes; at most \(limits.maxMetaBytes) are allowed.")
                }
                guard let obj = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else {
                    throw corrupt("the META section is not a JSON object")
                }
                meta = obj
            case "TSWT":
                let t = try decodeTensor(
                    payload, index: tensors.count, file: file, limits: limits, keptBudget: limits.maxKeptEntries - kept)
                kept += t.keptCount
                tensors.append(t)
            case "RVAL":
                // Only version 2 defines it: in a version-1 file a reader must not have skipped it.
                guard version >= 2 else { throw corrupt("a version-1 pack holds a random-mask (RVAL) section") }
                let t = try decodeRandom(
                    payload, index: tensors.count, file: file, limits: limits, keptBudget: limits.maxKeptEntries - kept)
                kept += t.maskCount
                tensors.append(t.tensor)
                randomSections += 1
            case "HEAD":
                head.append(try decodeHead(payload, file: file, limits: limits))
            case "END!":
                var e = ByteReader(payload)
                guard let count = try? e.u64(), count == UInt64(sections) else {
                    throw corrupt("the END! section counts a different number of sections than the file holds")
                }
                ended = true
            default:
                break  // Sections added by later minor revisions of version 1 are skipped (their CRC was checked).
            }
            sections += 1
        }
        guard ended else { throw truncated("the END! section is missing after \(sections) sections") }
        guard let meta else { throw corrupt("the META section is missing") }
        guard let task = meta["task"] as? String,
            let fp = (meta["base_fingerprint"] as? String).flatMap(BaseFingerprint.init(hex:)),
            let drop = (meta["drop_ratio"] as? NSNumber)?.doubleValue,
            let count = meta["tensor_count"] as? Int
        else { throw corrupt("the META section lacks task, base_fingerprint, drop_ratio or tensor_count") }
        guard count == tensors.count else {
            throw corrupt("META lists \(count) tensors but the file holds \(tensors.count)")
        }
        // Written since version 1; a section whose tag was damaged would otherwise be skipped as unknown.
        if let heads = meta["head_tensor_count"] as? Int, heads != head.count {
            throw corrupt("META lists \(heads) head tensors but the file holds \(head.count)")
        }
        let rule = (meta["tie_rule"] as? String).flatMap(PDiscard.TieRule.init(rawValue:)) ?? .lowestIndex
        let labels = meta["labels"] as? [String] ?? []
        // A pack is one kind: every tensor section of a random-mask pack is RVAL, of a T-Switch pack TSWT.
        let kindName = meta["kind"] as? String ?? SwitchPack.Kind.tSwitch.rawValue
        guard let kind = SwitchPack.Kind(rawValue: kindName) else { throw corrupt("META names an unknown pack kind") }
        var seed: UInt64 = 0
        if kind == .randomMask {
            guard version >= 2, let s = (meta["seed"] as? String).flatMap({ UInt64($0) }) else {
                throw corrupt("a random-mask pack lacks its seed or is marked version 1")
            }
            seed = s
            guard randomSections == tensors.count else {
                throw corrupt("a random-mask pack holds T-Switch (TSWT) sections")
            }
            // The record holds α's exact bits; META's JSON number need only agree (it is for people and tools).
            for t in tensors where Swift.abs((t.values?.dropRatio ?? .nan) - drop) > 1e-9 {
                throw corrupt("tensor '\(t.name)' has another drop ratio than META")
            }
        } else if randomSections > 0 {
            throw corrupt("a T-Switch pack holds random-mask (RVAL) sections")
        }
        return SwitchPack(
            task: task, baseFingerprint: fp, dropRatio: drop, tieRule: rule, tensors: tensors, head: head,
            labels: labels, kind: kind, seed: seed)
    }

    /// The name, base dtype and shape that open both `TSWT` and `RVAL` records, checked against `limits`.
    private static func recordHeader(
        _ r: inout ByteReader, file: String, limits: Limits, corrupt: (String) -> SwitchError
    ) throws -> (name: String, dtype: DType, shape: [Int], elements: UInt64) {
        guard let name = try r.string() else { throw corrupt("its name is not UTF-8") }
        guard let dtypeName = try r.string(), let dtype = DType(rawValue: dtypeName) else {
            throw corrupt("'\(name)' has an unknown base dtype")
        }
        let rank = Int(try r.u8())
        guard rank <= limits.maxRank else {
            throw SwitchError(
                .limitExceeded, "\(file): tensor '\(name)' has \(rank) dimensions; at most \(limits.maxRank) are allowed.")
        }
        var shape: [Int] = []
        var elements: UInt64 = 1
        for _ in 0..<rank {
            let d = try r.u64()
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            // Each dimension too: after a 0 the product stays 0 (found by fuzzing: [0, 2^63] trapped in Int(d)).
            guard !o, p <= UInt64(UInt32.max) + 1, d <= UInt64(UInt32.max) + 1 else {
                throw corrupt("tensor '\(name)' has an impossible shape")
            }
            elements = p
            shape.append(Int(d))
        }
        guard elements <= UInt64(limits.maxTensorElements) else {
            throw SwitchError(
                .limitExceeded,
                "\(file): tensor '\(name)' has \(elements) elements; at most \(limits.maxTensorElements) are allowed.")
        }
        return (name, dtype, shape, elements)
    }

    /// Decodes one `TSWT` record. `keptBudget` is what remains of `limits.maxKeptEntries` for this pack.
    static func decodeTensor(
        _ payload: UnsafeRawBufferPointer, index: Int, file: String, limits: Limits = .standard,
        keptBudget: Int = Limits.standard.maxKeptEntries
    ) throws(SwitchError) -> TensorSwitch {
        var r = ByteReader(payload)
        func corrupt(_ what: String) -> SwitchError {
            SwitchError(
                .corruptPack, "\(file): the pack is corrupt (tensor switch \(index + 1): \(what)); copy it again.")
        }
        do {
            let (name, dtype, shape, elements) = try recordHeader(&r, file: file, limits: limits, corrupt: corrupt)
            let lambda = try r.f32()
            guard lambda.isFinite, lambda >= 0 else { throw corrupt("tensor '\(name)' has scale \(lambda)") }
            let nPos = try r.u64()
            let nNeg = try r.u64()
            let (declared, overflow) = nPos.addingReportingOverflow(nNeg)
            guard !overflow, declared <= elements else {
                throw corrupt("tensor '\(name)' keeps more entries than it has")
            }
            guard declared <= UInt64(max(0, keptBudget)) else {
                throw SwitchError(
                    .limitExceeded,
                    "\(file): tensor '\(name)' takes the pack past \(limits.maxKeptEntries) kept entries, the limit.")
            }
            let blockCount = Int(try r.u32())
            var lengths: [Int] = []
            for _ in 0..<blockCount { lengths.append(Int(try r.u32())) }
            var streams: [UnsafeRawBufferPointer] = []
            for l in lengths { streams.append(try r.take(l)) }
            guard r.remaining == 0 else { throw corrupt("tensor '\(name)' has \(r.remaining) trailing bytes") }
            let s = TensorSwitch(name: name, shape: shape, baseDType: dtype, lambda: lambda, positive: [], negative: [])
            let (rows, cols) = s.rowsCols
            guard cols <= TernaryCoder.maxColumns else {
                throw corrupt(
                    "tensor '\(name)' has rows of \(cols) entries; at most \(TernaryCoder.maxColumns) are supported")
            }
            guard let decoded = try? TernaryCoder.decode(streams, rows: rows, cols: cols, maxKept: Int(declared)),
                decoded.positive.count == Int(nPos), decoded.negative.count == Int(nNeg)
            else { throw corrupt("the mask of tensor '\(name)' does not decode to its recorded counts") }
            return TensorSwitch(
                name: name, shape: shape, baseDType: dtype, lambda: lambda, positive: decoded.positive,
                negative: decoded.negative)
        } catch is ByteReader.OutOfBounds {
            throw corrupt("its record ends early")
        } catch let e as SwitchError {
            throw e
        } catch {
            throw corrupt("\(error)")
        }
    }

    /// Decodes one `RVAL` record: regenerates the tensor's mask from its seed and drop ratio, checks its size
    /// against the recorded one, and pairs it with the stored values (entries whose value is 0 are dropped).
    static func decodeRandom(
        _ payload: UnsafeRawBufferPointer, index: Int, file: String, limits: Limits = .standard,
        keptBudget: Int = Limits.standard.maxKeptEntries
    ) throws(SwitchError) -> (tensor: TensorSwitch, maskCount: Int) {
        var r = ByteReader(payload)
        func corrupt(_ what: String) -> SwitchError {
            SwitchError(
                .corruptPack, "\(file): the pack is corrupt (random-mask tensor \(index + 1): \(what)); copy it again.")
        }
        do {
            let (name, dtype, shape, elements) = try recordHeader(&r, file: file, limits: limits, corrupt: corrupt)
            let drop = Double(bitPattern: try r.u64())
            let seed = try r.u64()
            let rescale = try r.f32()
            guard drop >= 0, drop < 1 else { throw corrupt("tensor '\(name)' has drop ratio \(drop)") }
            guard rescale == Float(1 / (1 - drop)) else {
                throw corrupt("tensor '\(name)' has rescale \(rescale), not 1/(1-\(drop))")
            }
            let maskCount = try r.u64()
            guard maskCount <= elements else { throw corrupt("tensor '\(name)' keeps more entries than it has") }
            guard maskCount <= UInt64(max(0, keptBudget)) else {
                throw SwitchError(
                    .limitExceeded,
                    "\(file): tensor '\(name)' takes the pack past \(limits.maxKeptEntries) kept entries, the limit.")
            }
            guard let code = KeptValues.Code(tag: try r.u8()) else {
                throw corrupt("tensor '\(name)' has an unknown value code")
            }
            let step = try r.f32()
            guard KeptValues.validStep(step, code: code) else {
                throw corrupt("tensor '\(name)' has value step \(step) for code \(code.rawValue)")
            }
            let frameLength = try r.u64()
            guard frameLength <= UInt64(r.remaining) else { throw corrupt("its record ends early") }
            let frame = try r.take(Int(frameLength))
            guard r.remaining == 0 else { throw corrupt("tensor '\(name)' has \(r.remaining) trailing bytes") }
            guard
                let mask = RandomMask.positions(
                    count: Int(elements), dropRatio: drop, seed: seed, limit: Int(maskCount)),
                mask.count == Int(maskCount)
            else { throw corrupt("the mask of tensor '\(name)' does not regenerate to its recorded size") }
            guard let all = KeptValues.unpack(frame, count: mask.count, code: code, step: step) else {
                throw corrupt("the values of tensor '\(name)' do not decode to \(mask.count) finite numbers")
            }
            var kept: [UInt32] = []
            var values: [Float] = []
            for (j, v) in all.enumerated() where v != 0 {
                kept.append(mask[j])
                values.append(v)
            }
            let t = TensorSwitch(
                name: name, shape: shape, baseDType: dtype, lambda: rescale, positive: kept, negative: [],
                values: KeptValues(code: code, step: step, values: values, maskSeed: seed, dropRatio: drop))
            return (t, mask.count)
        } catch is ByteReader.OutOfBounds {
            throw corrupt("its record ends early")
        } catch let e as SwitchError {
            throw e
        } catch {
            throw corrupt("\(error)")
        }
    }

    static func decodeHead(_ payload: UnsafeRawBufferPointer, file: String, limits: Limits = .standard)
        throws(SwitchError) -> DenseTensor
    {
        var r = ByteReader(payload)
        let bad = SwitchError(
            .corruptPack, "\(file): the pack is corrupt (a HEAD section is malformed); copy it again.")
        guard let name = try? r.string() ?? nil, let rank = try? r.u8() else { throw bad }
        guard Int(rank) <= limits.maxRank else {
            throw SwitchError(
                .limitExceeded, "\(file): head tensor '\(name)' has \(rank) dimensions; at most \(limits.maxRank) are allowed.")
        }
        var shape: [Int] = []
        var n = 1
        for _ in 0..<rank {
            guard let d = try? r.u64(), d < 1 << 31 else { throw bad }
            shape.append(Int(d))
            let (p, o) = n.multipliedReportingOverflow(by: Int(d))
            guard !o, p <= limits.maxHeadElements else {
                throw SwitchError(
                    .limitExceeded,
                    "\(file): head tensor '\(name)' has more than \(limits.maxHeadElements) values, the limit.")
            }
            n = p
        }
        guard r.remaining == n * 4, let raw = try? r.take(n * 4) else { throw bad }
        let values = (0..<n).map {
            Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
        }
        return DenseTensor(name: name, shape: shape, values: values)
    }
}
