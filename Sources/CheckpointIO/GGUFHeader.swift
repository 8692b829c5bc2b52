/// The validated header of a GGUF file (llama.cpp's format, versions 2 and 3, little-endian).
///
/// Parsing checks what llama.cpp's loader checks, and bounds what a hostile file can make us allocate: the
/// magic and version; counts, string lengths, array lengths and nesting depth under `Limits` and never more than
/// the bytes left could hold; UTF-8 keys and strings; no key or tensor name twice; `general.alignment` a u32
/// power of two; at most 4 dimensions, each row a whole number of blocks of the tensor's type, sizes
/// overflow-checked; offsets aligned and laid out as llama.cpp requires (each tensor where the previous one
/// ends, padded to the alignment); the last tensor inside the file and nothing but padding after it.
/// See docs/gguf.md.
public struct GGUFHeader: Sendable {
    public let version: Int
    /// Key-values in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    /// Tensors in file order (ascending offset).
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute offset of the data section: the end of the tensor infos, padded to `alignment`.
    public let dataStart: Int

    /// Limits a hostile header cannot push past.
    public enum Limits {
        /// Ten times the tensors of the largest published models, as for safetensors.
        public static let maxTensorCount = 1_000_000
        public static let maxKeyValueCount = 1_000_000
        /// Chat templates are a few KB; 64 MiB leaves room for anything a tokenizer stores as one string.
        public static let maxStringLength = 64 << 20
        /// Vocabularies and merge lists reach ~10^6 entries; 16 Mi elements per array.
        public static let maxArrayLength = 16 << 20
        /// Arrays of arrays, as `gguf.GGUFReader` reads them; llama.cpp itself writes none.
        public static let maxNestingDepth = 4
        /// ggml's `GGML_MAX_DIMS`.
        public static let maxRank = 4
        /// ggml's `GGML_MAX_NAME` (64) less the terminating NUL.
        public static let maxTensorNameLength = 63
    }

    public static let magic: UInt32 = 0x4655_4747  // "GGUF" read as a little-endian u32
    public static let defaultAlignment = 32

    public func value(_ key: String) -> GGUFValue? { metadata.first { $0.key == key }?.value }

