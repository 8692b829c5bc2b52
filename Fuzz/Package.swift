// swift-tools-version: 6.1
// libFuzzer targets of TaskSwitch, built by `scripts/fuzz` with `-sanitize=fuzzer,address` (see that script).
// A separate package so the instrumentation and `@testable` builds never touch the main package's products.
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name, which differs between checkouts; compute it.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let main = root.lastPathComponent

let package = Package(
    name: "TaskSwitchFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(path: root.path)],
    targets: [
        // Declares libFuzzer's driver entry point for Swift.
        .target(name: "CFuzzDriver", path: "Sources/CFuzzDriver"),
        .executableTarget(
            name: "fuzz-tswitch",
            dependencies: [
                "CFuzzDriver",
                .product(name: "CheckpointIO", package: main),
                .product(name: "TaskSwitches", package: main),
                .product(name: "MergeEngine", package: main),
                .product(name: "Evaluation", package: main),
            ],
            path: "Sources/FuzzTargets"),
    ],
    swiftLanguageModes: [.v6]
)
