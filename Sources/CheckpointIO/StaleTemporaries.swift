import Foundation

#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Removes what killed runs left beside a target: the hidden `.NAME.tmp-PID-N` files and folders that
/// `FileOutput` and `FolderOutput` (`ModelWriter`, `LoRAAdapterFolder.Writer`) write into before their rename.
///
/// A clean exit or an error removes its own temporary; `kill -9`, a power loss or the SIGBUS guard cannot. The next
/// run that writes the same target sweeps them, but only those whose process is gone: a temporary of a live process
/// (another run writing the same target right now) is never touched. The check is `kill(pid, 0)` on this machine,
/// so a folder shared over the network with a writer on another host is out of scope.
package enum StaleTemporaries {
    /// Removes the dead processes' temporaries of `target`; returns the paths removed.
    @discardableResult
    package static func sweep(beside target: URL) -> [String] {
        let folder = target.deletingLastPathComponent()
        let prefix = ".\(target.lastPathComponent).tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix(prefix) {
            guard let pid = ownerPID(name.dropFirst(prefix.count)), !isAlive(pid) else { continue }
            let path = folder.appendingPathComponent(name).path
            if (try? FileManager.default.removeItem(atPath: path)) != nil { removed.append(path) }
        }
        return removed
    }

    /// The PID in `PID-N`, or nil when the suffix is not exactly the pattern this package writes.
    static func ownerPID(_ suffix: Substring) -> pid_t? {
        let parts = suffix.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let pid = pid_t(parts[0]), pid > 0, UInt32(parts[1]) != nil else { return nil }
        return pid
    }

    /// `kill(pid, 0)` fails with ESRCH only when no such process exists; EPERM means it exists under another user.
    static func isAlive(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 || errno != ESRCH
    }
}