    /// Parses and validates the header of `bytes`, the whole file.
    public static func parse(_ bytes: UnsafeRawBufferPointer, file: String) throws(CheckpointError) -> GGUFHeader {
        guard bytes.count >= 24 else {
            if bytes.count >= 4, bytes.loadUnaligned(as: UInt32.self) != magic {
                throw notGGUF(bytes, file: file)
            }
            throw CheckpointError(
                .fileTooSmall,
                "\(file): the file has \(bytes.count) bytes; a GGUF file starts with a 24-byte header (magic, version, tensor and key-value counts)."
            )
        }
        guard bytes.loadUnaligned(as: UInt32.self) == magic else { throw notGGUF(bytes, file: file) }
        var r = GGUFByteReader(bytes: bytes, file: file, position: 4)
        let version = try r.u32("the version")
        guard version == 2 || version == 3 else {
            let hint =
                version == 1
                ? " (version 1 used 32-bit counts and is obsolete)"
                : version.byteSwapped == 2 || version.byteSwapped == 3
                    ? " (a big-endian file; only little-endian is read)" : ""
            throw CheckpointError(
                .unsupportedVersion, "\(file): GGUF version \(version)\(hint); expected version 2 or 3.")
        }
        let tensorCount = try r.u64("the tensor count")
        let kvCount = try r.u64("the key-value count")
        guard tensorCount <= UInt64(Limits.maxTensorCount) else {
            throw CheckpointError(
                .limitExceeded,
                "\(file): the header declares \(tensorCount) tensors; at most \(Limits.maxTensorCount) are allowed.")
        }
        guard kvCount <= UInt64(Limits.maxKeyValueCount) else {
            throw CheckpointError(
                .limitExceeded,
                "\(file): the header declares \(kvCount) metadata key-values; at most \(Limits.maxKeyValueCount) are allowed."
            )
        }

        var metadata: [(key: String, value: GGUFValue)] = []
        metadata.reserveCapacity(min(Int(kvCount), r.remaining / 13))
        var keys = Set<String>()
        var alignment = defaultAlignment
        for i in 0..<Int(kvCount) {
            let key = try r.string("the key of metadata entry #\(i)")
            guard !key.isEmpty else {
                throw CheckpointError(.invalidMetadata, "\(file): metadata entry #\(i) has an empty key.")
            }
            guard keys.insert(key).inserted else {
                throw CheckpointError(.invalidMetadata, "\(file): metadata key '\(key)' appears twice.")
            }
            let value = try r.value(
                of: try r.valueType("metadata key '\(key)'"), context: "metadata key '\(key)'", depth: 0)
            if key == "general.alignment" {
                guard case .uint32(let a) = value else {
                    throw CheckpointError(
                        .invalidMetadata,
                        "\(file): metadata key 'general.alignment' is \(value.type.name); expected UINT32.")
                }
                guard a != 0, a & (a - 1) == 0 else {
                    throw CheckpointError(
                        .misalignedOffset,
                        "\(file): metadata key 'general.alignment' is \(a); expected a power of two (the default is \(defaultAlignment))."
                    )
                }
                alignment = Int(a)
            }
            metadata.append((key, value))
        }

        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(min(Int(tensorCount), r.remaining / 24))
        var names = Set<String>()
        var expectedOffset = 0
        for i in 0..<Int(tensorCount) {
            let name = try r.string("the name of tensor #\(i)")
            let at = "\(file): tensor '\(name)'"
            guard !name.isEmpty else {
                throw CheckpointError(.invalidEntry, "\(file): tensor #\(i) has an empty name.")
            }
            guard name.utf8.count <= Limits.maxTensorNameLength else {
                throw CheckpointError(
                    .limitExceeded,
                    "\(at) has a name of \(name.utf8.count) bytes; ggml allows at most \(Limits.maxTensorNameLength).")
            }
            guard names.insert(name).inserted else {
                throw CheckpointError(.duplicateTensor, "\(at) appears twice in the tensor infos.")
            }
            let rank = try r.u32("the dimension count of tensor '\(name)'")
            guard rank <= UInt32(Limits.maxRank) else {
                throw CheckpointError(
                    .limitExceeded, "\(at) has \(rank) dimensions; ggml allows at most \(Limits.maxRank).")
            }
            var dims: [Int] = []
            for d in 0..<Int(rank) {
                let n = try r.u64("dimension \(d) of tensor '\(name)'")
                guard n <= UInt64(Int64.max) else {
                    throw CheckpointError(
                        .invalidShape, "\(at) has dimension \(d) of \(n); expected at most \(Int64.max).")
                }
                dims.append(Int(n))
            }
            let code = try r.u32("the type of tensor '\(name)'")
            guard let type = GGMLType(rawValue: code) else {
                throw CheckpointError(
                    .unknownDType,
                    "\(at) has ggml type code \(code), which is not a type ggml defines (or one it removed).")
            }
            let offset = try r.u64("the data offset of tensor '\(name)'")
            guard let bytes = GGMLType.byteCount(dims: dims, type: type) else {
                let row = dims.first ?? 1
                if row % type.blockSize != 0 {
                    throw CheckpointError(
                        .invalidShape,
                        "\(at) has rows of \(row) elements, not a whole number of \(type.name) blocks of \(type.blockSize)."
                    )
                }
                throw CheckpointError(
                    .byteSpanMismatch, "\(at): \(dims.count)-dimensional shape \(dims) of \(type.name) overflows.")
            }
            guard offset % UInt64(alignment) == 0 else {
                throw CheckpointError(
                    .misalignedOffset,
                    "\(at) starts at data offset \(offset), not a multiple of the alignment \(alignment).")
            }
            if offset > UInt64(expectedOffset) {
                throw CheckpointError(
                    .offsetGap,
                    "\(at) starts at data offset \(offset), leaving a gap after \(tensors.last.map { "tensor '\($0.name)'" } ?? "the start of the data") (expected \(expectedOffset): tensors follow each other, padded to \(alignment) bytes)."
                )
            }
            if offset < UInt64(expectedOffset) {
                throw CheckpointError(
                    .offsetOverlap,
                    "\(at) starts at data offset \(offset), inside \(tensors.last.map { "tensor '\($0.name)'" } ?? "?") which ends at \(expectedOffset) with padding."
                )
            }
            let info = GGUFTensorInfo(name: name, type: type, dims: dims, offset: Int(offset), byteCount: bytes)
            guard let next = paddedEnd(Int(offset), bytes, alignment) else {
                throw CheckpointError(.byteSpanMismatch, "\(at): offset \(offset) plus \(bytes) bytes overflows.")
            }
            expectedOffset = next
            tensors.append(info)
        }

        let headerEnd = r.position
        guard let dataStart = paddedEnd(headerEnd, 0, alignment) else {
            throw CheckpointError(.misalignedOffset, "\(file): the alignment \(alignment) overflows the data start.")
        }
        if let last = tensors.last {
            let (end, o) = dataStart.addingReportingOverflow(last.offset + last.byteCount)
            guard !o, end <= bytes.count else {
                throw CheckpointError(
                    .headerOutOfBounds,
                    "\(file): tensor '\(last.name)' ends at byte \(o ? "past \(Int.max)" : String(end)) but the file has only \(bytes.count) bytes (file truncated?)."
                )
            }
            let allowed = dataStart + expectedOffset
            if bytes.count > allowed {
                throw CheckpointError(
                    .trailingBytes,
                    "\(file): \(bytes.count - allowed) bytes follow the last tensor '\(last.name)' and its padding; the file must end there."
                )
            }
        } else if bytes.count > dataStart {
            throw CheckpointError(
                .trailingBytes,
                "\(file): the file has no tensors but \(bytes.count - dataStart) bytes follow the header and its padding."
            )
        }
        return GGUFHeader(
            version: Int(version), metadata: metadata, tensors: tensors, alignment: alignment, dataStart: dataStart)
    }

    /// `start + count` rounded up to `alignment`, or nil on overflow.
    static func paddedEnd(_ start: Int, _ count: Int, _ alignment: Int) -> Int? {
        let (end, o1) = start.addingReportingOverflow(count)
        let (up, o2) = end.addingReportingOverflow(alignment - 1)
        guard !o1, !o2 else { return nil }
        return up / alignment * alignment
    }

    private static func notGGUF(_ bytes: UnsafeRawBufferPointer, file: String) -> CheckpointError {
        let head = bytes.prefix(4).map { (32..<127).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
        return CheckpointError(
            .notGGUF, "\(file): the file starts with '\(head)'; a GGUF file starts with the magic 'GGUF'.")
    }
}
