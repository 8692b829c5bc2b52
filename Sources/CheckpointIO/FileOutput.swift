import CGlibcExtensions
import Foundation

#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A file being written under a temporary name; `commit()` fsyncs it and renames it into place, and an
/// uncommitted file is removed on deinit, so a crash or error never leaves a partial file at the target.
package final class FileOutput {
    package let target: String
    package let temporary: String
    private var fd: Int32
    private var committed = false
    package private(set) var written = 0
    /// Whether `commit()` fsyncs before the rename (the default). While durable, `write` also starts the disk
    /// write-back of every 64 MB written, so the final fsync waits for the tail only and the disk works while the
    /// caller computes the next bytes. Not durable: the OS writes the file back when it likes (as mergekit and
    /// `torch.save` do); the rename is still atomic, but a power loss soon after can leave an empty or torn file.
    package var durable = true
    private var writeBackFrom = 0
    static let writeBackChunk = 64 << 20

    package init(target: String) throws(CheckpointError) {
        self.target = target
        let url = URL(fileURLWithPath: target)
        StaleTemporaries.sweep(beside: url)
        temporary =
            url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            .path
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw CheckpointError(.io, "\(target): cannot create \(temporary): \(String(cString: strerror(errno))).")
        }
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !committed { unlink(temporary) }
    }

    /// Reserves the disk blocks of a file that will grow to `bytes` (`fallocate` with `FALLOC_FL_KEEP_SIZE`, so the
    /// size still grows only as bytes are written). A disk too small fails here, before any work, naming the target;
    /// and reserved blocks spare ext4 its per-page delayed allocation (0.8 GB into a fresh file: 0.16 s → 0.10 s).
    /// A file system without `fallocate` just skips it.
    package func reserve(_ bytes: Int) throws(CheckpointError) {
        #if os(Linux)
            guard bytes > 0 else { return }
            var e: Int32
            repeat { e = tsw_reserve_blocks(fd, Int64(bytes)) } while e == EINTR
            guard e == ENOSPC || e == EFBIG || e == EDQUOT else { return }
            throw CheckpointError(
                .io,
                "\(target): cannot reserve \(bytes) bytes for the output: \(String(cString: strerror(e))) (the disk is full or a file size limit was reached); nothing was written to the target."
            )
        #endif
    }

    /// Appends bytes, retrying short writes; a full disk is an error naming the target.
    package func write(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(fd, p, min(left, 1 << 30))
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                let full =
                    e == ENOSPC || e == EFBIG || e == EDQUOT
                    ? " (the disk is full or a file size limit was reached)" : ""
                throw CheckpointError(
                    .io,
                    "\(target): write failed after \(written) bytes: \(String(cString: strerror(e)))\(full); nothing was written to the target."
                )
            }
            p += n
            left -= n
            written += n
        }
        #if os(Linux)
            if durable, written - writeBackFrom >= Self.writeBackChunk {
                // POSIX_FADV_DONTNEED starts asynchronous write-back of the dirty range (WB_SYNC_NONE); pages still
                // dirty or under write-back stay cached, so the output remains readable from memory.
                _ = posix_fadvise(fd, off_t(writeBackFrom), off_t(written - writeBackFrom), POSIX_FADV_DONTNEED)
                writeBackFrom = written
            }
        #endif
    }

    package func write(_ bytes: [UInt8]) throws(CheckpointError) {
        var failure: CheckpointError?
        bytes.withUnsafeBytes { b in
            do throws(CheckpointError) { try write(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Flushes to disk and renames over the target.
    package func commit() throws(CheckpointError) {
        try MappedFile.checkInputsUnchanged(output: target)
        guard !durable || fsync(fd) == 0 else {
            throw CheckpointError(.io, "\(target): fsync failed: \(String(cString: strerror(errno))).")
        }
        close(fd)
        fd = -1
        guard rename(temporary, target) == 0 else {
            throw CheckpointError(
                .io, "\(target): cannot rename the finished file into place: \(String(cString: strerror(errno))).")
        }
        committed = true
    }
}
