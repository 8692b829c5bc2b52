import CheckpointIO
import Foundation
import Testing

@testable import Evaluation

/// Shared helpers of the Evaluation tests: fixture and repository paths, the pretrained model folder.
enum EvalFixture {
    /// The copied `Fixtures` folder of this test target.
    static let root: URL = {
        guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            fatalError("the Fixtures resource folder is missing from the test bundle")
        }
        return url
    }()

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    /// The repository root (tests read the task data in `data/tasks`).
    static let repository: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The pretrained all-MiniLM-L6-v2 folder, as printed by `scripts/model-path`.
    static let modelFolder: URL = {
        let p = Process()
        p.executableURL = repository.appendingPathComponent("scripts/model-path")
        let pipe = Pipe()
        p.standardOutput = pipe
        do { try p.run() } catch { fatalError("cannot run scripts/model-path: \(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let path = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        precondition(p.terminationStatus == 0 && !path.isEmpty, "scripts/model-path failed; run scripts/setup")
        return URL(fileURLWithPath: path, isDirectory: true)
    }()

    static let tokenizer: WordPieceTokenizer = {
        do { return try WordPieceTokenizer(folder: modelFolder) } catch { fatalError("\(error)") }
    }()

    /// The texts of a `{"text": ...}` JSONL file in order.
    static func texts(_ url: URL) throws -> [String] {
        try TextDataset.read(path: url.path).map(\.text)
    }

    /// Integer tensor elements as `Int`.
    static func integers(_ view: TensorView) -> [Int] {
        let b = view.bytes
        switch view.dtype {
        case .U16: return (0..<view.elementCount).map { Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) }
        case .I64: return (0..<view.elementCount).map { Int(Int64(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) }
        case .I32: return (0..<view.elementCount).map { Int(Int32(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self))) }
        default: fatalError("unexpected dtype \(view.dtype)")
        }
    }

    /// Runs `body` and returns the `EvaluationError` it throws, or nil.
    static func error(_ body: () throws -> Void) -> EvaluationError? {
        do {
            try body()
            return nil
        } catch let e as EvaluationError {
            return e
        } catch {
            return nil
        }
    }
}
