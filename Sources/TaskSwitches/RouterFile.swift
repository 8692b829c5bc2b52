import CheckpointIO
import Foundation

/// Reads and writes `.tsr` router files holding an `LDARouter`.
///
/// Layout (little-endian), framed like packs (`SectionReader`, `SectionWriter`): the 16-byte preamble
/// `\x89TSWROUT`, u32 version (1), u32 flags (0); then sections, each a 4-byte tag, u64 payload length and the
/// payload's CRC-32C: `META` (JSON: format, version, kind "lda", tasks, dimension, shrinkage, ood_threshold as its
/// f32 bit pattern, optional base_fingerprint), `CENT` (D f32), `WGHT` (tasks × D f32, row-major), `BIAS` (tasks
/// f32), `CHOL` (D × D f32: the lower Cholesky factor of the shared covariance), `END!` (u64 section count). Every
/// section is required exactly once, in that order.
///
/// Version 2 (written only for a router on layer features, `LDARouter.layers` non-empty, so that older readers,
/// which would feed it the wrong features, refuse it) adds META.layers: the ascending layer indices, at most
/// `Limits.maxLayers`, their count dividing the dimension. Version 1 files have no layers.
///
/// Version 3 (written only for a router with lexical evidence, `LDARouter.lexical`) adds META.lexical, an object:
/// `hash` "fnv1a64-utf8" (the n-gram hash of `LexicalModel`), `buckets` B, `min_order` and `max_order` (the n range),
/// `alpha`, `weight` w and `power` p (numbers); and after CHOL a `LEXI` section: per task, in META.tasks order, a u32
/// entry count m, the f32 log-probability of unseen buckets, then m entries of (u32 bucket, f32 log-probability),
/// buckets strictly ascending below B, every log-probability finite and ≤ 0. META.layers is optional in version 3.
public enum RouterFile {
    public static let magic: [UInt8] = [0x89, 0x54, 0x53, 0x57, 0x52, 0x4F, 0x55, 0x54]  // "\x89TSWROUT"
    /// The newest version this reader reads.
    public static let version: UInt32 = 3
    /// The version of routers on the final embedding alone.
    public static let plainVersion: UInt32 = 1
    /// The version of routers on layer features without lexical evidence.
    public static let layersVersion: UInt32 = 2
    /// The n-gram hash name META.lexical.hash must carry.
    public static let lexicalHash = "fnv1a64-utf8"

    /// Sizes a hostile router file cannot push past, checked before allocation.
    public struct Limits: Sendable {
        public var maxTasks = 4096
        public var maxDimension = 65_536
        public var maxMetaBytes = 4 << 20
        public var maxLayers = 256
        public var maxLexicalBuckets = 1 << 24
        public var maxLexicalOrder = 16
        /// Seen buckets over all tasks.
        public var maxLexicalEntries = 1 << 26
        public init(
            maxTasks: Int = 4096, maxDimension: Int = 65_536, maxMetaBytes: Int = 4 << 20, maxLayers: Int = 256,
            maxLexicalBuckets: Int = 1 << 24, maxLexicalOrder: Int = 16, maxLexicalEntries: Int = 1 << 26
        ) {
            self.maxTasks = maxTasks
            self.maxDimension = maxDimension
            self.maxMetaBytes = maxMetaBytes
            self.maxLayers = maxLayers
            self.maxLexicalBuckets = maxLexicalBuckets
            self.maxLexicalOrder = maxLexicalOrder
            self.maxLexicalEntries = maxLexicalEntries
        }
        public static let standard = Limits()
    }

