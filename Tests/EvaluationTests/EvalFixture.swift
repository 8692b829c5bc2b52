import CheckpointIO
import Foundation
import TestSupport
import Testing

@testable import Evaluation

/// Shared helpers of the Evaluation tests: fixture and repository paths, the pretrained model folder.
enum EvalFixture {
    /// The copied `Fixtures` folder of this test target.
    static let root = TestPaths.fixtures(in: .module)

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    /// The repository root (tests read the task data in `data/tasks`).
    static let repository = TestPaths.repository

    /// True when the pretrained model was found; the condition of every suite that embeds with it.
    static var modelAvailable: Bool { (try? TestPaths.pretrainedModel.get()) != nil }

    /// The pretrained model folder; only read by suites enabled by `modelAvailable`.
    static var modelFolder: URL {
        switch TestPaths.pretrainedModel {
        case .success(let url): return url
        case .failure(let missing): fatalError("a suite needing the model ran without it: \(missing.reason)")
        }
    }

    /// Writes a synthetic fine-tune into `dir`: a copy of the pretrained base with `delta(name, index)` added to
    /// each element of the tensors in `changed`, plus the base's support files.
    static func fineTune(into dir: URL, changing changed: Set<String>, delta: (String, Int) -> Float) throws {
        let base = try ModelFolder(path: modelFolder.path)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let specs = base.tensorInfos.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let writer = try SafeTensorsWriter(path: dir.appendingPathComponent("model.safetensors").path, tensors: specs)
        for spec in specs {
            let view = try base.tensor(spec.name)
            if changed.contains(spec.name) {
                try writer.write(spec.name, floats: try view.floats().enumerated().map { $1 + delta(spec.name, $0) })
            } else {
                try writer.write(spec.name, from: view)
            }
        }
        try writer.finish()
        for f in base.supportFiles {
            try FileManager.default.copyItem(at: f, to: dir.appendingPathComponent(f.lastPathComponent))
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
    static func error(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> EvaluationError? {
        thrownError(EvaluationError.self, sourceLocation: sourceLocation, body)
    }
}
