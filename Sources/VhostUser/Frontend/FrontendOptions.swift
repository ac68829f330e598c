import Virtio

/// How the Swift frontend negotiates with a backend and how long it waits for it.
///
/// The defaults reproduce what QEMU 7.2 does for `vhost-user-blk-pci`: the same protocol
/// features, the same device and ring bits, and NEED_REPLY only where QEMU sets it. Tests tighten
/// or loosen single fields, for example `acknowledgement = .everyMessage` to catch a refused
/// request at the message that caused it.
public struct FrontendOptions: Sendable {
    /// When the frontend sets NEED_REPLY on messages that do not reply by themselves.
    public enum Acknowledgement: Sendable {
        /// Only where QEMU 7.2 sets it for a block device without migration: ADD_MEM_REG and
        /// SET_MEM_TABLE. `start` then ends with a GET_FEATURES round trip, which is QEMU's own
        /// `enforce_reply` barrier.
        case likeQEMU
        /// On every message once REPLY_ACK is negotiated, so that the first refused request
        /// throws `negativeAcknowledgement` right away.
        case everyMessage
    }

    /// The protocol features we ask for; the negotiated set is this AND the backend's set,
    /// as QEMU computes it. BACKEND_REQ is left out because this frontend does not serve a
    /// backend-request socket.
    public var protocolFeatures: ProtocolFeatures = [
        .multiQueue, .logSharedMemory, .replyAck, .config, .inflightSharedMemory, .configureMemSlots,
    ]

    /// The virtio feature bits we ack when the backend offers them. This is QEMU 7.2's
    /// `user_feature_bits` for vhost-user-blk without the packed ring, IOMMU_PLATFORM and
    /// RING_RESET, which QEMU does not turn on by default.
    /// `VHOST_USER_F_PROTOCOL_FEATURES` is added on its own and `LOG_ALL` is never acked.
    public var virtioFeatures: VirtioFeatures = [
        .version1, .indirectDescriptors, .eventIndex, .notifyOnEmpty,
        .blockSizeMax, .blockSegmentMax, .blockGeometry, .blockReadOnly, .blockBlockSize, .blockFlush,
        .blockTopology, .blockConfigWCE, .blockMultiQueue, .blockDiscard, .blockWriteZeroes,
    ]

    /// How long any single reply (or socket send) may take before `timedOut` is thrown.
    public var replyTimeout: Duration = .seconds(5)

    public var acknowledgement: Acknowledgement = .likeQEMU

    /// Bytes requested by GET_CONFIG. QEMU asks for 36, 48 or 57, depending on whether the
    /// discard and write-zeroes properties are on (both are by default).
    public var configSizeBytes: UInt32 = 57

    /// Whether `start` uses GET/SET_INFLIGHT_FD when INFLIGHT_SHMFD is negotiated.
    public var useInflight: Bool = true

    /// Whether `start` sends SET_VRING_ERR for each queue. QEMU sends it once per queue at
    /// init.
    public var sendVringErr: Bool = true

    /// Whether `start` ends with a GET_FEATURES round trip. The reply only comes after the
    /// backend has processed every earlier message, so a backend that dropped the connection
    /// because of one of them is noticed there.
    public var synchronizeAfterStart: Bool = true

    /// Forces SET_MEM_TABLE even when CONFIGURE_MEM_SLOTS is negotiated (QEMU never does this;
    /// it is for exercising the backend's SET_MEM_TABLE path).
    public var forceSetMemTable: Bool = false

    public init() {}

    /// The reply timeout in whole milliseconds (at least 1).
    var replyTimeoutMillis: Int { max(1, Int(replyTimeout.millisecondsRoundedUp)) }
}

extension Duration {
    /// The duration in milliseconds, rounded up so that a nonzero duration never becomes 0.
    var millisecondsRoundedUp: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}
