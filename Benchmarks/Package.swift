// swift-tools-version: 6.1
//
// In-process benchmarks of the MemX data path with ordo-one/benchmark, which counts heap
// allocations (malloc-interposer) per benchmark: the proof that a request allocates nothing.
// Run from this folder: swift package --disable-sandbox benchmark
import PackageDescription

let package = Package(
    name: "memx-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "memx", path: "../"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "BlockPathBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "BlockDevice", package: "memx"),
                .product(name: "VhostUser", package: "memx"),
                .product(name: "Virtio", package: "memx"),
                .product(name: "GuestMemory", package: "memx"),
                .product(name: "RemoteMem", package: "memx"),
                .product(name: "LinuxSystem", package: "memx"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/BlockPathBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ]
)
