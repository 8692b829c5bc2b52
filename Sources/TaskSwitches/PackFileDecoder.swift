import CheckpointIO
import Foundation
import TensorKernels

/// Reading `.tsw` packs: every section checked (checksum, order, sizes against `Limits`) before it is decoded.
extension PackFile {
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
        guard !bytes.isEmpty else {
            throw SwitchError(.notAPack, "\(file): the file is empty; expected a switch pack.")
        }
        guard bytes.count >= magic.count, bytes.prefix(magic.count).elementsEqual(magic) else {
            if bytes.count < magic.count, magic.starts(with: bytes) {
                throw SectionReader.truncated(file, "pack", "the file ends inside the 16-byte preamble")
            }
            throw SwitchError(
                .notAPack, "\(file): not a switch pack (expected the magic bytes \\x89TSWPACK at the start).")
        }
        var r = try SectionReader(
            bytes, magicLength: magic.count, file: file, kind: "pack", newestVersion: Self.version,
            maxSections: limits.maxSections)
        func corrupt(_ what: String) -> SwitchError { SectionReader.corrupt(file, "pack", what) }
        let version = r.version
        var meta: [String: Any]?
        var tensors: [TensorSwitch] = []
        var head: [DenseTensor] = []
        var ended = false
        var kept = 0
        var randomSections = 0
        while r.remaining > 0 {
            if ended { try r.checkNothingFollows() }
            let section = try r.next()
            let payload = section.payload
            switch section.tag {
            case "META":
                try r.limit(section, maxBytes: limits.maxMetaBytes)
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
                try r.checkEnd(section, exactLength: false)
                ended = true
            default:
                break  // Sections added by later minor revisions of version 1 are skipped (their CRC was checked).
            }
        }
        guard ended else { throw r.truncated("the END! section is missing after \(r.count) sections") }
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
    fileprivate static func recordHeader(
        _ r: inout ByteReader, file: String, limits: Limits, corrupt: (String) -> SwitchError
    ) throws -> (name: String, dtype: DType, shape: [Int], elements: UInt64) {
        guard let name = try r.string() else { throw corrupt("its name is not UTF-8") }
        guard let dtypeName = try r.string(), let dtype = DType(rawValue: dtypeName) else {
            throw corrupt("'\(name)' has an unknown base dtype")
        }
        let rank = Int(try r.u8())
        guard rank <= limits.maxRank else {
            throw SwitchError(
                .limitExceeded,
                "\(file): tensor '\(name)' has \(rank) dimensions; at most \(limits.maxRank) are allowed.")
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
                .limitExceeded,
                "\(file): head tensor '\(name)' has \(rank) dimensions; at most \(limits.maxRank) are allowed.")
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
