// swift-tools-version: 6.1
// The hot-switching benchmark, a nested package so its build stays out of `swift build` / `swift test`.
import PackageDescription

let package = Package(
    name: "SwitchBench",
    platforms: [.macOS(.v15)],
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(
            name: "SwitchBench",
            dependencies: [
                .product(name: "TaskSwitches", package: "main"), .product(name: "CheckpointIO", package: "main"),
            ],
            swiftSettings: [.unsafeFlags(["-Ounchecked"])])
    ],
    swiftLanguageModes: [.v6]
)
