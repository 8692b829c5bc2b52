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

    /// Whether the bytes go to the disk with `O_DIRECT` (through `staging`) instead of through the page cache: for a
    /// durable file asked for with `direct`. Durable bytes must reach the disk anyway; buffered, each also needs a
    /// fresh page-cache page first, which on this project's VM costs more than the copy into it (docs/bench-merge.md),
    /// and the final fsync waits for all of the write-back. Not durable, the page cache is faster (the caller does
    /// not wait for the disk), so such a file leaves the staging path at its first write after `durable` is cleared.
    package private(set) var direct = false
    /// The bytes not yet written while direct output is possible: everything before them went out in whole
    /// `stagingBytes` writes, so every direct write starts at an aligned offset. nil once buffered.
    private var staging: UnsafeMutableRawBufferPointer?
    private var staged = 0
    private var directRefused = false
    static let directBlock = 4096
    /// Glibc declares O_DIRECT only under _GNU_SOURCE, which Swift's Glibc module does not see.
    #if arch(x86_64)
        static let oDirect: Int32 = 0o40000
    #elseif arch(arm64)
        static let oDirect: Int32 = 0o200000
    #else
        static let oDirect: Int32 = 0
    #endif
    static let stagingBytes = 8 << 20

    /// - Parameter direct: while `durable`, write with `O_DIRECT` where the file system takes it (else buffered,
    ///   silently; `TSWITCH_DIRECT_IO=0` forces buffered).
    package init(target: String, direct: Bool = false) throws(CheckpointError) {
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
        if direct, Self.oDirect != 0, ProcessInfo.processInfo.environment["TSWITCH_DIRECT_IO"] != "0" {
            // O_DIRECT itself is set at the first full staging buffer, once the caller has chosen `durable`.
            staging = .allocate(byteCount: Self.stagingBytes, alignment: Self.directBlock)
        }
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !committed { unlink(temporary) }
        staging?.deallocate()
    }

    /// Appends bytes, retrying short writes; a full disk is an error naming the target.
    package func write(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        if staging != nil, !durable, !direct { try leaveStaging() }
        if let staging {
            // Copied into the aligned staging buffer, written out whenever it is full.
            var from = 0
            while from < bytes.count {
                let n = min(bytes.count - from, staging.count - staged)
                UnsafeMutableRawBufferPointer(rebasing: staging[staged..<(staged + n)]).copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: bytes[from..<(from + n)]))
                staged += n
                from += n
                written += n
                if staged == staging.count { try flushStaging() }
            }
            return
        }
        try writeAll(bytes)
        #if os(Linux)
            if durable, written - writeBackFrom >= Self.writeBackChunk {
                // POSIX_FADV_DONTNEED starts asynchronous write-back of the dirty range (WB_SYNC_NONE); pages still
                // dirty or under write-back stay cached, so the output remains readable from memory.
                _ = posix_fadvise(fd, off_t(writeBackFrom), off_t(written - writeBackFrom), POSIX_FADV_DONTNEED)
                writeBackFrom = written
            }
        #endif
    }

    /// Writes the staged bytes, padded with zeros to a whole block (only the last flush pads; `commit` truncates
    /// the padding off).
    private func flushStaging() throws(CheckpointError) {
        guard let staging, staged > 0 else { return }
        #if os(Linux)
            if !direct, !directRefused {
                let flags = fcntl(fd, F_GETFL)
                if flags >= 0, fcntl(fd, F_SETFL, flags | Self.oDirect) == 0 {
                    direct = true
                } else {
                    directRefused = true
                }
            }
        #endif
        let padded = (staged + Self.directBlock - 1) / Self.directBlock * Self.directBlock
        if padded > staged, let p = staging.baseAddress { memset(p + staged, 0, padded - staged) }
        try writeAll(UnsafeRawBufferPointer(rebasing: staging[0..<padded]), counting: false)
        staged = 0
    }

    /// Writes what is staged as it is (buffered) and drops the staging buffer: the rest of the file is buffered.
    private func leaveStaging() throws(CheckpointError) {
        guard let staging else { return }
        try writeAll(UnsafeRawBufferPointer(rebasing: staging[0..<staged]), counting: false)
        staging.deallocate()
        self.staging = nil
        staged = 0
    }

    /// write(2) until done, retrying short writes and EINTR; `counting` adds to `written`.
    private func writeAll(_ bytes: UnsafeRawBufferPointer, counting: Bool = true) throws(CheckpointError) {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(fd, p, min(left, 1 << 30))
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                #if os(Linux)
                    // A file system that took O_DIRECT but refuses this write: the rest goes buffered.
                    if e == EINVAL, direct, !directRefused, fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~Self.oDirect) == 0
                    {
                        directRefused = true
                        direct = false
                        continue
                    }
                #endif
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
            if counting { written += n }
        }
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
        if staging != nil, !durable, !direct { try leaveStaging() }
        if staging != nil {
            try flushStaging()
            guard ftruncate(fd, off_t(written)) == 0 else {
                throw CheckpointError(
                    .io, "\(target): cannot truncate to \(written) bytes: \(String(cString: strerror(errno))).")
            }
        }
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
