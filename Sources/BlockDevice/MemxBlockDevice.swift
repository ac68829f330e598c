import GuestMemory
import Logging
import RemoteMem
import Synchronization
import VhostUser
import Virtio

/// A MemX virtio-blk disk: its features and configuration space for the vhost-user layer, and a
/// request handler per queue that serves guest requests from a `PageStore`.
public final class MemxBlockDevice: VhostUserDevice {
    public let configuration: BlockDeviceConfiguration
    /// The store requests go to: fixed, or the one `leased` serves from while active (an
    /// `UnavailablePageStore` while it is not: no queue runs then, except a fenced one).
    public var store: any PageStore { currentStore.withLock { $0 } }
    private let currentStore: Mutex<any PageStore>
    /// A volume whose lease moves with the VM (memory servers); nil for a fixed store.
    public let leased: LeasedPageStore?
    /// The guest's write-cache choice (`wce`, toggled through SET_CONFIG). MemX stores are
    /// write-back by design, so it starts enabled; the flag is kept and reported, and FLUSH is
    /// honoured either way.
    private let writeCache = Atomic<Bool>(true)
    /// Bytes of the serial, padded with zeros to 20 (NUL-terminated only if shorter).
    let serialBytes: [UInt8]

    /// Where failed requests are reported (sparingly: a failing store must not flood the log).
    let logger: Logger
    /// Store failures so far, across queues (the first 10 and every 1000th are logged).
    let storeFailures = Atomic<Int>(0)

    /// Page-store operations that failed so far (each answered IOERR to the guest).
    public var storeFailureCount: Int { storeFailures.load(ordering: .relaxed) }

    public init(configuration: BlockDeviceConfiguration, store: any PageStore,
                logger: Logger = Logger(label: "memx.block")) {
        self.logger = logger
        precondition(store.capacityBytes == configuration.capacityBytes, "store and device disagree on size")
        self.configuration = configuration
        self.currentStore = Mutex(store)
        self.leased = nil
        serialBytes = Self.paddedSerial(configuration.serial)
    }

    /// A device on memory servers whose volume follows live migrations (see `LeasedPageStore`).
    public init(configuration: BlockDeviceConfiguration, leased: LeasedPageStore,
                logger: Logger = Logger(label: "memx.block")) {
        precondition(leased.capacityBytes == configuration.capacityBytes, "store and device disagree on size")
        self.logger = logger
        self.configuration = configuration
        self.leased = leased
        let standby = UnavailablePageStore(capacityBytes: leased.capacityBytes,
                                           reason: "the volume is not active on this backend (standby)")
        self.currentStore = Mutex(leased.serving ?? standby)
        serialBytes = Self.paddedSerial(configuration.serial)
    }

    static func paddedSerial(_ serial: String) -> [UInt8] {
        var bytes = Array(serial.utf8.prefix(BlockDeviceConfiguration.serialBytesMax))
        bytes += [UInt8](repeating: 0, count: BlockDeviceConfiguration.serialBytesMax - bytes.count)
        return bytes
    }

    public var features: VirtioFeatures { configuration.features }
    public var queueCountMax: Int { configuration.queueCount }
    public var writeCacheEnabled: Bool { writeCache.load(ordering: .relaxed) }

    public func configSpace() -> [UInt8] {
        configuration.configSpace(writeCacheEnabled: writeCacheEnabled).encoded()
    }

    public func writeConfig(offset: Int, bytes: [UInt8]) -> String? {
        // Only `wce` is driver-writable (VIRTIO 1.2 §5.2.4).
        guard offset == BlockConfigSpace.writeCacheOffset, bytes.count == 1, bytes[0] <= 1 else {
            return "only the 1-byte wce field at offset \(BlockConfigSpace.writeCacheOffset) is writable"
        }
        writeCache.store(bytes[0] == 1, ordering: .relaxed)
        return nil
    }

    public func makeRequestHandler(queueIndex: Int) -> any VirtqueueRequestHandler {
        BlockRequestHandler(device: self)
    }

    // MARK: - Lifecycle (live migration, research/vhost-user.md §5)

    public func activate(afterHandoff: Bool) {
        guard let leased else { return }
        let started = ContinuousClock.now
        do {
            let store = try leased.activate(afterHandoff: afterHandoff)
            currentStore.withLock { $0 = store }
            let how = afterHandoff ? " (taken back: the switchover did not complete)" : ""
            logger.notice("volume '\(leased.volume)' active here under lease epoch \(store.volume.epoch), taken in \(Self.millis(since: started)) ms\(how)")
        } catch {
            currentStore.withLock { $0 = UnavailablePageStore(capacityBytes: leased.capacityBytes, reason: "\(error)") }
            logger.error("volume '\(leased.volume)' cannot be served here: \(error); every request fails")
        }
    }

    public func deactivate(handoff: Bool) {
        guard handoff, let leased, leased.serving != nil else { return }
        let started = ContinuousClock.now
        let failure = leased.handOff()
        currentStore.withLock {
            $0 = UnavailablePageStore(capacityBytes: leased.capacityBytes, reason: "the volume was handed off at a migration switchover")
        }
        if let failure {
            logger.error("migration switchover: writing back volume '\(leased.volume)' failed: \(failure); its lease is released anyway")
        } else {
            logger.notice("migration switchover: volume '\(leased.volume)' written back and its lease released in \(Self.millis(since: started)) ms")
        }
    }

    public func migrationLoggingChanged(_ on: Bool) {
        guard let leased else { return }
        leased.migrationLogging(on)
        logger.notice(on ? "migration started: writes go through to the memory servers until the switchover"
                         : "migration ended without a switchover: write-back again")
    }

    static func millis(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = start.duration(to: .now).components
        return elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000
    }
}
