import CMappedFileGuard

#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

#if _endian(big)
    #error("TaskSwitch reads little-endian tensor data in place and supports little-endian hosts only.")
#endif

/// A read-only memory mapping of a whole file.
///
/// Mapping costs nothing until pages are touched, so opening a 4 GB checkpoint reads only its header.
/// `Data(contentsOf:options: .mappedIfSafe)` reads the whole file on Linux, hence the direct `mmap`.
public final class MappedFile: @unchecked Sendable {
    // Immutable after init; the mapping is read-only, so sharing across threads is safe.
    public let path: String
    public let size: Int
    private let base: UnsafeRawPointer?
    /// Slot in the SIGBUS guard's table (CMappedFileGuard), -1 when unguarded.
    private let guardSlot: Int32
    /// Anonymous memory filled in this process (a dequantized GGUF tensor), not a file: `release` keeps its pages,
    /// which have no file to be read back from; they go with the object.
    private let isAnonymous: Bool

    public init(path: String) throws(CheckpointError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        isAnonymous = false
        guard fd >= 0 else {
            throw CheckpointError(.io, "\(path): cannot open: \(String(cString: strerror(errno))).")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw CheckpointError(.io, "\(path): cannot stat: \(String(cString: strerror(errno))).")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw CheckpointError(.io, "\(path): not a regular file.")
        }
        size = Int(st.st_size)
        if size == 0 {
            base = nil
            guardSlot = tsw_guard_register(nil, 0, path, fd)
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw CheckpointError(.io, "\(path): cannot map \(size) bytes: \(String(cString: strerror(errno))).")
        }
        base = UnsafeRawPointer(p)
        guardSlot = tsw_guard_register(p, size, path, fd)
    }

    /// `byteCount` bytes of fresh anonymous memory that `fill` writes once; read-only afterwards. `path` names
    /// what the bytes came from, for messages. Used to present computed tensors as if they were mapped.
    public init(
        anonymous byteCount: Int, path: String, fill: (UnsafeMutableRawBufferPointer) throws(CheckpointError) -> Void
    ) throws(CheckpointError) {
        self.path = path
        size = byteCount
        isAnonymous = true
        guardSlot = -1
        if byteCount == 0 {
            base = nil
            return
        }
        let p = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else {
            throw CheckpointError(
                .io, "\(path): cannot allocate \(byteCount) bytes: \(String(cString: strerror(errno))).")
        }
        do {
            try fill(UnsafeMutableRawBufferPointer(start: p, count: byteCount))
        } catch {
            munmap(p, byteCount)
            throw error
        }
        _ = mprotect(p, byteCount, PROT_READ)
        base = UnsafeRawPointer(p)
    }

    deinit {
        tsw_guard_unregister(guardSlot)
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    /// Refuses to commit `output` when any file mapped now was modified, truncated or replaced since it was opened
    /// (its device, inode, size or modification time differ): the output could mix old and new contents.
    /// Called by `FileOutput.commit()` and `FolderOutput.commit(_:)` just before the rename.
    public static func checkInputsUnchanged(output: String) throws(CheckpointError) {
        let slot = tsw_guard_changed_input()
        guard slot >= 0 else { return }
        let input = String(cString: tsw_guard_path(slot))
        throw CheckpointError(
            .inputChanged,
            "\(input) changed while it was being read (its size, modification time or inode differ from when it was opened); \(output) was not written. Run the command again once the file is complete."
        )
    }

    /// The bytes of `range`; valid while this object lives.
    public func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= size, "range outside the mapping")
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }

    /// Tells the kernel a range will be read soon (sequential read-ahead).
    public func willNeed(_ range: Range<Int>) { advise(range, MADV_WILLNEED) }

    /// Drops a range's pages from this process's resident set once it has been consumed, so streaming a model
    /// through the mapping keeps RSS at the size of the tensors in flight. The page cache keeps the data.
    public func release(_ range: Range<Int>) {
        if !isAnonymous { advise(range, MADV_DONTNEED) }
    }

    private func advise(_ range: Range<Int>, _ advice: Int32) {
        guard let base, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        let end = min(size, range.upperBound)
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, advice)
    }
}
