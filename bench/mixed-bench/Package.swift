// swift-tools-version: 6.1
// The mixed-task batch benchmark, a nested package so its build stays out of `swift build` / `swift test`.
import PackageDescription

let package = Package(
    name: "MixedBench",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "main", path: "../..")],
    targets: [
        .executableTarget(
            name: "MixedBench",
            dependencies: [
                .product(name: "Evaluation", package: "main"), .product(name: "TaskSwitches", package: "main"),
                .product(name: "CheckpointIO", package: "main"), .product(name: "TensorKernels", package: "main"),
            ])
    ],
    swiftLanguageModes: [.v6]
)
