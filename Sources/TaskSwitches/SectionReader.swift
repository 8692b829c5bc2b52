import CheckpointIO

/// Reads the framing that `.tsw` switch packs and `.tsr` router files share, so both bounds-check, checksum and
/// word their errors the same way.
///
/// Layout (little-endian): a 16-byte preamble (8 magic bytes, u32 version, u32 reserved flags, 0), then sections,
/// each a 4-byte tag, a u64 payload length and the payload's CRC-32C, then the payload. The last section, `END!`,
/// holds the number of sections before it, so a file cut at a section boundary is still detected. The caller
/// checks the magic (the formats refuse a foreign file differently) and decodes the payloads; every error names
/// the file, and those about a section name its number, tag and byte offset.
struct SectionReader {
    /// One section whose checksum matched.
    struct Section {
        let tag: String
        let payload: UnsafeRawBufferPointer
        /// 1-based position in the file.
        let number: Int
        /// Byte offset of the section's header in the file.
        let offset: Int

        /// The section, as error messages name it.
        var label: String { "section \(number) ('\(tag)') at byte \(offset)" }
    }

    /// The file, as error messages name it.
    let file: String
    /// What the file is, as error messages name it ("pack", "router file").
    let kind: String
    /// The format version from the preamble, between 1 and the reader's newest.
    let version: UInt32
    /// Sections read so far.
    private(set) var count = 0
    private let maxSections: Int
    private var reader: ByteReader

    /// Checks the preamble after the magic.
    ///
    /// - Parameters:
    ///   - bytes: the whole file; its first `magicLength` bytes were checked by the caller.
    ///   - newestVersion: the newest format version this code reads.
    ///   - maxSections: sections `next()` reads at the most before throwing `.limitExceeded`.
    /// - Throws: `.truncatedPack` when the preamble is cut, `.corruptPack` for version 0 or non-zero flags,
    ///   `.unsupportedVersion` for a newer version.
    init(
        _ bytes: UnsafeRawBufferPointer, magicLength: Int, file: String, kind: String, newestVersion: UInt32,
        maxSections: Int = .max
    ) throws(SwitchError) {
        self.file = file
        self.kind = kind
        self.maxSections = maxSections
        reader = ByteReader(bytes)
        reader.offset = magicLength
        guard let version = try? reader.u32(), let flags = try? reader.u32() else {
            throw Self.truncated(file, kind, "the file ends inside the 16-byte preamble")
        }
        guard version >= 1 else { throw Self.corrupt(file, kind, "the format version is 0") }
        guard version <= newestVersion else {
            throw SwitchError(
                .unsupportedVersion,
                "\(file): the \(kind) has format version \(version), newer than this reader (version \(newestVersion)); upgrade tswitch to read it."
            )
        }
        // Reserved: version 1 writes 0, so any other value is damage (the preamble has no checksum of its own).
        guard flags == 0 else { throw Self.corrupt(file, kind, "the reserved flags field is \(flags), not 0") }
        self.version = version
    }

    /// Bytes after the last section read.
    var remaining: Int { reader.remaining }

    /// Reads the next section and checks its tag (when `expected` names one), its length against the file and its
    /// checksum against its payload, in that order.
    ///
    /// - Throws: `.truncatedPack` when the header or payload runs past the end of the file, `.corruptPack` for
    ///   another tag or a checksum that differs, `.limitExceeded` past `maxSections`.
    mutating func next(expected: String? = nil) throws(SwitchError) -> Section {
        let number = count + 1
        let offset = reader.offset
        guard count < maxSections else {
            throw SwitchError(.limitExceeded, "\(file): the \(kind) has more than \(maxSections) sections, the limit.")
        }
        guard let tagBytes = try? reader.take(4), let length = try? reader.u64(), let crc = try? reader.u32() else {
            throw truncated("the file ends inside the header of section \(number) at byte \(offset)")
        }
        let tag = String(decoding: tagBytes, as: UTF8.self)
        let section = "section \(number) ('\(tag)') at byte \(offset)"
        if let expected, tag != expected {
            throw corrupt("section \(number) at byte \(offset) is '\(tag)', expected '\(expected)'")
        }
        guard length <= UInt64(reader.remaining), let payload = try? reader.take(Int(length)) else {
            throw truncated("\(section) needs \(length) bytes, \(reader.remaining) remain")
        }
        guard CRC32C.checksum(payload) == crc else {
            throw corrupt("the checksum of \(section) does not match its contents")
        }
        count = number
        return Section(tag: tag, payload: payload, number: number, offset: offset)
    }

    /// Refuses a section whose payload is longer than `maxBytes`.
    func limit(_ section: Section, maxBytes: Int) throws(SwitchError) {
        guard section.payload.count <= maxBytes else {
            throw SwitchError(
                .limitExceeded,
                "\(file): the \(section.tag) section (\(section.label)) has \(section.payload.count) bytes; at most \(maxBytes) are allowed."
            )
        }
    }

    /// Checks that the `END!` section counts the sections before it, its payload being exactly the u64 count when
    /// `exactLength` is set (packs accept trailing payload bytes, router files do not).
    func checkEnd(_ section: Section, exactLength: Bool) throws(SwitchError) {
        var e = ByteReader(section.payload)
        guard !exactLength || section.payload.count == 8, let n = try? e.u64(), n == UInt64(section.number - 1)
        else { throw corrupt("the END! section counts a different number of sections than the file holds") }
    }

    /// Refuses bytes after the `END!` section.
    func checkNothingFollows() throws(SwitchError) {
        guard reader.remaining == 0 else { throw corrupt("\(reader.remaining) bytes follow the END! section") }
    }

    /// A `.truncatedPack` error naming the file and what is missing.
    func truncated(_ what: String) -> SwitchError { Self.truncated(file, kind, what) }

    /// A `.corruptPack` error naming the file and what is wrong.
    func corrupt(_ what: String) -> SwitchError { Self.corrupt(file, kind, what) }

    static func truncated(_ file: String, _ kind: String, _ what: String) -> SwitchError {
        SwitchError(.truncatedPack, "\(file): the \(kind) is truncated (\(what)); copy it again.")
    }

    static func corrupt(_ file: String, _ kind: String, _ what: String) -> SwitchError {
        SwitchError(.corruptPack, "\(file): the \(kind) is corrupt (\(what)); copy it again.")
    }
}
