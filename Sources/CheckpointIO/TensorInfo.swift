/// One tensor's entry in a safetensors header, after validation.
public struct TensorInfo: Sendable, Hashable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range relative to the start of the data buffer (after the 8-byte length and the header).
    public let dataOffsets: Range<Int>

    public init(name: String, dtype: DType, shape: [Int], dataOffsets: Range<Int>) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.dataOffsets = dataOffsets
    }

    /// Product of the shape; 1 for a scalar, 0 for an empty tensor.
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { dataOffsets.count }

    /// `[384, 1536]` -> `"384x1536"`, `[]` -> `"scalar"`.
    public var shapeDescription: String {
        shape.isEmpty ? "scalar" : shape.map(String.init).joined(separator: "x")
    }
}

extension TensorInfo {
    /// Bytes a tensor of `shape` and `dtype` occupies, or nil when the product overflows or is not whole bytes.
    public static func byteCount(shape: [Int], dtype: DType) -> Int? {
        var elements = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            if o { return nil }
            elements = p
        }
        let (bits, o) = elements.multipliedReportingOverflow(by: dtype.bitWidth)
        guard !o, bits % 8 == 0 else { return nil }
        return bits / 8
    }
}
