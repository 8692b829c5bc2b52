/// Reads little-endian values with bounds checks; running past the end is a `truncated` failure, never a trap.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    struct OutOfBounds: Error {}

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func take(_ n: Int) throws(OutOfBounds) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else { throw OutOfBounds() }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
    }

    mutating func u8() throws(OutOfBounds) -> UInt8 { try take(1)[0] }
    mutating func u16() throws(OutOfBounds) -> UInt16 {
        UInt16(littleEndian: try take(2).loadUnaligned(as: UInt16.self))
    }
    mutating func u32() throws(OutOfBounds) -> UInt32 {
        UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self))
    }
    mutating func u64() throws(OutOfBounds) -> UInt64 {
        UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self))
    }
    mutating func f32() throws(OutOfBounds) -> Float { Float(bitPattern: try u32()) }
    mutating func f64() throws(OutOfBounds) -> Double { Double(bitPattern: try u64()) }
    mutating func string() throws(OutOfBounds) -> String? {
        let n = Int(try u32())
        return String(validating: try take(n), as: UTF8.self)
    }
}
