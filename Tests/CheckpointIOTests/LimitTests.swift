import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

/// `SafeTensorsHeader.Limits`: each bound accepts its exact value and refuses one more, without allocating or
/// reading what the hostile value asks for.
struct LimitTests {
    typealias L = SafeTensorsHeader.Limits

    /// An 8-byte little-endian length field.
    static func prefix(_ n: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) } }

    @Test("a header length of exactly maxHeaderLength is accepted, one more is refused before reading it")
    func headerLength() {
        let fileSize = L.maxHeaderLength + 8  // the check needs no such file: it runs on the 8-byte prefix
        let ok = checkpointError {
            _ = try Self.prefix(UInt64(L.maxHeaderLength)).withUnsafeBytes {
                try SafeTensorsHeader.headerLength(prefix: $0, fileSize: fileSize, file: "h.safetensors")
            }
        }
        #expect(ok == nil)
        let over = checkpointError {
            _ = try Self.prefix(UInt64(L.maxHeaderLength + 1)).withUnsafeBytes {
                try SafeTensorsHeader.headerLength(prefix: $0, fileSize: fileSize + 1, file: "h.safetensors")
            }
        }
        #expect(over?.code == .headerTooLarge)
        #expect(over?.message.contains("h.safetensors") == true)
    }

    /// A whole file with one F32 tensor of `shape` (its data zero-filled).
    static func file(shape: [Int]) -> [UInt8] {
        let n = shape.reduce(1, *)
        let json = Array(#"{"t":{"dtype":"F32","shape":\#(shape),"data_offsets":[0,\#(4 * n)]}}"#.utf8)
        return prefix(UInt64(json.count)) + json + [UInt8](repeating: 0, count: 4 * n)
    }

    static func parse(_ bytes: [UInt8]) -> CheckpointError? {
        checkpointError {
            _ = try bytes.withUnsafeBytes { b in
                let n = try SafeTensorsHeader.headerLength(prefix: b, fileSize: b.count, file: "r.safetensors")
                return try SafeTensorsHeader.parse(
                    json: UnsafeRawBufferPointer(rebasing: b[8..<(8 + n)]), fileSize: b.count, file: "r.safetensors")
            }
        }
    }

    @Test("rank maxRank is accepted, one more dimension is refused")
    func rank() {
        #expect(Self.parse(Self.file(shape: Array(repeating: 1, count: L.maxRank))) == nil)
        let err = Self.parse(Self.file(shape: Array(repeating: 1, count: L.maxRank + 1)))
        #expect(err?.code == .limitExceeded)
        #expect(err?.message.contains("33 dimensions") == true)
    }

    @Test("an element count whose byte size overflows is refused, not wrapped")
    func elementOverflow() {
        // 2^62 × 4 elements of 4 bytes: the product overflows Int.
        let json = Array(#"{"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#.utf8)
        let err = Self.parse(Self.prefix(UInt64(json.count)) + json)
        #expect(err?.code == .byteSpanMismatch)
        #expect(err?.message.contains("overflows") == true)
    }

    @Test("maxTensorCount entries plus __metadata__ pass the count check; one more entry is refused")
    func tensorCount() {
        // The smallest members ("":0) are 5 bytes, so the count check, not the header bound, is what refuses them.
        func header(_ members: Int) -> [UInt8] {
            var json: [UInt8] = [UInt8(ascii: "{")]
            json.reserveCapacity(5 * members + 2)
            for i in 0..<members {
                if i > 0 { json.append(UInt8(ascii: ",")) }
                json += [0x22, 0x22, 0x3A, 0x30]  // "":0
            }
            json.append(UInt8(ascii: "}"))
            return Self.prefix(UInt64(json.count)) + json
        }
        #expect(Self.parse(header(L.maxTensorCount + 1))?.code == .invalidEntry)  // past the count check
        let err = Self.parse(header(L.maxTensorCount + 2))
        #expect(err?.code == .limitExceeded)
        #expect(err?.message.contains("at most \(L.maxTensorCount)") == true)
    }

    @Test("an index of maxIndexBytes is read, one byte more is refused before reading")
    func indexSize() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let shard = Self.file(shape: [2])
        try Data(shard).write(to: dir.appendingPathComponent("model-00001-of-00001.safetensors"))
        let index = #"{"weight_map": {"t": "model-00001-of-00001.safetensors"}}"#
        let pad = L.maxIndexBytes - index.utf8.count
        let url = dir.appendingPathComponent("model.safetensors.index.json")
        try Data((index + String(repeating: " ", count: pad)).utf8).write(to: url)
        #expect(checkpointError { _ = try ModelFolder(path: dir.path) } == nil)
        try Data((index + String(repeating: " ", count: pad + 1)).utf8).write(to: url)
        let err = checkpointError { _ = try ModelFolder(path: dir.path) }
        #expect(err?.code == .limitExceeded)
        #expect(err?.message.contains("model.safetensors.index.json") == true)
    }
}
