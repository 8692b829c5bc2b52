/// The validated header of a safetensors file.
///
/// Parsing enforces every rule a correct reader checks (see `docs/safetensors-rules.md`): the 8-byte length, the
/// size bound, UTF-8 JSON, known dtypes, non-negative integer shapes, no duplicate names, shape × dtype equal to
/// the byte span (overflow-checked), offsets contiguous from 0 with no gap or overlap, no trailing bytes, and a
/// string-to-string `__metadata__`. Unknown fields inside a tensor entry are accepted, as the reference reader does.
public struct SafeTensorsHeader: Sendable {
    /// Tensors in file order (ascending data offset).
    public let tensors: [TensorInfo]
    public let metadata: [String: String]
    /// N, the length of the JSON header in bytes.
    public let headerLength: Int
    /// Absolute offset of the data buffer in the file: 8 + N.
    public var dataStart: Int { 8 + headerLength }

    /// Limits a hostile header cannot push past.
    public enum Limits {
        /// The format's own bound on N.
        public static let maxHeaderLength = 100_000_000
        /// Ten times the tensors of the largest published models (~10^5, mixture-of-experts); the JSON tree of a
        /// header costs about 100 bytes per entry, so this also bounds the parser's memory.
        public static let maxTensorCount = 1_000_000
        /// Dimensions per tensor.
        public static let maxRank = 32
        /// Bytes of a `model.safetensors.index.json` (the largest published ones are under 100 KB); read whole.
        public static let maxIndexBytes = 16 << 20
    }

    /// Reads the header length from the first 8 bytes and validates it against the file size.
    ///
    /// - Returns: N, the JSON header length.
    public static func headerLength(prefix: UnsafeRawBufferPointer, fileSize: Int, file: String) throws(CheckpointError)
        -> Int
    {
        guard fileSize >= 8, prefix.count >= 8 else {
            throw CheckpointError(
                .fileTooSmall,
                "\(file): the file has \(fileSize) bytes; a safetensors file starts with an 8-byte header length.")
        }
        let n = UInt64(littleEndian: prefix.loadUnaligned(as: UInt64.self))
        guard n <= UInt64(Limits.maxHeaderLength) else {
            throw CheckpointError(
                .headerTooLarge,
                "\(file): the header length is \(n) bytes; at most \(Limits.maxHeaderLength) are allowed.")
        }
        guard Int(n) <= fileSize - 8 else {
            throw CheckpointError(
                .headerOutOfBounds,
                "\(file): the header length is \(n) bytes but only \(fileSize - 8) bytes follow the length field.")
        }
        return Int(n)
    }

