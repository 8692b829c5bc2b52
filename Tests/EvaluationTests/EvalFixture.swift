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
    static var modelAvailable: Bool { PretrainedModel.available }

    /// The pretrained model folder; only read by suites enabled by `modelAvailable`.
    static var modelFolder: URL { PretrainedModel.folder }

    /// Writes a synthetic fine-tune into `dir` (`PretrainedModel.fineTune`).
    static func fineTune(into dir: URL, changing changed: Set<String>, delta: (String, Int) -> Float) throws {
        try PretrainedModel.fineTune(into: dir, changing: changed, delta: delta)
    }

    /// The trait that skips a suite when the model is missing, saying why.
    static var needsModel: ConditionTrait { PretrainedModel.needsModel }

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
        case .U16:
            return (0..<view.elementCount).map {
                Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))
            }
        case .I64:
            return (0..<view.elementCount).map {
                Int(Int64(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)))
            }
        case .I32:
            return (0..<view.elementCount).map {
                Int(Int32(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)))
            }
        default: fatalError("unexpected dtype \(view.dtype)")
        }
    }

    /// Runs `body` and returns the `EvaluationError` it throws, or nil.
    static func error(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> EvaluationError?
    {
        thrownError(EvaluationError.self, sourceLocation: sourceLocation, body)
    }
}
