import CheckpointIO
import Foundation

/// Turns a model reference from a config into a local folder or file, never downloading.
///
/// Order: a named intermediate of the same file; an existing path (as given, then relative to the config's
/// folder); a Hugging Face id (`org/name`, optionally `@revision`) in the local hub cache
/// (`$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`) at `models--org--name/snapshots/<rev>`.
public struct ModelResolver: Sendable {
    public var configDirectory: String?
    public var intermediates: [String: String]
    public var hubCache: String

    public init(configDirectory: String?, intermediates: [String: String] = [:], hubCache: String? = nil) {
        self.configDirectory = configDirectory
        self.intermediates = intermediates
        self.hubCache = hubCache ?? Self.defaultHubCache()
    }

    static func defaultHubCache() -> String {
        let env = ProcessInfo.processInfo.environment
        if let c = env["HF_HUB_CACHE"] ?? env["HUGGINGFACE_HUB_CACHE"] { return c }
        if let h = env["HF_HOME"] { return h + "/hub" }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/huggingface/hub").path
    }

    /// The local path for `reference`, or an error naming what was tried.
    public func resolve(_ reference: String, file: String) throws(MergeError) -> String {
        if let p = intermediates[reference] { return p }
        let fm = FileManager.default
        var tried = [reference]
        if fm.fileExists(atPath: reference) { return reference }
        if let dir = configDirectory, !reference.hasPrefix("/") {
            let p = URL(fileURLWithPath: dir).appendingPathComponent(reference).path
            tried.append(p)
            if fm.fileExists(atPath: p) { return p }
        }
        var id = reference
        var revision: String?
        if let at = reference.firstIndex(of: "@") {
            id = String(reference[..<at])
            revision = String(reference[reference.index(after: at)...])
        }
        let parts = id.split(separator: "/")
        if parts.count == 2 {
            let repo = URL(fileURLWithPath: hubCache).appendingPathComponent("models--\(parts[0])--\(parts[1])")
            tried.append(repo.path)
            let snapshots = repo.appendingPathComponent("snapshots")
            var rev = revision
            if rev == nil || fm.fileExists(atPath: repo.appendingPathComponent("refs/\(rev ?? "")").path) {
                let ref = repo.appendingPathComponent("refs/\(rev ?? "main")")
                if let s = try? String(contentsOf: ref, encoding: .utf8) {
                    rev = s.trimmingCharacters(in: .whitespacesAndNewlines)
                }
            }
            if let rev, fm.fileExists(atPath: snapshots.appendingPathComponent(rev).path) {
                return snapshots.appendingPathComponent(rev).path
            }
            if revision == nil, let all = try? fm.contentsOfDirectory(atPath: snapshots.path), all.count == 1 {
                return snapshots.appendingPathComponent(all[0]).path
            }
        }
        throw MergeError(
            .modelNotFound,
            "\(file): model '\(reference)' is neither a local path nor in the local Hugging Face cache (tried \(tried.joined(separator: ", "))); TaskSwitch never downloads."
        )
    }
}
