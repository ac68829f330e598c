import LinuxSystem

/// Where one region of guest RAM sits: guest-physical base, size, the frontend's virtual base,
/// and the offset of the region inside the file the frontend passed (vhost-user "memory region
/// description").
public struct MemoryRegionLayout: Equatable, Sendable, CustomStringConvertible {
    public var guestAddress: GuestAddress
    public var size: UInt64
    public var frontendAddress: FrontendAddress
    public var mmapOffset: UInt64

    public init(guestAddress: GuestAddress, size: UInt64, frontendAddress: FrontendAddress, mmapOffset: UInt64) {
        self.guestAddress = guestAddress
        self.size = size
        self.frontendAddress = frontendAddress
        self.mmapOffset = mmapOffset
    }

    public var guestEnd: UInt64 { guestAddress.rawValue &+ size }

    /// REM_MEM_REG identifies a region by gpa, size and user_addr; mmap_offset is ignored
    /// (QEMU 7.2 sends 0 there).
    public func identifies(_ other: MemoryRegionLayout) -> Bool {
        guestAddress == other.guestAddress && size == other.size && frontendAddress == other.frontendAddress
    }

    public var description: String {
        "[\(guestAddress) size 0x\(String(size, radix: 16)) \(frontendAddress) off 0x\(String(mmapOffset, radix: 16))]"
    }
}

/// One mapped region of guest RAM. Shared by every `GuestMemoryMap` snapshot that contains it,
/// and unmapped when the last of them goes away, so a region removed while a request still
/// uses it stays valid until that request finishes (RCU, as vm-memory's `GuestMemoryAtomic`).
public final class GuestMemoryRegion: Sendable {
    public let layout: MemoryRegionLayout
    private let mapping: MemoryMapping
    // SAFETY: `host` points `mmapOffset` bytes into `mapping`, which is `size + mmapOffset`
    // bytes long and lives as long as `self`.
    nonisolated(unsafe) let host: UnsafeMutableRawPointer

    /// Maps `size + mmap_offset` bytes of `fd` from file offset 0 and skips `mmap_offset`, as
    /// libvhost-user does (hugetlbfs needs aligned file offsets).
    public init(layout: MemoryRegionLayout, fd: borrowing FileDescriptor) throws(GuestMemoryError) {
        guard layout.size > 0,
              layout.guestAddress.rawValue <= UInt64.max - layout.size,
              layout.frontendAddress.rawValue <= UInt64.max - layout.size,
              layout.size <= UInt64(Int.max), layout.mmapOffset <= UInt64(Int.max) - layout.size
        else { throw .invalidRegion("\(layout) is empty or wraps") }
        do {
            mapping = try MemoryMapping(fd: fd.rawValue, length: Int(layout.size + layout.mmapOffset))
        } catch {
            throw .mapFailed(errno: error.rawValue)
        }
        self.layout = layout
        self.host = mapping.base + Int(layout.mmapOffset)
    }

    /// Anonymous memory posing as a region (fake guest memory for tests and benchmarks).
    public init(anonymousAt guestAddress: GuestAddress, size: UInt64) throws(GuestMemoryError) {
        do {
            mapping = try MemoryMapping(anonymous: Int(size))
        } catch {
            throw .mapFailed(errno: error.rawValue)
        }
        layout = MemoryRegionLayout(guestAddress: guestAddress, size: size,
                                    frontendAddress: FrontendAddress(0x7000_0000_0000 &+ guestAddress.rawValue),
                                    mmapOffset: 0)
        host = mapping.base
    }

    @inline(__always)
    func contains(_ address: UInt64) -> Bool {
        address >= layout.guestAddress.rawValue && address - layout.guestAddress.rawValue < layout.size
    }
}
