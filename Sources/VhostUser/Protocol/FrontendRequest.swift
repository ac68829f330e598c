/// Front-end message types (vhost-user spec, "Front-end message types"). Names drop the
/// `VHOST_USER_` prefix and follow Swift case; each raw value is the wire code.
public enum FrontendRequest: UInt32, Sendable, CustomStringConvertible {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFD = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case sendRARP = 19
    case netSetMTU = 20
    case setBackendReqFD = 21
    case iotlbMsg = 22
    case setVringEndian = 23
    case getConfig = 24
    case setConfig = 25
    case createCryptoSession = 26
    case closeCryptoSession = 27
    case postcopyAdvise = 28
    case postcopyListen = 29
    case postcopyEnd = 30
    case getInflightFD = 31
    case setInflightFD = 32
    case gpuSetSocket = 33
    case resetDevice = 34
    case vringKick = 35
    case getMaxMemSlots = 36
    case addMemReg = 37
    case remMemReg = 38
    case setStatus = 39
    case getStatus = 40

    public var description: String {
        switch self {
        case .getFeatures: "GET_FEATURES"
        case .setFeatures: "SET_FEATURES"
        case .setOwner: "SET_OWNER"
        case .resetOwner: "RESET_OWNER"
        case .setMemTable: "SET_MEM_TABLE"
        case .setLogBase: "SET_LOG_BASE"
        case .setLogFD: "SET_LOG_FD"
        case .setVringNum: "SET_VRING_NUM"
        case .setVringAddr: "SET_VRING_ADDR"
        case .setVringBase: "SET_VRING_BASE"
        case .getVringBase: "GET_VRING_BASE"
        case .setVringKick: "SET_VRING_KICK"
        case .setVringCall: "SET_VRING_CALL"
        case .setVringErr: "SET_VRING_ERR"
        case .getProtocolFeatures: "GET_PROTOCOL_FEATURES"
        case .setProtocolFeatures: "SET_PROTOCOL_FEATURES"
        case .getQueueNum: "GET_QUEUE_NUM"
        case .setVringEnable: "SET_VRING_ENABLE"
        case .sendRARP: "SEND_RARP"
        case .netSetMTU: "NET_SET_MTU"
        case .setBackendReqFD: "SET_BACKEND_REQ_FD"
        case .iotlbMsg: "IOTLB_MSG"
        case .setVringEndian: "SET_VRING_ENDIAN"
        case .getConfig: "GET_CONFIG"
        case .setConfig: "SET_CONFIG"
        case .createCryptoSession: "CREATE_CRYPTO_SESSION"
        case .closeCryptoSession: "CLOSE_CRYPTO_SESSION"
        case .postcopyAdvise: "POSTCOPY_ADVISE"
        case .postcopyListen: "POSTCOPY_LISTEN"
        case .postcopyEnd: "POSTCOPY_END"
        case .getInflightFD: "GET_INFLIGHT_FD"
        case .setInflightFD: "SET_INFLIGHT_FD"
        case .gpuSetSocket: "GPU_SET_SOCKET"
        case .resetDevice: "RESET_DEVICE"
        case .vringKick: "VRING_KICK"
        case .getMaxMemSlots: "GET_MAX_MEM_SLOTS"
        case .addMemReg: "ADD_MEM_REG"
        case .remMemReg: "REM_MEM_REG"
        case .setStatus: "SET_STATUS"
        case .getStatus: "GET_STATUS"
        }
    }
}

/// Protocol feature bits (vhost-user spec, "Protocol features").
public struct ProtocolFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    init(bit: Int) { rawValue = 1 << UInt64(bit) }

    public static let multiQueue = ProtocolFeatures(bit: 0)          // VHOST_USER_PROTOCOL_F_MQ
    public static let logSharedMemory = ProtocolFeatures(bit: 1)     // LOG_SHMFD
    public static let replyAck = ProtocolFeatures(bit: 3)            // REPLY_ACK
    public static let backendRequest = ProtocolFeatures(bit: 5)      // BACKEND_REQ
    public static let config = ProtocolFeatures(bit: 9)              // CONFIG
    public static let inflightSharedMemory = ProtocolFeatures(bit: 12) // INFLIGHT_SHMFD
    public static let resetDevice = ProtocolFeatures(bit: 13)        // RESET_DEVICE
    public static let configureMemSlots = ProtocolFeatures(bit: 15)  // CONFIGURE_MEM_SLOTS

    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// Hard limits of the vhost-user codec and session, each with its reason (style rule 4).
public enum VhostUserLimits {
    /// Largest payload we accept: the biggest real one is SET_MEM_TABLE with 8 regions
    /// (8 + 8·32 = 264 bytes) or GET_CONFIG with 256 bytes of config (268 bytes); QEMU's own
    /// payload union is smaller than 4 KiB, so anything bigger is garbage.
    public static let payloadBytesMax = 4096
    /// Memory slots we offer with CONFIGURE_MEM_SLOTS (kernel vhost parity; virtio-mem).
    public static let memorySlotsMax: UInt64 = 509
    /// Regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS).
    public static let memTableRegionsMax = 8
    /// Config space bytes one GET/SET_CONFIG may move (spec: VHOST_USER_MAX_CONFIG_SIZE).
    public static let configBytesMax = 256
    /// Largest dirty log we map: one bit per 4 KiB page of up to 16 TiB of guest RAM.
    public static let logBytesMax: UInt64 = 1 << 29
}
