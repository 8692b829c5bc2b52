/// A tensor to be written: its name, storage type and shape. Writers compute the header from a list of specs
/// before any data exists, so tensors can be streamed out one by one as they are produced.
public struct TensorSpec: Sendable, Hashable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Bytes of data; traps on overflow (specs come from validated inputs).
    public var byteCount: Int {
        guard let n = TensorInfo.byteCount(shape: shape, dtype: dtype) else {
            preconditionFailure("tensor '\(name)' of shape \(shape) overflows")
        }
        return n
    }

    public var elementCount: Int { shape.reduce(1, *) }
}

extension SafeTensorsHeader {
    /// The header bytes (length field included) for tensors laid out in the given order, padded with spaces to a
    /// multiple of 8 as the reference writer does.
    public static func encode(_ specs: [TensorSpec], metadata: [String: String]) -> [UInt8] {
        var json = "{"
        var first = true
        if !metadata.isEmpty {
            json += "\"__metadata__\":{"
            json += metadata.sorted { $0.key < $1.key }.map { "\(jsonQuoted($0.key)):\(jsonQuoted($0.value))" }
                .joined(separator: ",")
            json += "}"
            first = false
        }
        var offset = 0
        for s in specs {
            if !first { json += "," }
            first = false
            let end = offset + s.byteCount
            json +=
                "\(jsonQuoted(s.name)):{\"dtype\":\"\(s.dtype.rawValue)\",\"shape\":[\(s.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        json += "}"
        var body = Array(json.utf8)
        while (body.count + 8) % 8 != 0 { body.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + body.count)
        withUnsafeBytes(of: UInt64(body.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: body)
        return out
    }
}
