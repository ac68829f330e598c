// swift-tools-version: 6.2
//
// MemX: virtio-blk disks made of other hosts' spare memory, served to QEMU over vhost-user.
// The targets follow rust-vmm's layering; each may import only the ones listed for it in
// docs/ARCHITECTURE.md ("Dependency direction").
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "memx",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "memx-vhost", targets: ["memx-vhost"]),
        .executable(name: "memx-bench", targets: ["memx-bench"]),
        .executable(name: "memx-server", targets: ["memx-server"]),
        .executable(name: "memxctl", targets: ["memxctl"]),
        .library(name: "LinuxSystem", targets: ["LinuxSystem"]),
        .library(name: "GuestMemory", targets: ["GuestMemory"]),
        .library(name: "Virtio", targets: ["Virtio"]),
        .library(name: "VhostUser", targets: ["VhostUser"]),
        .library(name: "RemoteMem", targets: ["RemoteMem"]),
        .library(name: "BlockDevice", targets: ["BlockDevice"]),
        .library(name: "MemxTesting", targets: ["MemxTesting"]),
        .library(name: "MemoryServer", targets: ["MemoryServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // libcrypto (OpenSSL, Debian's libssl-dev): HMAC-SHA256 for the wire protocol's AUTH.
        .target(name: "CMemxShims", linkerSettings: [.linkedLibrary("crypto")]),
        .target(name: "LinuxSystem", dependencies: ["CMemxShims"], swiftSettings: swiftSettings),
        .target(name: "GuestMemory", dependencies: ["LinuxSystem", "CMemxShims"], swiftSettings: swiftSettings),
        .target(name: "Virtio", dependencies: ["GuestMemory"], swiftSettings: swiftSettings),
        .target(
            name: "VhostUser",
            dependencies: ["Virtio", "GuestMemory", "LinuxSystem", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .target(name: "RemoteMem", dependencies: ["LinuxSystem", "CMemxShims"], swiftSettings: swiftSettings),
        .target(
            name: "BlockDevice",
            dependencies: ["VhostUser", "Virtio", "GuestMemory", "RemoteMem", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .target(
            name: "MemoryServer",
            dependencies: ["RemoteMem", "LinuxSystem", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "memx-server",
            dependencies: [
                "MemoryServer", "RemoteMem", "LinuxSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "memxctl",
            dependencies: [
                "RemoteMem", "LinuxSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "MemxTesting",
            dependencies: ["VhostUser", "Virtio", "GuestMemory", "LinuxSystem", "BlockDevice", "RemoteMem", "MemoryServer",
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "memx-vhost",
            dependencies: [
                "BlockDevice", "VhostUser", "RemoteMem", "LinuxSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "memx-udp-proxy",
            dependencies: ["MemxTesting", "LinuxSystem"],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "memx-bench",
            dependencies: [
                "VhostUser", "Virtio", "GuestMemory", "LinuxSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "MemxTests",
            dependencies: ["MemxTesting", "VhostUser", "Virtio", "GuestMemory", "LinuxSystem", "BlockDevice", "RemoteMem",
                           "MemoryServer"],
            swiftSettings: swiftSettings),
    ]
)
