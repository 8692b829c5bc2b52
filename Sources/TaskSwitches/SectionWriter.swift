import CheckpointIO

/// Writes the framing `SectionReader` reads (`.tsw` packs, `.tsr` router files): the preamble, sections each
/// with its tag, length and CRC-32C, and the closing `END!` section counting them.
struct SectionWriter {
    private var out = ByteWriter()
    private var count = 0

    /// Starts a file with its 8 magic bytes, `version` and the reserved flags (0).
    init(magic: [UInt8], version: UInt32) {
        precondition(magic.count == 8, "the preamble holds 8 magic bytes")
        out.raw(magic)
        out.u32(version)
        out.u32(0)
    }

    /// Appends one section; `tag` is 4 ASCII bytes.
    mutating func section(_ tag: String, _ payload: [UInt8]) {
        precondition(tag.utf8.count == 4, "a section tag is 4 bytes")
        out.raw(Array(tag.utf8))
        out.u64(UInt64(payload.count))
        out.u32(CRC32C.checksum(payload))
        out.raw(payload)
        count += 1
    }

    /// Appends the `END!` section (the number of sections before it) and returns the file's bytes.
    mutating func finish() -> [UInt8] {
        var end = ByteWriter()
        end.u64(UInt64(count))
        section("END!", end.bytes)
        return out.bytes
    }
}
