import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

/// The shared error shape: raw codes stay the strings scripts match on, causes are kept and printed, equality
/// is code and message.
@Suite("CodedError: codes, causes and messages")
struct CodedErrorTests {
    @Test("codes round-trip through their raw strings and unknown strings are refused")
    func rawValues() {
        for code in CheckpointError.Code.allCases { #expect(CheckpointError.Code(rawValue: code.rawValue) == code) }
        #expect(CheckpointError.Code.outputExists.rawValue == "outputExists")
        #expect("\(CheckpointError.Code.inputChanged)" == "inputChanged")
        #expect(CheckpointError.Code(rawValue: "noSuchCode") == nil)
        #expect(CheckpointError.Code.allCases.count == 32)
    }

    @Test("a wrapping error keeps its cause; the debug description prints the chain and underlying finds it")
    func cause() {
        struct Plain: Error {}
        let inner = CheckpointError(.io, "/m/a.safetensors: cannot read.", cause: Plain())
        let outer = CheckpointError(.invalidIndex, "/m: the index is unreadable.", cause: inner)
        #expect(outer.description == "/m: the index is unreadable.")
        let debug = String(reflecting: outer)
        #expect(debug.hasPrefix("CheckpointError.invalidIndex: /m: the index is unreadable."))
        #expect(debug.contains("cause: CheckpointError.io: /m/a.safetensors: cannot read."))
        #expect(debug.contains("Plain"))
        #expect(outer.underlying(CheckpointError.self)?.code == .invalidIndex)
        #expect((outer.cause as? CheckpointError)?.underlying(CheckpointError.self) == inner)
    }

    @Test("equality compares code and message, not the cause")
    func equality() {
        let a = CheckpointError(.io, "x.", cause: CheckpointError(.io, "y."))
        #expect(a == CheckpointError(.io, "x."))
        #expect(a != CheckpointError(.writeSize, "x."))
    }

    @Test("an existing output is refused with a message naming the folder and no command-line flag")
    func outputExistsMessage() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        do throws(CheckpointError) {
            _ = try ModelWriter(directory: dir.path, tensors: [])
            Issue.record("an existing output was accepted")
        } catch {
            #expect(error.code == .outputExists)
            #expect(error.message.contains(dir.lastPathComponent) && error.message.hasSuffix(": already exists."))
            #expect(!error.message.contains("--"))
        }
    }
}
