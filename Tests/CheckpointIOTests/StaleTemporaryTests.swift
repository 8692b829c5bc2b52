import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

@Suite("Temporaries left by killed runs")
struct StaleTemporaryTests {
    /// No process has this PID: Linux caps PIDs at 2^22.
    static let deadPID = Int32.max

    static func scratch() throws -> URL {
        let dir = try temporaryFolder()
        return dir
    }

    @Test("writing a target removes a dead run's temporaries of that target and nothing else")
    func sweepsDeadOnly() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        let deadFolder = dir.appendingPathComponent(".out.tmp-\(Self.deadPID)-17")
        try fm.createDirectory(at: deadFolder, withIntermediateDirectories: false)
        try Data([1, 2, 3]).write(to: deadFolder.appendingPathComponent("model.safetensors"))
        let deadFile = dir.appendingPathComponent(".out.tmp-\(Self.deadPID)-18")
        try Data([4]).write(to: deadFile)
        // Kept: a live process's temporary (this one), another target's, and names not in the exact pattern.
        let kept = [
            ".out.tmp-\(getpid())-19", ".other.tmp-\(Self.deadPID)-20", ".out.tmp-\(Self.deadPID)-x",
            ".out.tmp-\(Self.deadPID)", ".out.tmp-\(Self.deadPID)-1-2", "out.tmp-\(Self.deadPID)-21",
        ]
        for name in kept { try Data([5]).write(to: dir.appendingPathComponent(name)) }

        let writer = try ModelWriter(
            directory: dir.appendingPathComponent("out").path,
            tensors: [TensorSpec(name: "w", dtype: .F32, shape: [2])])
        try writer.write("w", floats: [1, 2])
        try writer.finish()

        #expect(!fm.fileExists(atPath: deadFolder.path))
        #expect(!fm.fileExists(atPath: deadFile.path))
        for name in kept { #expect(fm.fileExists(atPath: dir.appendingPathComponent(name).path), "\(name)") }
        #expect(fm.fileExists(atPath: dir.appendingPathComponent("out/model.safetensors").path))
    }

    @Test("a single-file output sweeps its own target's dead temporaries")
    func fileOutputSweeps() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let stale = dir.appendingPathComponent(".x.tsw.tmp-\(Self.deadPID)-1")
        try Data([9]).write(to: stale)
        let out = try FileOutput(target: dir.appendingPathComponent("x.tsw").path)
        try out.write([1, 2, 3])
        try out.commit()
        #expect(!FileManager.default.fileExists(atPath: stale.path))
        #expect(try Data(contentsOf: dir.appendingPathComponent("x.tsw")) == Data([1, 2, 3]))
    }

    @Test("the PID is parsed only from the exact PID-N suffix")
    func parsing() {
        #expect(StaleTemporaries.ownerPID("123-456") == 123)
        #expect(StaleTemporaries.ownerPID("123") == nil)
        #expect(StaleTemporaries.ownerPID("-5-456") == nil)
        #expect(StaleTemporaries.ownerPID("0-456") == nil)
        #expect(StaleTemporaries.ownerPID("12a-456") == nil)
        #expect(StaleTemporaries.isAlive(getpid()))
        #expect(!StaleTemporaries.isAlive(Self.deadPID))
    }
}
