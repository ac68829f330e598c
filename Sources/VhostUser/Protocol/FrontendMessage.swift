import GuestMemory

/// A decoded front-end message: the request and its payload as plain values. File descriptors
/// travel beside it (`ReceivedFileDescriptors`), not inside.
public enum FrontendMessage: Equatable, Sendable {
    case getFeatures
    case setFeatures(UInt64)
    case setOwner
    case resetOwner
    case setMemTable([MemoryRegionLayout])
    case setLogBase(LogArea)
    case setLogFD
    case setVringNum(VringState)
    case setVringAddr(VringAddress)
    case setVringBase(VringState)
    case getVringBase(VringState)
    case setVringKick(VringDescriptorPayload)
    case setVringCall(VringDescriptorPayload)
    case setVringErr(VringDescriptorPayload)
    case getProtocolFeatures
    case setProtocolFeatures(UInt64)
    case getQueueNum
    case setVringEnable(VringState)
    case setBackendReqFD
    case getConfig(ConfigAccess)
    case setConfig(ConfigAccess)
    case getInflightFD(InflightArea)
    case setInflightFD(InflightArea)
    case resetDevice
    case getMaxMemSlots
    case addMemReg(MemoryRegionLayout)
    case remMemReg(MemoryRegionLayout)
    case setStatus(UInt64)
    case getStatus
    /// A known request this backend does not implement (its payload is ignored).
    case unsupported(FrontendRequest)

    /// The request code.
    public var request: FrontendRequest {
        switch self {
        case .getFeatures: .getFeatures
        case .setFeatures: .setFeatures
        case .setOwner: .setOwner
        case .resetOwner: .resetOwner
        case .setMemTable: .setMemTable
        case .setLogBase: .setLogBase
        case .setLogFD: .setLogFD
        case .setVringNum: .setVringNum
        case .setVringAddr: .setVringAddr
        case .setVringBase: .setVringBase
        case .getVringBase: .getVringBase
        case .setVringKick: .setVringKick
        case .setVringCall: .setVringCall
        case .setVringErr: .setVringErr
        case .getProtocolFeatures: .getProtocolFeatures
        case .setProtocolFeatures: .setProtocolFeatures
        case .getQueueNum: .getQueueNum
        case .setVringEnable: .setVringEnable
        case .setBackendReqFD: .setBackendReqFD
        case .getConfig: .getConfig
        case .setConfig: .setConfig
        case .getInflightFD: .getInflightFD
        case .setInflightFD: .setInflightFD
        case .resetDevice: .resetDevice
        case .getMaxMemSlots: .getMaxMemSlots
        case .addMemReg: .addMemReg
        case .remMemReg: .remMemReg
        case .setStatus: .setStatus
        case .getStatus: .getStatus
        case .unsupported(let request): request
        }
    }
}
