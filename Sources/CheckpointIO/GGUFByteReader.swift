/// A bounds-checked little-endian cursor over a GGUF header. Every read names what it was reading, so a
/// truncated or lying file is reported as "the file ends inside <that>".
struct GGUFByteReader {
    let bytes: UnsafeRawBufferPointer
    let file: String
    var position: Int

    var remaining: Int { bytes.count - position }

    private mutating func take(_ n: Int, _ what: @autoclosure () -> String) throws(CheckpointError) -> Int {
        guard n <= remaining else {
            throw CheckpointError(
                .headerOutOfBounds,
                "\(file): the file ends at byte \(bytes.count) inside \(what()), which needs \(n) bytes from byte \(position) (file truncated?)."
            )
        }
        let at = position
        position += n
        return at
    }

    mutating func u32(_ what: @autoclosure () -> String) throws(CheckpointError) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(4, what()), as: UInt32.self))
    }

    mutating func u64(_ what: @autoclosure () -> String) throws(CheckpointError) -> UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(8, what()), as: UInt64.self))
    }

    /// A u64 length and that many UTF-8 bytes.
    mutating func string(_ what: @autoclosure () -> String) throws(CheckpointError) -> String {
        let n = try u64(what())
        guard n <= UInt64(GGUFHeader.Limits.maxStringLength) else {
            throw CheckpointError(
                .limitExceeded,
                "\(file): \(what()) is a string of \(n) bytes; at most \(GGUFHeader.Limits.maxStringLength) are allowed."
            )
        }
        let at = try take(Int(n), "\(what()) (a string of \(n) bytes)")
        let raw = UnsafeRawBufferPointer(rebasing: bytes[at..<(at + Int(n))])
        guard let s = String(validating: raw.bindMemory(to: UInt8.self), as: UTF8.self) else {
            throw CheckpointError(.invalidUTF8, "\(file): \(what()) is not valid UTF-8.")
        }
        return s
    }

    mutating func valueType(_ what: @autoclosure () -> String) throws(CheckpointError) -> GGUFValueType {
        let code = try u32("the value type of \(what())")
        guard let t = GGUFValueType(rawValue: code) else {
            throw CheckpointError(
                .invalidMetadata, "\(file): \(what()) has value type code \(code); expected 0 to 12.")
        }
        return t
    }

    /// One value of `type`; arrays recurse up to `Limits.maxNestingDepth`.
    mutating func value(of type: GGUFValueType, context: @autoclosure () -> String, depth: Int) throws(CheckpointError)
        -> GGUFValue
    {
        switch type {
        case .uint8: return .uint8(bytes[try take(1, context())])
        case .int8: return .int8(Int8(bitPattern: bytes[try take(1, context())]))
        case .uint16:
            return .uint16(
                UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(2, context()), as: UInt16.self)))
        case .int16:
            return .int16(
                Int16(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(2, context()), as: Int16.self)))
        case .uint32: return .uint32(try u32(context()))
        case .int32: return .int32(Int32(bitPattern: try u32(context())))
        case .float32: return .float32(Float(bitPattern: try u32(context())))
        case .uint64: return .uint64(try u64(context()))
        case .int64: return .int64(Int64(bitPattern: try u64(context())))
        case .float64: return .float64(Double(bitPattern: try u64(context())))
        case .bool:
            let b = bytes[try take(1, context())]
            guard b <= 1 else {
                throw CheckpointError(
                    .invalidMetadata, "\(file): \(context()) is a bool of value \(b); expected 0 or 1.")
            }
            return .bool(b == 1)
        case .string: return .string(try string(context()))
        case .array:
            guard depth < GGUFHeader.Limits.maxNestingDepth else {
                throw CheckpointError(
                    .limitExceeded,
                    "\(file): \(context()) nests arrays more than \(GGUFHeader.Limits.maxNestingDepth) deep.")
            }
            let element = try valueType("the elements of \(context())")
            let count = try u64("the length of \(context())")
            guard count <= UInt64(GGUFHeader.Limits.maxArrayLength) else {
                throw CheckpointError(
                    .limitExceeded,
                    "\(file): \(context()) is an array of \(count) elements; at most \(GGUFHeader.Limits.maxArrayLength) are allowed."
                )
            }
            // Refuse before allocating: the elements could not fit in what is left of the file.
            let (need, o) = Int(count).multipliedReportingOverflow(by: element.minimumSize)
            guard !o, need <= remaining else {
                throw CheckpointError(
                    .headerOutOfBounds,
                    "\(file): \(context()) is an array of \(count) \(element.name) values, which needs at least \(need) bytes but only \(remaining) are left in the file (file truncated?)."
                )
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(count))
            for i in 0..<Int(count) {
                items.append(try value(of: element, context: "element \(i) of \(context())", depth: depth + 1))
            }
            return .array(element, items)
        }
    }
}
