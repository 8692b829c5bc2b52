/// One tensor's entry in a GGUF file, after validation.
public struct GGUFTensorInfo: Sendable, Hashable {
    public let name: String
    public let type: GGMLType
    /// The file's dimensions, innermost (contiguous) first: ggml's `ne`.
    public let dims: [Int]
    /// Byte offset relative to the start of the data section.
    public let offset: Int
    public let byteCount: Int

    public init(name: String, type: GGMLType, dims: [Int], offset: Int, byteCount: Int) {
        self.name = name
        self.type = type
        self.dims = dims
        self.offset = offset
        self.byteCount = byteCount
    }

    /// Row-major shape, outermost first, as PyTorch, numpy and safetensors spell it: `dims` reversed.
    public var shape: [Int] { dims.reversed() }

    /// Product of the dimensions; 1 for a scalar.
    public var elementCount: Int { dims.reduce(1, *) }

    /// Byte range relative to the data section.
    public var dataRange: Range<Int> { offset..<(offset + byteCount) }

    /// `[576, 49152]` -> `"49152x576"` (row-major, like `TensorInfo.shapeDescription`).
    public var shapeDescription: String {
        dims.isEmpty ? "scalar" : shape.map(String.init).joined(separator: "x")
    }
}