    /// Whether `path` starts with the router magic (else it is taken as a k-NN query set).
    public static func isRouterFile(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: magic.count)).map { Array($0) == magic } ?? false
    }

    public static func encode(_ r: LDARouter) -> [UInt8] {
        let v = r.lexical != nil ? version : r.layers.isEmpty ? plainVersion : layersVersion
        var out = SectionWriter(magic: magic, version: v)
        var meta: [String: Any] = [
            "format": "tswitch-router", "version": Int(v), "kind": "lda", "tasks": r.tasks,
            "dimension": r.dimension, "shrinkage": r.shrinkage, "ood_threshold": Int(r.oodThreshold.bitPattern),
        ]
        if !r.layers.isEmpty { meta["layers"] = r.layers }
        if let fp = r.baseFingerprint { meta["base_fingerprint"] = fp.description }
        if let x = r.lexical {
            meta["lexical"] =
                [
                    "hash": lexicalHash, "buckets": x.buckets, "min_order": x.minOrder, "max_order": x.maxOrder,
                    "alpha": x.alpha, "weight": x.weight, "power": x.power,
                ] as [String: Any]
        }
        let metaBytes = (try? JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys])) ?? Data("{}".utf8)
        out.section("META", Array(metaBytes))
        func floats(_ v: [Float]) -> [UInt8] {
            var w = ByteWriter()
            for x in v { w.f32(x) }
            return w.bytes
        }
        out.section("CENT", floats(r.centre))
        out.section("WGHT", floats(r.weights))
        out.section("BIAS", floats(r.bias))
        out.section("CHOL", floats(r.choleskyFactor))
        if let x = r.lexical {
            var w = ByteWriter()
            for t in x.tables {
                w.u32(UInt32(t.buckets.count))
                w.f32(t.unseen)
                for (b, p) in zip(t.buckets, t.logProbs) {
                    w.u32(b)
                    w.f32(p)
                }
            }
            out.section("LEXI", w.bytes)
        }
        return out.finish()
    }

    /// Writes the router atomically.
    @discardableResult
    public static func write(_ r: LDARouter, to path: String, overwrite: Bool = true) throws(SwitchError) -> Int {
        if !overwrite, FileManager.default.fileExists(atPath: path) {
            throw SwitchError(.outputExists, "\(path): already exists; pass --force to replace it.")
        }
        let bytes = encode(r)
        try io { () throws(CheckpointError) in
            let out = try FileOutput(target: path)
            try out.write(bytes)
            try out.commit()
        }
        return bytes.count
    }

    public static func read(_ path: String, limits: Limits = .standard) throws(SwitchError) -> LDARouter {
        let file = try io { () throws(CheckpointError) in try MappedFile(path: path) }
        var result: Result<LDARouter, SwitchError> = .failure(SwitchError(.notAPack, "\(path): empty."))
        let bytes = file.bytes(0..<file.size)
        bytes.withUnsafeBytes { b in
            result = Result { () throws(SwitchError) in try decode(b, file: path, limits: limits) }
        }
        return try result.get()
    }

    public static func decode(_ bytes: [UInt8], file: String, limits: Limits = .standard) throws(SwitchError)
        -> LDARouter
    {
        var result: Result<LDARouter, SwitchError> = .failure(SwitchError(.notAPack, "\(file): empty."))
        bytes.withUnsafeBytes { b in
            result = Result { () throws(SwitchError) in try decode(b, file: file, limits: limits) }
        }
        return try result.get()
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer, file: String, limits: Limits = .standard)
        throws(SwitchError) -> LDARouter
    {
        guard bytes.count >= magic.count, bytes.prefix(magic.count).elementsEqual(magic) else {
            throw SwitchError(
                .notAPack, "\(file): not a router file (expected the magic bytes \\x89TSWROUT at the start).")
        }
        var r = try SectionReader(
            bytes, magicLength: magic.count, file: file, kind: "router file", newestVersion: version)
        func corrupt(_ what: String) -> SwitchError { SectionReader.corrupt(file, "router file", what) }
        let v = r.version
        var payloads: [UnsafeRawBufferPointer] = []
        for tag in ["META", "CENT", "WGHT", "BIAS", "CHOL"] + (v >= 3 ? ["LEXI"] : []) + ["END!"] {
            let section = try r.next(expected: tag)
            if tag == "META" { try r.limit(section, maxBytes: limits.maxMetaBytes) }
            if tag == "END!" {
                try r.checkNothingFollows()
                try r.checkEnd(section, exactLength: true)
            }
            payloads.append(section.payload)
        }
        guard let meta = try? JSONSerialization.jsonObject(with: Data(payloads[0])) as? [String: Any] else {
            throw corrupt("field META is not a JSON object")
        }
        guard meta["format"] as? String == "tswitch-router", meta["kind"] as? String == "lda",
            meta["version"] as? Int == Int(v)
        else { throw corrupt("field META's format, kind or version is not tswitch-router, lda, \(v)") }
        guard let tasks = meta["tasks"] as? [String], !tasks.isEmpty else {
            throw corrupt("field META.tasks is not a non-empty array of names")
        }
        guard tasks.count <= limits.maxTasks else {
            throw SwitchError(
                .limitExceeded, "\(file): field META.tasks has \(tasks.count) tasks; at most \(limits.maxTasks).")
        }
        guard let d = meta["dimension"] as? Int, d >= 1 else { throw corrupt("field META.dimension is missing or < 1") }
        guard d <= limits.maxDimension else {
            throw SwitchError(
                .limitExceeded, "\(file): field META.dimension is \(d); at most \(limits.maxDimension).")
        }
        guard let lam = (meta["shrinkage"] as? NSNumber)?.doubleValue, lam > 0, lam <= 1 else {
            throw corrupt("field META.shrinkage is missing or outside (0, 1]")
        }
        guard let bits = meta["ood_threshold"] as? Int, bits >= 0, bits <= Int(UInt32.max) else {
            throw corrupt("field META.ood_threshold is not an f32 bit pattern")
        }
        let threshold = Float(bitPattern: UInt32(bits))
        guard !threshold.isNaN, threshold != .infinity else { throw corrupt("field META.ood_threshold is NaN or +∞") }
        var fp: BaseFingerprint?
        if let s = meta["base_fingerprint"] {
            guard let h = (s as? String).flatMap(BaseFingerprint.init(hex:)) else {
                throw corrupt("field META.base_fingerprint is not 16 hex digits")
            }
            fp = h
        }
        func floats(_ p: UnsafeRawBufferPointer, _ count: Int, _ name: String) throws(SwitchError) -> [Float] {
            guard p.count == count * 4 else {
                throw corrupt("field \(name) has \(p.count) bytes; \(count) f32 values need \(count * 4)")
            }
            let v = (0..<count).map {
                Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
            }
            if let bad = v.firstIndex(where: { !$0.isFinite }) {
                throw corrupt("field \(name) holds NaN or ∞ at \(bad)")
            }
            return v
        }
        var layers: [Int] = []
        if v == 2 || (v >= 3 && meta["layers"] != nil) {
            guard let l = meta["layers"] as? [Int], !l.isEmpty else {
                throw corrupt("field META.layers is not a non-empty array of layer indices")
            }
            guard l.count <= limits.maxLayers else {
                throw SwitchError(
                    .limitExceeded, "\(file): field META.layers has \(l.count) layers; at most \(limits.maxLayers).")
            }
            guard LDARouter.validLayers(l, dimension: d) else {
                throw corrupt(
                    "field META.layers \(l) is not ascending distinct indices ≥ 0 whose count divides the dimension \(d)"
                )
            }
            layers = l
        } else if meta["layers"] != nil {
            throw corrupt("field META.layers needs version 2; the file says version \(v)")
        }
        var lexical: LexicalModel?
        if v >= 3 {
            lexical = try decodeLexical(
                meta["lexical"], payloads[5], tasks: tasks.count, limits: limits, file: file, corrupt: corrupt)
        } else if meta["lexical"] != nil {
            throw corrupt("field META.lexical needs version 3; the file says version \(v)")
        }
        let centre = try floats(payloads[1], d, "CENT")
        let w = try floats(payloads[2], tasks.count * d, "WGHT")
        let b = try floats(payloads[3], tasks.count, "BIAS")
        let l = try floats(payloads[4], d * d, "CHOL")
        for i in 0..<d {
            guard l[i * d + i] > 0 else { throw corrupt("field CHOL has a diagonal entry ≤ 0 at row \(i)") }
            for j in (i + 1)..<d where l[i * d + j] != 0 {
                throw corrupt("field CHOL is not lower triangular (row \(i), column \(j))")
            }
        }
        return LDARouter(
            tasks: tasks, dimension: d, centre: centre, weights: w, bias: b, choleskyFactor: l, shrinkage: lam,
            oodThreshold: threshold, baseFingerprint: fp, layers: layers, lexical: lexical)
    }

    /// META.lexical and the LEXI section of a version 3 file.
    private static func decodeLexical(
        _ raw: Any?, _ p: UnsafeRawBufferPointer, tasks: Int, limits: Limits, file: String,
        corrupt: (String) -> SwitchError
    ) throws(SwitchError) -> LexicalModel {
        guard let m = raw as? [String: Any] else { throw corrupt("field META.lexical is missing or not an object") }
        guard m["hash"] as? String == lexicalHash else {
            throw corrupt("field META.lexical.hash is not \(lexicalHash)")
        }
        guard let buckets = m["buckets"] as? Int, buckets >= 1 else {
            throw corrupt("field META.lexical.buckets is missing or < 1")
        }
        guard buckets <= limits.maxLexicalBuckets else {
            throw SwitchError(
                .limitExceeded,
                "\(file): field META.lexical.buckets is \(buckets); at most \(limits.maxLexicalBuckets).")
        }
        guard let lo = m["min_order"] as? Int, let hi = m["max_order"] as? Int, lo >= 1, lo <= hi else {
            throw corrupt("field META.lexical.min_order / max_order is missing or not 1 ≤ min ≤ max")
        }
        guard hi <= limits.maxLexicalOrder else {
            throw SwitchError(
                .limitExceeded, "\(file): field META.lexical.max_order is \(hi); at most \(limits.maxLexicalOrder).")
        }
        func number(_ key: String, _ ok: (Double) -> Bool, _ range: String) throws(SwitchError) -> Double {
            guard let x = (m[key] as? NSNumber)?.doubleValue, x.isFinite, ok(x) else {
                throw corrupt("field META.lexical.\(key) is missing or not \(range)")
            }
            return x
        }
        let alpha = try number("alpha", { $0 > 0 }, "> 0")
        let weight = try number("weight", { $0 >= 0 }, "≥ 0")
        let power = try number("power", { $0 >= 0 && $0 <= 4 }, "in [0, 4]")
        var offset = 0
        var entries = 0
        func u32() -> UInt32? {
            guard offset + 4 <= p.count else { return nil }
            defer { offset += 4 }
            return UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
        }
        var tables: [LexicalModel.Table] = []
        for k in 0..<tasks {
            guard let count = u32(), let unseenBits = u32() else {
                throw corrupt("field LEXI ends inside the header of task \(k)'s table")
            }
            let unseen = Float(bitPattern: unseenBits)
            guard unseen.isFinite, unseen <= 0 else {
                throw corrupt("field LEXI: task \(k)'s unseen log-probability is not finite and ≤ 0")
            }
            entries += Int(count)
            guard entries <= limits.maxLexicalEntries else {
                throw SwitchError(
                    .limitExceeded, "\(file): field LEXI holds over \(limits.maxLexicalEntries) entries, the limit.")
            }
            guard Int(count) <= buckets, Int(count) * 8 <= p.count - offset else {
                throw corrupt(
                    "field LEXI: task \(k)'s table has \(count) entries; the section or the bucket range holds fewer")
            }
            var ids: [UInt32] = []
            var logs: [Float] = []
            ids.reserveCapacity(Int(count))
            logs.reserveCapacity(Int(count))
            for e in 0..<Int(count) {
                guard let b = u32(), let bits = u32() else { throw corrupt("field LEXI ends inside task \(k)'s table") }
                let lp = Float(bitPattern: bits)
                guard Int(b) < buckets, ids.last.map({ b > $0 }) ?? true else {
                    throw corrupt("field LEXI: task \(k)'s entry \(e) has bucket \(b), not ascending below \(buckets)")
                }
                guard lp.isFinite, lp <= 0 else {
                    throw corrupt("field LEXI: task \(k)'s entry \(e) has a log-probability that is not finite and ≤ 0")
                }
                ids.append(b)
                logs.append(lp)
            }
            tables.append(LexicalModel.Table(buckets: ids, logProbs: logs, unseen: unseen))
        }
        guard offset == p.count else { throw corrupt("field LEXI has \(p.count - offset) bytes after the last table") }
        return LexicalModel(
            buckets: buckets, minOrder: lo, maxOrder: hi, alpha: alpha, weight: weight, power: power, tables: tables)
    }
}
