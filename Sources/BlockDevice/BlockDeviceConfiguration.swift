import RemoteMem
import Virtio

/// The guest-visible shape of a MemX disk, validated once at start-up.
public struct BlockDeviceConfiguration: Sendable, Equatable {
    /// Bytes per sector in request headers: always 512 (VIRTIO 1.2 §5.2.6).
    public static let sectorBytes: UInt64 = 512
    /// Segments per request we advertise (`seg_max`): 128 descriptors minus header and status,
    /// the value every peer uses; Linux sizes its scatter lists from it.
    public static let segmentsMax: UInt32 = 126
    /// Bytes per segment (`size_max`).
    public static let segmentBytesMax: UInt32 = 1 << 20
    /// Sectors one DISCARD / WRITE_ZEROES range may cover (2 GiB).
    public static let discardSectorsMax: UInt32 = 1 << 22
    /// Ranges per DISCARD / WRITE_ZEROES request.
    public static let discardSegmentsMax: UInt32 = 1
    /// Bytes GET_ID returns at most (VIRTIO_BLK_ID_BYTES).
    public static let serialBytesMax = 20
    /// Queues a device offers at most (GET_QUEUE_NUM): enough for one per vCPU on big guests.
    public static let queueCountMax = 64

    public var capacityBytes: UInt64
    public var queueCount: Int
    public var readOnly: Bool
    public var serial: String

    public init(capacityBytes: UInt64, queueCount: Int, readOnly: Bool, serial: String) {
        self.capacityBytes = capacityBytes
        self.queueCount = queueCount
        self.readOnly = readOnly
        self.serial = serial
    }

    /// Checks every field; returns a one-line reason for the first bad one.
    public func validationError() -> String? {
        if capacityBytes == 0 || capacityBytes % PageStoreLimits.pageSize != 0 {
            return "size must be a positive multiple of 4 KiB"
        }
        if capacityBytes > PageStoreLimits.capacityBytesMax { return "size must be at most 64 TiB" }
        if queueCount < 1 || queueCount > Self.queueCountMax { return "queues must be between 1 and \(Self.queueCountMax)" }
        if serial.utf8.count > Self.serialBytesMax { return "serial must be at most \(Self.serialBytesMax) bytes" }
        return nil
    }

    public var capacitySectors: UInt64 { capacityBytes / Self.sectorBytes }

    /// Feature bits the device offers.
    public var features: VirtioFeatures {
        var features: VirtioFeatures = [.blockSizeMax, .blockSegmentMax, .blockBlockSize, .blockTopology,
                                        .blockFlush, .blockConfigWCE, .blockMultiQueue]
        if readOnly {
            features.insert(.blockReadOnly)
        } else {
            features.formUnion([.blockDiscard, .blockWriteZeroes])
        }
        return features
    }

    /// The configuration space with write cache `wce`.
    public func configSpace(writeCacheEnabled: Bool) -> BlockConfigSpace {
        BlockConfigSpace(
            capacitySectors: capacitySectors, sizeMax: Self.segmentBytesMax, segMax: Self.segmentsMax,
            blockSize: UInt32(Self.sectorBytes),
            // 4 KiB physical blocks (2^3 logical): pages are the store's unit.
            physicalBlockExponent: 3, alignmentOffset: 0, minIOSize: 8, optIOSize: 0,
            writeCacheEnabled: writeCacheEnabled, numQueues: UInt16(queueCount),
            maxDiscardSectors: Self.discardSectorsMax, maxDiscardSegments: Self.discardSegmentsMax,
            discardSectorAlignment: UInt32(PageStoreLimits.pageSize / Self.sectorBytes),
            maxWriteZeroesSectors: Self.discardSectorsMax, maxWriteZeroesSegments: Self.discardSegmentsMax,
            writeZeroesMayUnmap: true)
    }
}
