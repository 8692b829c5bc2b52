import CheckpointIO
import Foundation

/// A folder written under a hidden temporary name beside its target and renamed into place by `finish()`
/// (an existing target is moved aside first and removed after), as `ModelWriter` does for model folders.
final class AdapterFolderWriter {
    let target: URL
    let temporary: URL
    private var finished = false

    init(target path: String, overwrite: Bool) throws(CheckpointError) {
        target = URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
        let fm = FileManager.default
        if fm.fileExists(atPath: target.path), !overwrite {
            throw CheckpointError(.outputExists, "\(target.path): already exists.")
        }
        _ = StaleTemporaries.sweep(beside: target)
        temporary = target.deletingLastPathComponent()
            .appendingPathComponent(".\(target.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try fm.createDirectory(at: temporary, withIntermediateDirectories: false)
        } catch {
            throw CheckpointError(
                .io, "\(target.path): cannot create the output folder: \(error.localizedDescription).")
        }
    }

    deinit { if !finished { try? FileManager.default.removeItem(at: temporary) } }

    func add(_ name: String, _ contents: Data) throws(CheckpointError) {
        do { try contents.write(to: temporary.appendingPathComponent(name)) } catch {
            throw CheckpointError(.io, "\(target.path): cannot write \(name): \(error.localizedDescription).")
        }
    }

    func finish() throws(CheckpointError) {
        try MappedFile.checkInputsUnchanged(output: target.path)
        let fm = FileManager.default
        var old: URL?
        if fm.fileExists(atPath: target.path) {
            let o = target.deletingLastPathComponent().appendingPathComponent(
                ".\(target.lastPathComponent).old-\(getpid())")
            do { try fm.moveItem(at: target, to: o) } catch {
                throw CheckpointError(
                    .io, "\(target.path): cannot move the existing folder aside: \(error.localizedDescription).")
            }
            old = o
        }
        do { try fm.moveItem(at: temporary, to: target) } catch {
            if let old { try? fm.moveItem(at: old, to: target) }
            throw CheckpointError(
                .io, "\(target.path): cannot move the adapter into place: \(error.localizedDescription).")
        }
        finished = true
        if let old { try? fm.removeItem(at: old) }
    }
}
