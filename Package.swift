// swift-tools-version:6.0
import PackageDescription

// Hand-written kernels need a target CPU with AVX2/FMA, otherwise SIMD code lowers to scalar libm calls
// (see the project's build notes). Haswell-level code runs on every x86-64 server of this kind.
#if arch(x86_64)
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let kernelFlags: [SwiftSetting] = []
#endif
let settings: [SwiftSetting] = kernelFlags

let package = Package(
    name: "interp",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "Interp", targets: ["Interp"]),
        .executable(name: "interp", targets: ["interp"]),
        .executable(name: "interp-bench", targets: ["interp-bench"]),
    ],
    dependencies: [
        // The only Swift dependency: command-line parsing for the two executables.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5", providers: [.apt(["libhdf5-dev"])]),

        .target(name: "InterpCore", dependencies: ["CBLAS"], swiftSettings: settings),
        .target(name: "SafeTensors", dependencies: ["InterpCore"], swiftSettings: settings),
        .target(name: "Tokenization", dependencies: ["InterpCore"], swiftSettings: settings),
        .target(name: "InterpModels", dependencies: ["InterpCore", "SafeTensors", "Tokenization"], swiftSettings: settings),
        .target(name: "ActivationStore", dependencies: ["InterpCore", "CHDF5", "Tokenization", "InterpModels"], swiftSettings: settings),
        .target(name: "SparseAutoencoders", dependencies: ["InterpCore", "SafeTensors", "Tokenization", "InterpModels", "ActivationStore"], swiftSettings: settings),
        .target(name: "Plots", swiftSettings: settings),
        .target(name: "ActivationPatching", dependencies: ["InterpCore", "Tokenization", "InterpModels", "Plots"], swiftSettings: settings),
        .target(name: "Circuits", dependencies: ["InterpCore", "InterpModels"], swiftSettings: settings),
        .target(name: "Superposition", dependencies: ["InterpCore", "ActivationStore", "SparseAutoencoders", "Plots"], swiftSettings: settings),
        .target(name: "Dashboards", dependencies: ["InterpCore", "Tokenization", "InterpModels", "ActivationStore", "SparseAutoencoders", "Plots"],
                swiftSettings: settings),
        .target(name: "Interp", dependencies: ["InterpCore", "SafeTensors", "Tokenization", "InterpModels", "ActivationStore", "SparseAutoencoders",
                                               "Plots", "Superposition", "ActivationPatching", "Circuits", "Dashboards"],
                swiftSettings: settings),

        .executableTarget(name: "interp", dependencies: [
            "Interp", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: settings),
        .executableTarget(name: "interp-bench", dependencies: [
            "Interp", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: settings),

        // Runs the notebooks in notebooks-md/ and compares their outputs with the ones written there (Foundation only).
        .executableTarget(name: "notebook-check", swiftSettings: settings),

        .target(name: "InterpTestSupport", dependencies: ["Interp"], swiftSettings: settings),
        .testTarget(name: "InterpCoreTests", dependencies: ["InterpCore", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "InterpModelsTests", dependencies: ["InterpModels", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "ActivationStoreTests", dependencies: ["ActivationStore", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "SparseAutoencodersTests", dependencies: ["SparseAutoencoders", "ActivationStore", "InterpModels", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "SuperpositionTests", dependencies: ["Superposition", "SparseAutoencoders", "ActivationStore", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "ActivationPatchingTests", dependencies: ["ActivationPatching", "InterpModels", "Tokenization", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "CircuitsTests", dependencies: ["Circuits", "InterpModels", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "DashboardsTests", dependencies: ["Dashboards", "SparseAutoencoders", "InterpModels", "InterpTestSupport"], swiftSettings: settings),
        .testTarget(name: "CLITests", dependencies: ["InterpTestSupport", "ActivationStore"], exclude: ["Snapshots"], swiftSettings: settings),
    ],
    swiftLanguageModes: [.v5]
)
