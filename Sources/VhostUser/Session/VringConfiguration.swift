import GuestMemory
import LinuxSystem
import Virtio

/// What the frontend has told us about one vring, accumulated across SET_VRING_* messages.
/// A ring starts when its kick arrives (spec, "Ring states") and stops at GET_VRING_BASE; its
/// configuration survives a stop, because QEMU re-sends only what changed.
public struct VringConfiguration: Sendable {
    public var size: UInt16?
    public var base: UInt16 = 0
    public var address: VringAddress?
    public var kick: EventNotifier?
    /// True when SET_VRING_KICK said "no fd": the ring is polled instead.
    public var kickPolled = false
    public var call: EventNotifier?
    public var error: EventNotifier?
    public var enabled = false
    public var started = false

    public init() {}
}

/// Everything a data thread needs to start serving a ring. Sendable: it crosses from the
/// control thread to the data thread once.
public struct VringStart: Sendable {
    public var index: Int
    public var layout: SplitQueueLayout
    public var base: UInt16
    public var eventIndex: Bool
    public var kick: EventNotifier?
    public var call: EventNotifier?
    public var enabled: Bool
    public var memory: GuestMemoryMap
    public var log: DirtyLog?
    public var inflight: InflightQueue?
    /// Signalled when the driver breaks the ring (SET_VRING_ERR); QEMU reports it.
    public var error: EventNotifier?

    public init(index: Int, layout: SplitQueueLayout, base: UInt16, eventIndex: Bool, kick: EventNotifier?,
                call: EventNotifier?, enabled: Bool, memory: GuestMemoryMap, log: DirtyLog?, inflight: InflightQueue?,
                error: EventNotifier? = nil) {
        self.index = index
        self.layout = layout
        self.base = base
        self.eventIndex = eventIndex
        self.kick = kick
        self.call = call
        self.enabled = enabled
        self.memory = memory
        self.log = log
        self.inflight = inflight
        self.error = error
    }
}
