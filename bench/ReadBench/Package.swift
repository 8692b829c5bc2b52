// swift-tools-version: 6.1
// The Swift side of bench/read-bench: reads every tensor of a model through CheckpointIO and converts it to f32.
import PackageDescription

let package = Package(
    name: "ReadBench",
    dependencies: [.package(name: "TaskSwitch", path: "../..")],
    targets: [
        .executableTarget(
            name: "read-bench", dependencies: [.product(name: "CheckpointIO", package: "TaskSwitch")],
            path: "Sources/ReadBench", swiftSettings: [.unsafeFlags(["-Ounchecked"])])
    ],
    swiftLanguageModes: [.v6]
)
