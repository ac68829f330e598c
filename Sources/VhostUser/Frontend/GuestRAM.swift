import GuestMemory
import LinuxSystem
import Synchronization

/// The frontend's guest RAM. It is a memfd that is mapped MAP_SHARED here and handed to the
/// backend, so both sides see the same bytes, as with QEMU's
/// `memory-backend-memfd,share=on`.
///
/// The frontend reads and writes it through `memory` (a `GuestMemoryMap`), exactly as the
/// backend will. Each region's frontend address (`user_addr`) is `frontendBase + gpa`. That is
/// a made-up base far from any guest-physical address, so a backend that confuses the two
/// address spaces in SET_VRING_ADDR fails loudly instead of working by accident.
///
/// With `Layout.q35` the RAM is split the way QEMU splits a q35 guest under 3 GiB. The first
/// region is gpa 0 to 0xa0000. Then comes a hole for VGA and the BIOS. The second region is
/// gpa 0xc0000 to the end, at `mmap_offset` 0xc0000 in the same memfd. That is the layout seen
/// in `proxy-boot-qemu72.log`, and it exercises multi-region translation and nonzero offsets.
///
/// `allocate` carves rings, request headers and data buffers out of the RAM with a bump
/// pointer that never crosses the hole. Tests use it for hostile descriptor tables too.
public final class GuestRAM: Sendable {
    /// How the memfd is cut into regions.
    public enum Layout: Sendable {
        /// One region: gpa 0 to `sizeBytes`.
        case contiguous
        /// Two regions around the legacy VGA/BIOS hole, as QEMU lays out a q35 guest.
        case q35
    }

    /// Where region frontend addresses start: `user_addr = frontendBase + gpa`.
    public static let frontendBase: UInt64 = 0x7f00_0000_0000
    /// End of the low region in the q35 layout (the VGA window starts here).
    public static let lowRegionEnd: UInt64 = 0xa_0000
    /// Start of the high region in the q35 layout (end of the BIOS area).
    public static let highRegionStart: UInt64 = 0xc_0000
    /// The first address `allocate` hands out. Keeping gpa 0 out of use makes a backend that
    /// reads "address 0" read something nobody wrote.
    public static let allocationStart: UInt64 = 0x1000
    /// The smallest RAM we build: a page above the q35 high region start.
    public static let sizeBytesMin: UInt64 = highRegionStart + 0x1000

    public let sizeBytes: UInt64
    public let layout: Layout
    /// The regions as the backend sees them, mapped in this process.
    public let memory: GuestMemoryMap
    /// The memfd that backs every region. It goes with each ADD_MEM_REG and SET_MEM_TABLE.
    public let file: SharedFileDescriptor
    private let cursor: Mutex<UInt64>

    /// Creates `sizeBytes` of guest RAM (a multiple of 4 KiB, at least `sizeBytesMin`).
    public init(sizeBytes: UInt64, layout: Layout = .q35, name: String = "memx-guest-ram") throws(FrontendError) {
        guard sizeBytes >= Self.sizeBytesMin, sizeBytes % 4096 == 0, sizeBytes <= UInt64(Int.max) else {
            throw .invalidArgument(
                "guest RAM size \(sizeBytes) must be a multiple of 4096 and ≥ \(Self.sizeBytesMin)")
        }
        let fd: FileDescriptor
        do {
            fd = try MemFD.create(name: name, size: Int(sizeBytes))
        } catch {
            throw .socket(operation: "memfd_create for guest RAM", errno: error)
        }
        var regions: [GuestMemoryRegion] = []
        do {
            for regionLayout in Self.regionLayouts(sizeBytes: sizeBytes, layout: layout) {
                regions.append(try GuestMemoryRegion(layout: regionLayout, fd: fd))
            }
            memory = try GuestMemoryMap(regions: regions)
        } catch {
            throw .guestMemory(error)
        }
        self.sizeBytes = sizeBytes
        self.layout = layout
        self.file = SharedFileDescriptor(fd)
        self.cursor = Mutex(Self.allocationStart)
    }

    /// The region descriptions for a layout: what ADD_MEM_REG/SET_MEM_TABLE send.
    public static func regionLayouts(sizeBytes: UInt64, layout: Layout) -> [MemoryRegionLayout] {
        func region(_ gpa: UInt64, _ size: UInt64) -> MemoryRegionLayout {
            MemoryRegionLayout(guestAddress: GuestAddress(gpa), size: size,
                               frontendAddress: FrontendAddress(frontendBase + gpa), mmapOffset: gpa)
        }
        switch layout {
        case .contiguous:
            return [region(0, sizeBytes)]
        case .q35:
            return [region(0, lowRegionEnd), region(highRegionStart, sizeBytes - highRegionStart)]
        }
    }

    /// The regions, sorted by guest address.
    public var regionLayouts: [MemoryRegionLayout] { memory.regions.map(\.layout) }

    /// Bytes of guest RAM that are actually RAM (the q35 hole is not).
    public var usableBytes: UInt64 { regionLayouts.reduce(0) { $0 + $1.size } }

    /// The frontend virtual address of `address`. This is what SET_VRING_ADDR carries.
    public func frontendAddress(of address: GuestAddress) -> FrontendAddress {
        FrontendAddress(Self.frontendBase + address.rawValue)
    }

    /// Reserves `bytes` of guest RAM aligned to `alignment` (a power of two) inside one region,
    /// and returns its guest address. The memory is zeroed on first use, because the memfd
    /// starts as zeroes. Allocations are never freed: size the RAM for the whole session.
    public func allocate(bytes: UInt64, alignment: UInt64 = 64) throws(FrontendError) -> GuestAddress {
        guard bytes > 0, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw .invalidArgument("allocation of \(bytes) bytes aligned to \(alignment)")
        }
        let regions = regionLayouts
        let result: Result<GuestAddress, FrontendError> = cursor.withLock { cursor in
            for region in regions where region.guestEnd > cursor {
                let start = max(cursor, region.guestAddress.rawValue)
                let aligned = (start + alignment - 1) & ~(alignment - 1)
                if aligned >= region.guestAddress.rawValue, aligned <= region.guestEnd,
                   bytes <= region.guestEnd - aligned {
                    cursor = aligned + bytes
                    return .success(GuestAddress(aligned))
                }
            }
            return .failure(.guestRAMExhausted(requestedBytes: bytes, cursor: GuestAddress(cursor)))
        }
        return try result.get()
    }

    /// Bytes `allocate` has not handed out yet (counting the q35 hole as used).
    public var remainingBytes: UInt64 { sizeBytes - min(sizeBytes, cursor.withLock { $0 }) }

    /// Copies guest bytes at `address` into a new array (tests).
    public func read(_ address: GuestAddress, count: Int) throws(FrontendError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let result = bytes.withUnsafeMutableBytes { raw in
            Result { () throws(GuestMemoryError) in try memory.read(address, into: raw) }
        }
        do { try result.get() } catch { throw .guestMemory(error) }
        return bytes
    }

    /// Copies `bytes` into guest memory at `address` (tests, hostile descriptor tables).
    public func write(_ address: GuestAddress, _ bytes: [UInt8]) throws(FrontendError) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(GuestMemoryError) in try memory.write(address, from: raw) }
        }
        do { try result.get() } catch { throw .guestMemory(error) }
    }
}
