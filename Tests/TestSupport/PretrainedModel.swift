import CheckpointIO
import Foundation
import Testing

/// The pretrained model as suites use it: its folder, the trait that skips a suite without it, and synthetic
/// fine-tunes of it.
public enum PretrainedModel {
    /// True when the pretrained model was found; the condition of every suite that embeds with it.
    public static var available: Bool { (try? TestPaths.pretrainedModel.get()) != nil }

    /// The pretrained model folder; only read by suites enabled by `needsModel`.
    public static var folder: URL {
        switch TestPaths.pretrainedModel {
        case .success(let url): return url
        case .failure(let missing): fatalError("a suite needing the model ran without it: \(missing.reason)")
        }
    }

    /// The trait that skips a suite when the model is missing, saying why.
    public static var needsModel: ConditionTrait {
        .enabled(if: available, "the pretrained all-MiniLM-L6-v2 is missing: run scripts/setup")
    }

    /// Writes a synthetic fine-tune into `dir`: a copy of the pretrained base with `delta(name, index)` added to
    /// each element of the tensors in `changed`, plus the base's support files.
    public static func fineTune(into dir: URL, changing changed: Set<String>, delta: (String, Int) -> Float) throws {
        let base = try ModelFolder(path: folder.path)
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

    /// The worst relative L2 error over the rows of `hidden` values: max over rows of ‖got − want‖ / ‖want‖.
    public static func worstRelativeError(_ got: [Float], _ want: [Float], hidden: Int) -> Double {
        precondition(got.count == want.count)
        var worst = 0.0
        for r in 0..<(want.count / hidden) {
            var diff = 0.0
            var norm = 0.0
            for j in 0..<hidden {
                let d = Double(got[r * hidden + j]) - Double(want[r * hidden + j])
                diff += d * d
                norm += Double(want[r * hidden + j]) * Double(want[r * hidden + j])
            }
            worst = max(worst, (diff / max(norm, 1e-30)).squareRoot())
        }
        return worst
    }
}
