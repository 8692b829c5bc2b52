import CheckpointIO
import Testing

@testable import TaskSwitches

/// The command-line values of packs (`PATH:WEIGHT`, `tswitch apply` and `eval --pack`) and per-task files
/// (`TASK=FILE`, `tswitch route --build`).
struct ArgumentValueTests {
    @Test("PATH:WEIGHT splits at the last colon when what follows is a number; otherwise weight 1")
    func weightedPaths() throws {
        #expect(try WeightedPath(parsing: "a.tsw") == WeightedPath(path: "a.tsw", weight: 1))
        #expect(try WeightedPath(parsing: "a.tsw:0.5") == WeightedPath(path: "a.tsw", weight: 0.5))
        #expect(try WeightedPath(parsing: "c.tsw:-1") == WeightedPath(path: "c.tsw", weight: -1))
        #expect(try WeightedPath(parsing: "dir:x/b.tsw") == WeightedPath(path: "dir:x/b.tsw", weight: 1))
        #expect(try WeightedPath(parsing: "d:1/e.tsw:2") == WeightedPath(path: "d:1/e.tsw", weight: 2))
    }

    @Test("a weight that is not finite, or a pack with no path, is refused with a message naming it")
    func badWeightedPaths() {
        for bad in ["a.tsw:inf", "a.tsw:nan", "a.tsw:-inf", ":0.5", ""] {
            #expect(throws: ValueSyntaxError.self, "\(bad)") { _ = try WeightedPath(parsing: bad) }
        }
        do {
            _ = try WeightedPath(parsing: "a.tsw:inf")
            Issue.record("accepted an infinite weight")
        } catch {
            #expect(error.message.contains("a.tsw:inf") && error.message.contains("finite"))
        }
    }

    @Test("TASK=FILE splits at the first '=', and both sides must be non-empty")
    func taskFiles() throws {
        #expect(try TaskFile(parsing: "fortune=f.safetensors") == TaskFile(task: "fortune", path: "f.safetensors"))
        #expect(try TaskFile(parsing: "a=b=c") == TaskFile(task: "a", path: "b=c"))
        for bad in ["fortune", "=f.safetensors", "fortune=", ""] {
            #expect(throws: ValueSyntaxError.self, "\(bad)") { _ = try TaskFile(parsing: bad) }
        }
    }
}
