// swift-tools-version: 6.1
import PackageDescription

// Dependencies point one way:
// CheckpointIO <- TensorKernels <- {MergeEngine, TaskSwitches} <- Evaluation <- {Serving, Analysis} <- tswitch
let package = Package(
    name: "TaskSwitch",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tswitch", targets: ["tswitch"]),
        .library(name: "CheckpointIO", targets: ["CheckpointIO"]),
        .library(name: "TensorKernels", targets: ["TensorKernels"]),
        .library(name: "MergeEngine", targets: ["MergeEngine"]),
        .library(name: "TaskSwitches", targets: ["TaskSwitches"]),
        .library(name: "Evaluation", targets: ["Evaluation"]),
        .library(name: "Serving", targets: ["Serving"]),
        .library(name: "Analysis", targets: ["Analysis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
    ],
    targets: [
        // C libraries from Debian.
        .systemLibrary(name: "COpenBLAS", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", providers: [.apt(["libzstd-dev"])]),

        // Safetensors files and Hugging Face model folders: parse, validate, map, convert, write.
        .target(name: "CheckpointIO", dependencies: ["CCheckpointKernels", "CGlibcExtensions", "CMappedFileGuard"]),
        // Non-temporal-store conversion (Swift cannot spell a streaming store).
        .target(name: "CCheckpointKernels"),
        // The merge's fused AVX-512/AVX2 task-arithmetic loop, chosen at run time (Swift compiles for baseline x86-64
        // and cannot spell a per-function target).
        .target(name: "CMergeKernels"),
        // SIGBUS handler and identity checks for memory-mapped inputs changed while read (a signal handler is C).
        .target(name: "CMappedFileGuard"),
        // fallocate and mallopt, GNU extensions the Swift Glibc module leaves out.
        .target(name: "CGlibcExtensions"),
        // SIMD and multi-core loops over tensors: elementwise ops, selection, statistics, truncated SVD (LAPACK).
        .target(name: "TensorKernels", dependencies: ["CheckpointIO", "CMergeKernels", "COpenBLAS"]),
        // mergekit-compatible configs and merge methods, streamed tensor by tensor.
        .target(
            name: "MergeEngine",
            dependencies: ["CheckpointIO", "TensorKernels", "COpenBLAS", .product(name: "Yams", package: "Yams")]),
        // T-Switch packs, hot switching of a resident base, Auto-Switch routing.
        .target(name: "TaskSwitches", dependencies: ["CheckpointIO", "TensorKernels", "CZstd"]),
        // The encoder's AVX-512 attention, GELU and LayerNorm, chosen at run time (Swift fallback in Evaluation).
        .target(name: "CEncoderKernels"),
        // BERT encoder, WordPiece tokenizer, heads, accuracy.
        .target(
            name: "Evaluation",
            dependencies: ["CheckpointIO", "TensorKernels", "TaskSwitches", "COpenBLAS", "CEncoderKernels"]),
        // Research code behind `tswitch analyze`: the pulse-like experiment on weights and on accuracy, the coding
        // study of masks and signs, SVG line plots. Nothing in the core libraries imports it.
        .target(
            name: "Analysis", dependencies: ["CheckpointIO", "TensorKernels", "TaskSwitches", "Evaluation", "CZstd"]),
        // `tswitch serve`: one resident base answering every task over HTTP (Hummingbird 2), one inference queue.
        .target(
            name: "Serving",
            dependencies: [
                "CheckpointIO", "TaskSwitches", "Evaluation",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The command-line tool: thin commands over the libraries.
        .executableTarget(
            name: "tswitch",
            dependencies: [
                "CheckpointIO", "TensorKernels", "MergeEngine", "TaskSwitches", "Evaluation", "Serving", "Analysis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),

        // What every test target shares: fixture and repository paths, temporary folders, coded-error capture,
        // malformed-corpus cases and mutation runs. A plain target (test targets cannot depend on each other).
        .target(name: "TestSupport", dependencies: ["CheckpointIO"], path: "Tests/TestSupport"),
        .testTarget(
            name: "CheckpointIOTests", dependencies: ["CheckpointIO", "TestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(
            name: "TensorKernelsTests", dependencies: ["TensorKernels", "CheckpointIO", "CMergeKernels", "TestSupport"]),
        // Evaluation: the byte-level BPE tokenizer that `tswitch moe` hands MergeEngine for cheap_embed prompts.
        .testTarget(
            name: "MergeEngineTests",
            dependencies: ["MergeEngine", "CheckpointIO", "TensorKernels", "Evaluation", "TestSupport"],
            resources: [.copy("Fixtures")]),
        .testTarget(
            name: "TaskSwitchesTests",
            dependencies: ["TaskSwitches", "TensorKernels", "CheckpointIO", "MergeEngine", "TestSupport"],
            resources: [.copy("Fixtures")]),
        .testTarget(
            name: "ServingTests",
            dependencies: [
                "Serving", "Evaluation", "TaskSwitches", "CheckpointIO", "TestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]),
        .testTarget(
            name: "AnalysisTests",
            dependencies: ["Analysis", "Evaluation", "TaskSwitches", "TensorKernels", "CheckpointIO", "TestSupport"]),
        .testTarget(
            name: "EvaluationTests",
            dependencies: [
                "Evaluation", "CEncoderKernels", "TaskSwitches", "TensorKernels", "CheckpointIO", "TestSupport",
            ],
            resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v6]
)
