/// A validated, memory-mapped GGUF file.
///
/// Opening parses and validates the header and touches no tensor data; `tensor(_:)` hands out views into the
/// mapping, and `floats(into:)` on a view dequantizes to f32.
public final class GGUFFile: Sendable {
    public let path: String
    public let header: GGUFHeader
    public let mapping: MappedFile
    private let byName: [String: Int]

    public init(path: String) throws(CheckpointError) {
        self.path = path
        let mapping = try MappedFile(path: path)
        self.mapping = mapping
        header = try GGUFHeader.parse(mapping.bytes(0..<mapping.size), file: path)
        var byName: [String: Int] = [:]
        byName.reserveCapacity(header.tensors.count)
        for (i, t) in header.tensors.enumerated() { byName[t.name] = i }
        self.byName = byName
    }

    /// Whether the file starts with the GGUF magic (how `.gguf` inputs are told from safetensors ones).
    public static func hasMagic(path: String) -> Bool {
        guard let m = try? MappedFile(path: path), m.size >= 4 else { return false }
        return m.bytes(0..<4).loadUnaligned(as: UInt32.self) == GGUFHeader.magic
    }

    public var tensors: [GGUFTensorInfo] { header.tensors }

    public func info(_ name: String) -> GGUFTensorInfo? { byName[name].map { header.tensors[$0] } }

    public func tensor(_ name: String) throws(CheckpointError) -> GGUFTensorView {
        guard let i = byName[name] else {
            throw CheckpointError(.tensorNotFound, "\(path): no tensor named '\(name)'.")
        }
        let info = header.tensors[i]
        let start = header.dataStart + info.offset
        return GGUFTensorView(info: info, file: path, mapping: mapping, fileRange: start..<(start + info.byteCount))
    }
}

/// A GGUF tensor's bytes inside the mapping, with dequantization to f32. Keeps its mapping alive.
public struct GGUFTensorView: @unchecked Sendable {
    // The mapping is read-only and retained by the view.
    public let info: GGUFTensorInfo
    public let file: String
    public let mapping: MappedFile
    public let fileRange: Range<Int>

    public var name: String { info.name }
    public var type: GGMLType { info.type }
    public var elementCount: Int { info.elementCount }

    /// The raw blocks, as stored.
    public var bytes: UnsafeRawBufferPointer { mapping.bytes(fileRange) }

    /// Dequantizes every element into `destination` (row-major), on all cores for large tensors.
    public func copyFloats(into destination: UnsafeMutableBufferPointer<Float>) throws(CheckpointError) {
        guard type.isDequantizable else { throw unsupported() }
        precondition(destination.count == elementCount, "destination has the wrong element count")
        GGMLDequantize.toFloat(bytes, type: type, into: destination)
    }

    /// A fresh array of the dequantized elements.
    public func floats() throws(CheckpointError) -> [Float] {
        guard type.isDequantizable else { throw unsupported() }
        return [Float](unsafeUninitializedCapacity: elementCount) { buf, count in
            GGMLDequantize.toFloat(bytes, type: type, into: buf)
            count = elementCount
        }
    }

    /// Drops the tensor's pages from the resident set after use (see `MappedFile.release`).
    public func release() { mapping.release(fileRange) }

    private func unsupported() -> CheckpointError {
        let known = GGMLType.allCases.filter(\.isDequantizable).map(\.name).joined(separator: ", ")
        return CheckpointError(
            .unsupportedDType,
            "\(file): tensor '\(name)' is \(type.name), which is not dequantized; expected one of \(known).")
    }
}
