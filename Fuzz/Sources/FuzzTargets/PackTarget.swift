import Foundation
import TaskSwitches

/// Limits of the fuzzed decoder: the format's structure is unchanged, the sizes are small enough that one input
/// decodes in milliseconds, so libFuzzer explores structure instead of waiting on a legal 2^32-entry tensor.
let fuzzPackLimits = PackFile.Limits(
    maxMetaBytes: 1 << 16, maxSections: 1 << 12, maxRank: 8, maxTensorElements: 1 << 22, maxKeptEntries: 1 << 22,
    maxHeadElements: 1 << 20)

/// A `.tsw` pack, decoded twice: as is (the checksums must catch mutations) and with every section's CRC-32C
/// recomputed, so mutations reach the META, tensor, random-mask (`RVAL`: mask regeneration, zstd values), head and
/// range-coder decoders behind the checksums. An accepted
/// pack must hold sorted, disjoint, in-range indices and survive encode/decode unchanged.
func fuzzPack(_ bytes: UnsafeRawBufferPointer) {
    check(bytes)
    var repaired = [UInt8](bytes)
    if repairChecksums(&repaired) { repaired.withUnsafeBytes { check($0) } }
}

private func check(_ bytes: UnsafeRawBufferPointer) {
    guard let pack = try? PackFile.decode(bytes, file: "fuzz.tsw", limits: fuzzPackLimits) else { return }
    for t in pack.tensors {
        let n = t.shape.reduce(1, *)
        for list in [t.positive, t.negative] {
            precondition(zip(list, list.dropFirst()).allSatisfy { $0 < $1 }, "accepted unsorted indices")
            precondition(list.last.map { Int($0) < n } ?? true, "accepted an index outside the tensor")
        }
        precondition(Set(t.positive).isDisjoint(with: t.negative), "accepted an entry that is both + and -")
    }
    let again = PackFile.encode(pack)
    guard let back = try? PackFile.decode(again, file: "fuzz-again.tsw") else {
        preconditionFailure("a decoded pack does not decode after re-encoding")
    }
    // Heads compare by bit pattern: a NaN head value is carried as is (the writer does not refuse one either).
    func bits(_ p: SwitchPack) -> [[UInt32]] { p.head.map { $0.values.map(\.bitPattern) } }
    var same = back
    same.head = pack.head
    precondition(same == pack && bits(back) == bits(pack), "a decoded pack changed after re-encoding")
}

/// Rewrites each section's CRC-32C to match its payload (packs and router files share the framing: a 16-byte
/// preamble, then tag, u64 length, CRC-32C, payload); false when the section walk finds nothing to fix.
func repairChecksums(_ b: inout [UInt8]) -> Bool {
    var at = 16
    var changed = false
    while at + 16 <= b.count {
        var length: UInt64 = 0
        for i in 0..<8 { length |= UInt64(b[at + 4 + i]) << (8 * UInt64(i)) }
        let start = at + 16
        guard length <= UInt64(b.count - start) else { break }
        let end = start + Int(length)
        let crc = b[start..<end].withUnsafeBytes { CRC32C.checksum($0) }
        for i in 0..<4 {
            let byte = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i)))
            if b[at + 12 + i] != byte { changed = true }
            b[at + 12 + i] = byte
        }
        at = end
    }
    return changed
}
