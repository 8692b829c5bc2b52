import Foundation

/// A folder being written under a hidden temporary name beside its target; `commit(_:)` moves it into place
/// (an existing target is moved aside first and removed after), and an uncommitted temporary folder is removed on
/// deinit, so an error or an abandoned writer never leaves a partial folder at the target. A killed process's
/// temporary is swept by the next run writing the same target (`StaleTemporaries`).
///
/// The one swap-into-place routine of the folder writers (`ModelWriter`, `LoRAAdapterFolder.Writer`); single
/// files go through `FileOutput`, whose `rename(2)` replaces the target in one step.
package final class FolderOutput {
    package let target: URL
    package let temporary: URL
    private var committed = false

    /// Checks the target, without touching the disk: nothing exists there yet, or `overwrite` is set (the target
    /// is then replaced as a whole by `commit(_:)`). Call `create()` before adding files.
    ///
    /// - Throws: `.outputExists` naming the target.
    package init(target path: String, overwrite: Bool) throws(CheckpointError) {
        target = URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
        if FileManager.default.fileExists(atPath: target.path), !overwrite {
            throw CheckpointError(.outputExists, "\(target.path): already exists.")
        }
        temporary = target.deletingLastPathComponent()
            .appendingPathComponent(".\(target.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    }

    deinit {
        if !committed { try? FileManager.default.removeItem(at: temporary) }
    }

    /// Sweeps dead runs' temporaries of the target and creates the temporary folder (and the target's parent).
    ///
    /// - Throws: `.io` naming the target.
    package func create() throws(CheckpointError) {
        StaleTemporaries.sweep(beside: target)
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try fm.createDirectory(at: temporary, withIntermediateDirectories: false)
        } catch {
            throw CheckpointError(
                .io, "\(target.path): cannot create the output folder: \(error.localizedDescription).")
        }
    }

    /// The path of file `name` inside the temporary folder.
    package func path(of name: String) -> String { temporary.appendingPathComponent(name).path }

    /// Writes file `name` into the temporary folder.
    ///
    /// - Throws: `.io` naming the target and the file.
    package func add(_ name: String, contents: Data) throws(CheckpointError) {
        do {
            try contents.write(to: temporary.appendingPathComponent(name))
        } catch {
            throw CheckpointError(.io, "\(target.path): cannot write \(name): \(error.localizedDescription).")
        }
    }

    /// Moves the finished folder into place: any existing target is moved aside first, put back if the move
    /// fails, and removed after it succeeds.
    ///
    /// - Parameter contents: what the folder holds, for the error message ("the finished model").
    /// - Throws: `.inputChanged` when a mapped input changed while it was read (`MappedFile`), `.io` naming the
    ///   target.
    package func commit(_ contents: String) throws(CheckpointError) {
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
        do {
            try fm.moveItem(at: temporary, to: target)
        } catch {
            if let old { try? fm.moveItem(at: old, to: target) }
            throw CheckpointError(
                .io, "\(target.path): cannot move \(contents) into place: \(error.localizedDescription).")
        }
        committed = true
        if let old { try? fm.removeItem(at: old) }
    }
}
