// swift-tools-version: 6.1
//
// libFuzzer targets for the parsers that take bytes from peers, over the same harnesses as the
// seeded "Fuzzing" suite (MemxTesting: ServerFrameHarness, VhostUserHarness). Kept out of the
// main package: they only build with `-sanitize=fuzzer`. Build and run with ../scripts/fuzz.
// (Not `Fuzz/`: in a checkout named `fuzz` its package identity would clash with the main one.)
import PackageDescription

let package = Package(
    name: "memx-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "memx", path: "../"),
    ],
    targets: [
        .executableTarget(
            name: "FuzzServerFrames",
            dependencies: [
                .product(name: "MemxTesting", package: "memx"),
                .product(name: "MemoryServer", package: "memx"),
                .product(name: "RemoteMem", package: "memx"),
            ]),
        .executableTarget(
            name: "FuzzVhostUser",
            dependencies: [.product(name: "MemxTesting", package: "memx")]),
    ]
)
