import CheckpointIO
import Foundation
import Synchronization
import Testing

@testable import MergeEngine

@Suite("Output pipeline failures")
struct OutputPipelineTests {
    @Test("a failed write is rethrown by the next submit and by drain, and later writes never run")
    func failureStopsThePipeline() throws {
        let pipeline = OutputPipeline()
        let ran = Mutex<[Int]>([])
        try pipeline.submit { () throws(CheckpointError) in ran.withLock { $0.append(1) } }
        try pipeline.submit { () throws(CheckpointError) in
            ran.withLock { $0.append(2) }
            throw CheckpointError(.io, "out/model.safetensors: write failed: No space left on device.")
        }
        #expect(throws: CheckpointError.self) {
            try pipeline.submit { () throws(CheckpointError) in ran.withLock { $0.append(3) } }
        }
        do {
            try pipeline.drain()
            Issue.record("drain returned after a failed write")
        } catch {
            #expect(error.message.contains("No space left on device"))
        }
        #expect(ran.withLock { $0 } == [1, 2])
    }

    @Test(
        "a write failing on the output thread fails the merge with a message naming the tensor, and leaves nothing at the target",
        arguments: [0, 1])
    func failedWriteLeavesNothing(victimIndex: Int) throws {
        let names = try ModelFolder(path: Fixtures.model("base")).tensorNames.sorted()
        let victim = victimIndex == 0 ? names[0] : names[names.count - 1]
        let parent = Fixtures.scratch("write-fault")
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let out = parent + "/merged"
        var options = MergeOptions()
        options.writeFault = { tensor in
            tensor == victim
                ? CheckpointError(.io, "\(out): write of '\(tensor)' failed: No space left on device (injected).") : nil
        }
        do {
            try MergeEngine.run(configFile: Fixtures.config("task_arithmetic"), output: out, options: options)
            Issue.record("the merge succeeded although writing '\(victim)' failed")
        } catch {
            #expect(error.code == .checkpoint)
            #expect(error.message.contains("'\(victim)'"))
            #expect(error.message.contains("No space left on device"))
        }
        // Neither the target nor a hidden temporary folder or file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent) == [])
    }
}
