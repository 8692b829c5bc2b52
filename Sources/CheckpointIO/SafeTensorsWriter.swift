/// Streams one safetensors file: the header is written first from the plan, then each tensor in plan order as it
/// is produced. Memory stays at one tensor (or one conversion chunk); the file appears at its path only once
/// complete.
public final class SafeTensorsWriter {
    public let path: String
    public let specs: [TensorSpec]
    private let output: FileOutput
    private var next = 0
    private var scratch: UnsafeMutableRawBufferPointer?

    /// Conversion chunk for `write(floats:)`: 4 M elements keeps the buffer at 8-16 MB.
    static let chunkElements = 1 << 22

    public init(path: String, tensors: [TensorSpec], metadata: [String: String] = [:]) throws(CheckpointError) {
        var names = Set<String>()
        for t in tensors where !names.insert(t.name).inserted {
            throw CheckpointError(.duplicateTensor, "\(path): tensor '\(t.name)' is planned twice.")
        }
        self.path = path
        self.specs = tensors
        output = try FileOutput(target: path)
        let header = SafeTensorsHeader.encode(tensors, metadata: metadata)
        try output.reserve(tensors.reduce(header.count) { $0 + $1.byteCount })
        try output.write(header)
    }

    deinit { scratch?.deallocate() }

    /// fsync before the rename (default true); see `FileOutput.durable`.
    public var durable: Bool {
        get { output.durable }
        set { output.durable = newValue }
    }

    /// The tensor expected next, or nil when all are written.
    public var nextTensor: TensorSpec? { next < specs.count ? specs[next] : nil }

    private func expect(_ name: String) throws(CheckpointError) -> TensorSpec {
        guard next < specs.count else {
            throw CheckpointError(.writeOrder, "\(path): tensor '\(name)' written after all planned tensors.")
        }
        let spec = specs[next]
        guard spec.name == name else {
            throw CheckpointError(.writeOrder, "\(path): expected tensor '\(spec.name)' next, got '\(name)'.")
        }
        return spec
    }

    /// Writes the next tensor's raw bytes (already in the planned dtype).
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        let spec = try expect(name)
        guard bytes.count == spec.byteCount else {
            throw CheckpointError(
                .writeSize, "\(path): tensor '\(name)' needs \(spec.byteCount) bytes, got \(bytes.count).")
        }
        try output.write(bytes)
        next += 1
    }

    /// Writes the next tensor from `Float` values, converting to the planned dtype chunk by chunk.
    public func write(_ name: String, floats: UnsafeBufferPointer<Float>) throws(CheckpointError) {
        let spec = try expect(name)
        guard spec.dtype.isConvertibleFloat else {
            throw CheckpointError(
                .unsupportedDType,
                "\(path): tensor '\(name)' is planned as \(spec.dtype.rawValue), which is not a float type.")
        }
        guard floats.count == spec.elementCount else {
            throw CheckpointError(
                .writeSize, "\(path): tensor '\(name)' needs \(spec.elementCount) elements, got \(floats.count).")
        }
        if spec.dtype == .F32 {
            try output.write(UnsafeRawBufferPointer(floats))
        } else {
            let width = spec.dtype.bitWidth / 8
            if scratch == nil {
                scratch = .allocate(byteCount: Self.chunkElements * 8, alignment: 64)
            }
            guard let scratch else { return }
            var i = 0
            while i < floats.count {
                let n = min(Self.chunkElements, floats.count - i)
                let dst = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<(n * width)])
                DTypeConversion.fromFloat(UnsafeBufferPointer(rebasing: floats[i..<(i + n)]), to: spec.dtype, into: dst)
                try output.write(UnsafeRawBufferPointer(dst))
                i += n
            }
        }
        next += 1
    }

    public func write(_ name: String, floats: [Float]) throws(CheckpointError) {
        var failure: CheckpointError?
        floats.withUnsafeBufferPointer { b in
            do throws(CheckpointError) { try write(name, floats: b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Copies a tensor from an input unchanged (same dtype) or converted.
    public func write(_ name: String, from view: TensorView) throws(CheckpointError) {
        let spec = try expect(name)
        if view.dtype == spec.dtype {
            try write(name, bytes: view.bytes)
        } else {
            let values = try view.floats()
            try write(spec.name, floats: values)
        }
    }

    /// Checks that every planned tensor was written, then moves the file into place.
    public func finish() throws(CheckpointError) {
        guard next == specs.count else {
            throw CheckpointError(
                .writeOrder,
                "\(path): \(specs.count - next) planned tensors were not written (next: '\(specs[next].name)').")
        }
        try output.commit()
    }
}
