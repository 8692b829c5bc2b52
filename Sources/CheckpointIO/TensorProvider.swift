/// One tensor as a format-neutral reader lists it: what `inspect` prints and `diff` compares.
public struct TensorEntry: Sendable, Hashable {
    public let name: String
    /// The stored type as its format spells it: a safetensors dtype (`BF16`) or a ggml type (`Q4_K`).
    public let typeName: String
    /// Row-major, outermost first.
    public let shape: [Int]
    public let byteCount: Int
    /// Whether `copyFloats` converts it (float dtypes; the ggml types `GGMLDequantize` handles).
    public let isFloat: Bool

    public var elementCount: Int { shape.reduce(1, *) }
    public var shapeDescription: String { shape.isEmpty ? "scalar" : shape.map(String.init).joined(separator: "x") }
}

/// The seam between the commands that only read tensors (`inspect`, `diff`) and the checkpoint formats: a
/// safetensors model (`ModelFolder`) and a GGUF file (`GGUFFile`) both provide named tensors as f32.
public protocol TensorProvider: Sendable {
    /// The path the user gave.
    var path: String { get }
    /// Tensor names in storage order.
    var tensorNames: [String] { get }
    /// Every tensor, in storage order.
    var tensorEntries: [TensorEntry] { get }
    func entry(_ name: String) -> TensorEntry?
    /// Converts the tensor to f32 into `destination` (exactly `elementCount` long); throws `.unsupportedDType`
    /// for integer and unsupported quantized types.
    func copyFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws(CheckpointError)
    /// The stored bytes, valid while the provider lives.
    func rawBytes(_ name: String) throws(CheckpointError) -> UnsafeRawBufferPointer
    /// Drops a tensor's mapped pages once it has been consumed.
    func release(_ name: String)
    /// Key-value metadata, printable: safetensors' `__metadata__` strings, GGUF's key-values summarized.
    var metadataSummary: [String: String] { get }
    /// The files read (shards, or the one GGUF file).
    var filePaths: [String] { get }
}

/// Opens `path` as whatever it is: a GGUF file when it starts with the GGUF magic, otherwise a safetensors file
/// or model folder.
public func openTensorProvider(path: String) throws(CheckpointError) -> any TensorProvider {
    if GGUFFile.hasMagic(path: path) { return try GGUFFile(path: path) }
    return try ModelFolder(path: path)
}

extension ModelFolder: TensorProvider {
    public var tensorEntries: [TensorEntry] { tensorInfos.map(Self.entry) }

    public func entry(_ name: String) -> TensorEntry? { info(name).map(Self.entry) }

    private static func entry(_ t: TensorInfo) -> TensorEntry {
        TensorEntry(
            name: t.name, typeName: t.dtype.rawValue, shape: t.shape, byteCount: t.byteCount,
            isFloat: t.dtype.isConvertibleFloat)
    }

    public func copyFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws(CheckpointError)
    {
        try tensor(name).copyFloats(into: destination)
    }

    public func rawBytes(_ name: String) throws(CheckpointError) -> UnsafeRawBufferPointer { try tensor(name).bytes }

    public func release(_ name: String) { (try? tensor(name))?.release() }

    public var metadataSummary: [String: String] { files.first?.metadata ?? [:] }

    public var filePaths: [String] { gguf != nil ? [path] : files.map(\.path) }
}

extension GGUFFile: TensorProvider {
    public var tensorNames: [String] { tensors.map(\.name) }

    public var tensorEntries: [TensorEntry] { tensors.map(Self.entry) }

    public func entry(_ name: String) -> TensorEntry? { info(name).map(Self.entry) }

    private static func entry(_ t: GGUFTensorInfo) -> TensorEntry {
        TensorEntry(
            name: t.name, typeName: t.type.name, shape: t.shape, byteCount: t.byteCount,
            isFloat: t.type.isDequantizable)
    }

    public func copyFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws(CheckpointError)
    {
        try tensor(name).copyFloats(into: destination)
    }

    public func rawBytes(_ name: String) throws(CheckpointError) -> UnsafeRawBufferPointer { try tensor(name).bytes }

    public func release(_ name: String) { (try? tensor(name))?.release() }

    /// Arrays (the vocabulary, merges) are summarized as type and length, long strings (the chat template) cut.
    public var metadataSummary: [String: String] {
        Dictionary(header.metadata.map { ($0.key, $0.value.summary()) }, uniquingKeysWith: { a, _ in a })
    }

    public var filePaths: [String] { [path] }
}
