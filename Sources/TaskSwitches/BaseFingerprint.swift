import CheckpointIO

/// Identifies the base model a pack was made from: FNV-1a 64 over every tensor's name, dtype and shape (sorted by
/// name) and the raw bytes of up to 16 evenly spaced elements of each tensor.
///
/// The sample makes two checkpoints of the same architecture (a base and its fine-tune, or a base and an unrelated
/// pre-training) differ, while hashing only ~16 elements per tensor keeps it at milliseconds for any size (it
/// touches one page per sampled element). Not a cryptographic hash: it guards against mistakes, not attacks.
public struct BaseFingerprint: Sendable, Hashable, CustomStringConvertible {
    public let value: UInt64

    public init(value: UInt64) { self.value = value }

    public static let samplesPerTensor = 16

    public init(model: ModelFolder) throws(SwitchError) {
        var h = FNV1a64()
        for info in model.tensorInfos.sorted(by: { $0.name < $1.name }) {
            h.add(Array(info.name.utf8))
            h.add([0])
            h.add(Array(info.dtype.rawValue.utf8))
            h.add([0])
            for d in info.shape { h.add(UInt64(d)) }
            h.add(UInt64.max)
            let view = try io { () throws(CheckpointError) in try model.tensor(info.name) }
            let n = info.elementCount
            let width = max(1, info.dtype.bitWidth / 8)
            guard n > 0, info.dtype.bitWidth % 8 == 0 else { continue }
            let bytes = view.bytes
            let samples = min(n, Self.samplesPerTensor)
            for s in 0..<samples {
                let e = samples == 1 ? 0 : Int((Double(s) * Double(n - 1) / Double(samples - 1)).rounded(.down))
                h.add(UnsafeRawBufferPointer(rebasing: bytes[(e * width)..<((e + 1) * width)]))
            }
        }
        value = h.value
    }

    /// 16 lowercase hex digits.
    public var description: String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    public init?(hex: String) {
        guard hex.count == 16, let v = UInt64(hex, radix: 16) else { return nil }
        value = v
    }
}

struct FNV1a64 {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes {
            value ^= UInt64(b)
            value = value &* 0x100_0000_01B3
        }
    }

    mutating func add(_ bytes: [UInt8]) { bytes.withUnsafeBytes { add($0) } }

    mutating func add(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { add($0) } }
}
