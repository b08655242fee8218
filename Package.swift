// swift-tools-version:6.0
// Squeeze: compress GPT-2-family models (pruning, Kronecker, low rank) with distillation, over MPI.
import PackageDescription

/// Numeric targets (Tensor, Kernels): whole-module, unchecked optimisation for AVX2/FMA CPUs
/// (Haswell and later) in release. Their hot loops work on unsafe buffers whose bounds the callers
/// check; -Ounchecked also drops overflow checks that would keep the loops from vectorising.
let numericSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo", "-target-cpu", "haswell"], .when(configuration: .release)),
    // Debug builds (swift test) still optimise the numeric code: unoptimised Swift is 10-50x
    // slower on the vocabulary-wide softmaxes and would make the tests crawl.
    .unsafeFlags(["-O"], .when(configuration: .debug)),
]

/// Everything else (parsers, model assembly, MPI, training and compression logic, the CLI) keeps
/// Swift's checks: preconditions, overflow and bounds checks stay in release builds.
let checkedSettings: [SwiftSetting] = [
    .unsafeFlags(["-O"], .when(configuration: .debug)),
]

let package = Package(
    name: "Squeeze",
    products: [
        .executable(name: "squeeze", targets: ["squeeze"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // C interop only: headers, prefixed static-inline shims, link lines.
        .systemLibrary(name: "CMPI", pkgConfig: "ompi",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        .systemLibrary(name: "CScaLAPACK",
                       providers: [.apt(["libscalapack-openmpi-dev"])]),
        // oneDNN (no pkg-config file in Debian's package): BF16 matrix products (Kernels' BF16Matmul).
        .systemLibrary(name: "CDNNL",
                       providers: [.apt(["libdnnl-dev"])]),

        // The one place that writes to the terminal (rank-0 results and progress, warnings, errors).
        .target(name: "Reporting", swiftSettings: checkedSettings),
        .target(name: "MPI", dependencies: ["CMPI"], swiftSettings: checkedSettings),
        .target(name: "Tensor", dependencies: ["COpenBLAS"], swiftSettings: numericSettings),
        // CPU kernels for packed weight forms (BF16, Q8_0/Q4_0, bitmask and 2:4 sparse): C, compiled
        // for baseline x86-64 with per-function AVX2/AVX-512 paths picked at run time
        // (include/squeeze_kernels.h; SQUEEZE_ISA caps the level).
        .target(name: "CKernels", path: "Sources/CKernels",
                cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])]),
        // The inner loops: GPT-2 layer kernels (forward/backward pairs), losses, fast math, parallel loops.
        .target(name: "Kernels", dependencies: ["Tensor", "CKernels", "CDNNL"], swiftSettings: numericSettings),
        .target(name: "Model", dependencies: ["Tensor", "Kernels", "CKernels"], swiftSettings: checkedSettings),
        .target(name: "Distributed",
                dependencies: ["MPI", "Reporting", "Tensor", "Model", "CScaLAPACK", "CMPI"],
                swiftSettings: checkedSettings),
        .target(name: "Training", dependencies: ["MPI", "Reporting", "Tensor", "Kernels", "Model", "Distributed"],
                swiftSettings: checkedSettings),
        .target(name: "Compression",
                dependencies: ["MPI", "Reporting", "Tensor", "Kernels", "Model", "Training", "Distributed",
                               .product(name: "Yams", package: "Yams")],
                swiftSettings: checkedSettings),
        .target(name: "Benchmarks",
                dependencies: ["MPI", "Reporting", "Tensor", "Kernels", "Model", "Training", "Compression", "Distributed", "COpenBLAS", "CMPI", "CKernels"],
                swiftSettings: checkedSettings),
        .executableTarget(
            name: "squeeze",
            dependencies: [
                "MPI", "Reporting", "Tensor", "Kernels", "Model", "Training", "Compression", "Distributed", "Benchmarks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: checkedSettings),

        // One-input bodies of the fuzz harnesses (scripts/fuzz.sh), replayed by FuzzRegressionTests.
        // A plain library here; only scripts/fuzz.sh compiles its libFuzzer entry points.
        .target(name: "FuzzTargets", dependencies: ["Model", "Compression"], swiftSettings: checkedSettings),

        // Test support (as swift-numerics' _TestSupport): helpers only the tests use.
        .target(name: "TestSupport", dependencies: ["Kernels", "Model", "Training"], path: "Tests/TestSupport",
                 swiftSettings: checkedSettings),
        .testTarget(name: "SqueezeTests",
                    dependencies: ["MPI", "Reporting", "Tensor", "Kernels", "Model", "Training", "Compression", "Distributed", "COpenBLAS",
                                   "CKernels", "CDNNL", "FuzzTargets", "TestSupport"],
                    swiftSettings: checkedSettings),
    ],
    swiftLanguageModes: [.v5]
)
