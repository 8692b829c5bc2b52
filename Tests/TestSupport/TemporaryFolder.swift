import Foundation

/// A fresh empty folder under the system temporary directory, named after `label` (the calling test by default)
/// and unique per process and call; the caller removes it.
public func temporaryFolder(_ label: String = #function, prefix: String = "tswitch-test") throws -> URL {
    let safe = label.filter { $0.isLetter || $0.isNumber }
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("\(prefix)-\(safe)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
