// swift-tools-version: 6.2
//
// De-duplication benchmarks (Benchmarks/README.md, "De-duplication"): the page hash candidates'
// throughput (MX128, memx-server's own, against libcrypto's SHA-256), the store's write path
// with de-duplication on and off, and a tool that writes a disk image through a vhost-user
// socket (the VM-creation benchmark, dedup-vm-create.sh). A package of its own, so libcrypto's
// SHA-256 (only measured, never used by MemX) stays out of the main build.
// Build: swift build -c release --package-path Benchmarks/DedupBenchBench
import PackageDescription

let package = Package(
    name: "memx-dedup-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "memx", path: "../../"),
    ],
    targets: [
        // libcrypto's SHA-256 (EVP one-shot), for the hash comparison only.
        .target(name: "CDedupBench", linkerSettings: [.linkedLibrary("crypto")]),
        .executableTarget(
            name: "dedup-bench",
            dependencies: [
                "CDedupBench",
                .product(name: "MemoryServer", package: "memx"),
                .product(name: "RemoteMem", package: "memx"),
                .product(name: "VhostUser", package: "memx"),
                .product(name: "LinuxSystem", package: "memx"),
            ]),
    ]
)
