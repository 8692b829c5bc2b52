import ArgumentParser
import Foundation

/// Human-readable numbers for terminal output.
enum Format {
    static func bytes(_ n: Int) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var v = Double(n)
        var u = 0
        while v >= 1000, u < units.count - 1 {
            v /= 1000
            u += 1
        }
        return u == 0 ? "\(n) B" : String(format: "%.2f %@", v, units[u])
    }

    static func count(_ n: Int) -> String {
        if n >= 1_000_000_000 { return String(format: "%.2fB", Double(n) / 1e9) }
        if n >= 1_000_000 { return String(format: "%.2fM", Double(n) / 1e6) }
        if n >= 1_000 { return String(format: "%.1fK", Double(n) / 1e3) }
        return "\(n)"
    }
}

extension Format {
    /// `0.1234` -> `"12.3%"`.
    static func percent(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }

    /// Short scientific-or-fixed number for statistics columns.
    static func number(_ x: Double) -> String {
        if x == 0 { return "0" }
        let a = Swift.abs(x)
        return a >= 1e-3 && a < 1e5 ? String(format: "%.4g", x) : String(format: "%.3e", x)
    }
}

/// A one-line progress bar on stderr, drawn only when both stdout and stderr are terminals, so scripted runs and
/// pipes stay quiet.
final class ProgressBar {
    private let total: Int
    private let label: String
    private let enabled: Bool
    private var lastDraw = 0.0

    init(total: Int, label: String) {
        self.total = max(1, total)
        self.label = label
        enabled = isatty(1) == 1 && isatty(2) == 1
    }

    /// Redraws at most 10 times a second.
    func update(_ done: Int, _ detail: String = "") {
        guard enabled else { return }
        let now = Date().timeIntervalSince1970
        guard done >= total || now - lastDraw >= 0.1 else { return }
        lastDraw = now
        let width = 30
        let filled = width * min(done, total) / total
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        let tail = detail.count > 40 ? "…" + detail.suffix(39) : detail
        FileHandle.standardError.write(Data("\r\u{1B}[K\(label) [\(bar)] \(done)/\(total) \(tail)".utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