    /// Parses and validates a header.
    ///
    /// - Parameters:
    ///   - json: the N bytes after the length field.
    ///   - fileSize: the whole file's size, to check that the last tensor ends exactly at the end of the file.
    ///   - file: the path, for messages.
    public static func parse(json: UnsafeRawBufferPointer, fileSize: Int, file: String) throws(CheckpointError)
        -> SafeTensorsHeader
    {
        let headerLength = json.count
        guard String(validating: json.bindMemory(to: UInt8.self), as: UTF8.self) != nil else {
            throw CheckpointError(.invalidUTF8, "\(file): the header is not valid UTF-8.")
        }
        let root: JSONValue
        do {
            root = try HeaderJSONParser.parse(json)
        } catch {
            throw CheckpointError(
                .invalidJSON, "\(file): the header is not valid JSON: \(error.reason) at byte \(8 + error.offset).")
        }
        guard case .object(let members) = root else {
            throw CheckpointError(.invalidJSON, "\(file): the header is \(root.kind); expected a JSON object.")
        }
        guard members.count <= Limits.maxTensorCount + 1 else {
            throw CheckpointError(
                .limitExceeded, "\(file): the header lists \(members.count) entries; at most \(Limits.maxTensorCount).")
        }

        var metadata: [String: String] = [:]
        var sawMetadata = false
        var seen = Set<String>(minimumCapacity: members.count)
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(members.count)
        let bufferSize = fileSize - 8 - headerLength

        for (name, value) in members {
            if name == "__metadata__" {
                guard !sawMetadata else {
                    throw CheckpointError(.duplicateTensor, "\(file): '__metadata__' appears twice in the header.")
                }
                sawMetadata = true
                metadata = try parseMetadata(value, file: file)
                continue
            }
            guard seen.insert(name).inserted else {
                throw CheckpointError(.duplicateTensor, "\(file): tensor '\(name)' appears twice in the header.")
            }
            tensors.append(try parseEntry(name: name, value: value, file: file))
        }

        // Offsets: sorted, contiguous from 0, no gap or overlap, ending exactly at the end of the file.
        tensors.sort {
            ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound) < (
                $1.dataOffsets.lowerBound, $1.dataOffsets.upperBound
            )
        }
        var expectedStart = 0
        var previous: String?
        for t in tensors {
            let begin = t.dataOffsets.lowerBound
            if begin > expectedStart {
                let after = previous.map { "after tensor '\($0)'" } ?? "at the start of the data"
                throw CheckpointError(
                    .offsetGap,
                    "\(file): tensor '\(t.name)' starts at data offset \(begin), leaving a gap of \(begin - expectedStart) bytes \(after) (expected it to start at \(expectedStart))."
                )
            }
            if begin < expectedStart {
                throw CheckpointError(
                    .offsetOverlap,
                    "\(file): tensor '\(t.name)' starts at data offset \(begin), inside tensor '\(previous ?? "?")' which ends at \(expectedStart)."
                )
            }
            expectedStart = t.dataOffsets.upperBound
            previous = t.name
        }
        if expectedStart > bufferSize {
            throw CheckpointError(
                .headerOutOfBounds,
                "\(file): tensor '\(previous ?? "?")' ends at data offset \(expectedStart) but the data buffer has only \(bufferSize) bytes (file truncated?)."
            )
        }
        if expectedStart < bufferSize {
            throw CheckpointError(
                .trailingBytes,
                "\(file): \(bufferSize - expectedStart) bytes follow the last tensor; the data buffer must end where the last tensor ends."
            )
        }
        return SafeTensorsHeader(tensors: tensors, metadata: metadata, headerLength: headerLength)
    }

    private static func parseMetadata(_ value: JSONValue, file: String) throws(CheckpointError) -> [String: String] {
        guard case .object(let pairs) = value else {
            throw CheckpointError(
                .invalidMetadata, "\(file): '__metadata__' is \(value.kind); expected an object of strings.")
        }
        var out: [String: String] = [:]
        for (k, v) in pairs {
            guard let s = v.stringValue else {
                throw CheckpointError(
                    .invalidMetadata, "\(file): metadata key '\(k)' has \(v.kind); metadata values must be strings.")
            }
            guard out.updateValue(s, forKey: k) == nil else {
                throw CheckpointError(.invalidMetadata, "\(file): metadata key '\(k)' appears twice.")
            }
        }
        return out
    }

    private static func parseEntry(name: String, value: JSONValue, file: String) throws(CheckpointError) -> TensorInfo {
        let where_ = "\(file): tensor '\(name)'"
        guard case .object(let fields) = value else {
            throw CheckpointError(.invalidEntry, "\(where_) is \(value.kind); expected {dtype, shape, data_offsets}.")
        }
        var dtypeValue: JSONValue?
        var shapeValue: JSONValue?
        var offsetsValue: JSONValue?
        for (k, v) in fields {
            switch k {
            case "dtype": dtypeValue = v
            case "shape": shapeValue = v
            case "data_offsets": offsetsValue = v
            default: continue  // accepted and ignored, like the reference reader
            }
        }
        guard let dtypeValue, let shapeValue, let offsetsValue else {
            let missing = [("dtype", dtypeValue), ("shape", shapeValue), ("data_offsets", offsetsValue)]
                .filter { $0.1 == nil }.map(\.0).joined(separator: ", ")
            throw CheckpointError(.invalidEntry, "\(where_) lacks \(missing).")
        }
        guard let dtypeName = dtypeValue.stringValue else {
            throw CheckpointError(.invalidEntry, "\(where_) has dtype \(dtypeValue.kind); expected a string.")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw CheckpointError(
                .unknownDType,
                "\(where_) has unknown dtype '\(dtypeName)'; expected one of \(DType.allCases.map(\.rawValue).joined(separator: ", "))."
            )
        }
        guard case .array(let dims) = shapeValue else {
            throw CheckpointError(
                .invalidShape, "\(where_) has shape \(shapeValue.kind); expected an array of integers.")
        }
        guard dims.count <= Limits.maxRank else {
            throw CheckpointError(
                .limitExceeded, "\(where_) has \(dims.count) dimensions; at most \(Limits.maxRank) are allowed.")
        }
        var shape: [Int] = []
        shape.reserveCapacity(dims.count)
        for d in dims {
            guard let n = d.nonNegativeInt else {
                throw CheckpointError(
                    .invalidShape, "\(where_) has shape entry \(d.kind); expected a non-negative integer.")
            }
            shape.append(n)
        }
        guard case .array(let offs) = offsetsValue, offs.count == 2,
            let begin = offs[0].nonNegativeInt, let end = offs[1].nonNegativeInt
        else {
            throw CheckpointError(
                .invalidEntry,
                "\(where_) has data_offsets \(offsetsValue.kind); expected [begin, end] as two non-negative integers.")
        }
        guard begin <= end else {
            throw CheckpointError(.invalidEntry, "\(where_) has data_offsets [\(begin), \(end)] with begin after end.")
        }
        guard let bytes = TensorInfo.byteCount(shape: shape, dtype: dtype) else {
            throw CheckpointError(
                .byteSpanMismatch,
                "\(where_): shape \(shape) of \(dtype.rawValue) overflows or is not a whole number of bytes.")
        }
        guard bytes == end - begin else {
            throw CheckpointError(
                .byteSpanMismatch,
                "\(where_): shape \(shape) of \(dtype.rawValue) needs \(bytes) bytes but data_offsets [\(begin), \(end)] span \(end - begin)."
            )
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
    }
}
