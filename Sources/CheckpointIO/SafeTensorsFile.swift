/// A validated, memory-mapped safetensors file.
///
/// Opening validates the whole header and touches no tensor data; `tensor(_:)` hands out views into the mapping.
public final class SafeTensorsFile: Sendable {
    public let path: String
    public let header: SafeTensorsHeader
    public let mapping: MappedFile
    private let byName: [String: Int]

    public init(path: String) throws(CheckpointError) {
        self.path = path
        let mapping = try MappedFile(path: path)
        self.mapping = mapping
        let n = try SafeTensorsHeader.headerLength(
            prefix: mapping.bytes(0..<min(8, mapping.size)), fileSize: mapping.size, file: path)
        header = try SafeTensorsHeader.parse(json: mapping.bytes(8..<(8 + n)), fileSize: mapping.size, file: path)
        var byName: [String: Int] = [:]
        byName.reserveCapacity(header.tensors.count)
        for (i, t) in header.tensors.enumerated() { byName[t.name] = i }
        self.byName = byName
    }

    public var tensors: [TensorInfo] { header.tensors }
    public var metadata: [String: String] { header.metadata }

    public func info(_ name: String) -> TensorInfo? { byName[name].map { header.tensors[$0] } }

    public func tensor(_ name: String) throws(CheckpointError) -> TensorView {
        guard let i = byName[name] else {
            throw CheckpointError(.tensorNotFound, "\(path): no tensor named '\(name)'.")
        }
        return view(header.tensors[i])
    }

    func view(_ info: TensorInfo) -> TensorView {
        let start = header.dataStart + info.dataOffsets.lowerBound
        return TensorView(info: info, file: path, mapping: mapping, fileRange: start..<(start + info.byteCount))
    }
}
