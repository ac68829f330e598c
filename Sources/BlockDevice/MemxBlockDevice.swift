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
    public let store: any PageStore
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
        self.store = store
        var serial = Array(configuration.serial.utf8.prefix(BlockDeviceConfiguration.serialBytesMax))
        serial += [UInt8](repeating: 0, count: BlockDeviceConfiguration.serialBytesMax - serial.count)
        serialBytes = serial
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
}
