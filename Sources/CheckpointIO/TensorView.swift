/// A tensor's bytes inside a mapped file, with conversion to `Float`.
///
/// The view keeps its mapping alive. Nothing is copied until a conversion is asked for.
public struct TensorView: @unchecked Sendable {
    // The mapping is read-only and retained by the view.
    public let info: TensorInfo
    public let file: String
    public let mapping: MappedFile
    public let fileRange: Range<Int>

    public var name: String { info.name }
    public var dtype: DType { info.dtype }
    public var shape: [Int] { info.shape }
    public var elementCount: Int { info.elementCount }

    /// The raw little-endian bytes.
    public var bytes: UnsafeRawBufferPointer { mapping.bytes(fileRange) }

    /// Converts every element to `Float` into `destination` (F32, F16, BF16, F64), on all cores for large tensors.
    public func copyFloats(into destination: UnsafeMutableBufferPointer<Float>) throws(CheckpointError) {
        guard dtype.isConvertibleFloat else {
            throw CheckpointError(
                .unsupportedDType, "\(file): tensor '\(name)' is \(dtype.rawValue); expected F32, F16, BF16 or F64.")
        }
        precondition(destination.count == elementCount, "destination has the wrong element count")
        DTypeConversion.toFloat(bytes, dtype: dtype, into: destination)
    }

    /// A fresh array of the tensor's elements as `Float`.
    public func floats() throws(CheckpointError) -> [Float] {
        guard dtype.isConvertibleFloat else {
            throw CheckpointError(
                .unsupportedDType, "\(file): tensor '\(name)' is \(dtype.rawValue); expected F32, F16, BF16 or F64.")
        }
        return [Float](unsafeUninitializedCapacity: elementCount) { buf, count in
            DTypeConversion.toFloat(bytes, dtype: dtype, into: buf)
            count = elementCount
        }
    }

    /// Drops the tensor's pages from the resident set after use (see `MappedFile.release`).
    public func release() { mapping.release(fileRange) }
}
