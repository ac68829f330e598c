/// A guest physical address (GPA): what descriptor `addr` fields and the dirty log speak.
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    @inlinable public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "gpa 0x" + String(rawValue, radix: 16) }
}

/// An address in the frontend's (QEMU's) own virtual address space. SET_VRING_ADDR gives ring
/// addresses this way, and memory regions say where they sit in it (`user_addr`).
public struct FrontendAddress: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    @inlinable public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "uaddr 0x" + String(rawValue, radix: 16) }
}

/// Why an access to guest memory was refused. Every one of these is the guest's (or the
/// frontend's) fault: the caller turns it into a virtio error status or a disconnect.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No region (or no contiguous run of regions) covers the range.
    case outOfRange(GuestAddress, length: UInt64)
    /// A frontend virtual address that falls in no region.
    case unmappedFrontendAddress(FrontendAddress, length: UInt64)
    /// A region that overlaps another, is empty, or wraps the address space.
    case invalidRegion(String)
    /// mmap of a region's file descriptor failed.
    case mapFailed(errno: Int32)
    /// The table already holds the maximum number of regions.
    case tooManyRegions

    public var description: String {
        switch self {
        case .outOfRange(let address, let length): "\(address) +\(length) is outside guest memory"
        case .unmappedFrontendAddress(let address, let length): "\(address) +\(length) is in no memory region"
        case .invalidRegion(let why): "invalid memory region: \(why)"
        case .mapFailed(let errno): "mmap of a memory region failed (errno \(errno))"
        case .tooManyRegions: "too many memory regions"
        }
    }
}
