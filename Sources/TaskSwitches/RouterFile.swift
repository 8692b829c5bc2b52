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
public enum RouterFile {
    public static let magic: [UInt8] = [0x89, 0x54, 0x53, 0x57, 0x52, 0x4F, 0x55, 0x54]  // "\x89TSWROUT"
    /// The newest version this reader reads.
    public static let version: UInt32 = 2
    /// The version of routers on the final embedding alone.
    public static let plainVersion: UInt32 = 1

    /// Sizes a hostile router file cannot push past, checked before allocation.
    public struct Limits: Sendable {
        public var maxTasks = 4096
        public var maxDimension = 65_536
        public var maxMetaBytes = 4 << 20
        public var maxLayers = 256
        public init(maxTasks: Int = 4096, maxDimension: Int = 65_536, maxMetaBytes: Int = 4 << 20, maxLayers: Int = 256)
        {
            self.maxTasks = maxTasks
            self.maxDimension = maxDimension
            self.maxMetaBytes = maxMetaBytes
            self.maxLayers = maxLayers
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
        let v = r.layers.isEmpty ? plainVersion : version
        var out = SectionWriter(magic: magic, version: v)
        var meta: [String: Any] = [
            "format": "tswitch-router", "version": Int(v), "kind": "lda", "tasks": r.tasks,
            "dimension": r.dimension, "shrinkage": r.shrinkage, "ood_threshold": Int(r.oodThreshold.bitPattern),
        ]
        if !r.layers.isEmpty { meta["layers"] = r.layers }
        if let fp = r.baseFingerprint { meta["base_fingerprint"] = fp.description }
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
        for tag in ["META", "CENT", "WGHT", "BIAS", "CHOL", "END!"] {
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
        if v >= 2 {
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
            oodThreshold: threshold, baseFingerprint: fp, layers: layers)
    }
}
