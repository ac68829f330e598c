import GuestMemory
import LinuxSystem
import Virtio

/// The errors the Swift vhost-user frontend (`FrontendClient`, `BlockQueueClient`, `GuestRAM`)
/// throws.
///
/// Each case names the side that is to blame and carries enough detail for a test failure
/// message to stand on its own. The frontend is QEMU's side and runs in tests and memx-bench.
/// None of these errors ever come from the backend's data path.
public enum FrontendError: Error, Equatable, Sendable, CustomStringConvertible {
    // MARK: Socket

    /// `connect(2)` to the backend's socket failed: it does not exist, or nobody is listening.
    case connectFailed(path: String, errno: Errno)
    /// A send or receive on the control socket failed for a reason other than a hang-up.
    case socket(operation: String, errno: Errno)
    /// The backend closed the control socket. `context` says what we were doing at the time.
    case disconnected(context: String)
    /// The backend did not answer within the reply timeout.
    case timedOut(context: String, milliseconds: Int)

    // MARK: Protocol

    /// A reply with the wrong request code, or flags other than exactly 0x5 (QEMU 7.2 rejects
    /// those as well).
    case unexpectedReply(expected: String, header: MessageHeader)
    /// A reply payload that does not have the size its request type requires.
    case badReplyPayload(request: String, size: Int, expected: String)
    /// A REPLY_ACK with a nonzero status: the backend refused the request.
    case negativeAcknowledgement(request: String, status: UInt64)
    /// The backend does not offer something this frontend needs (for example `CONFIG` or
    /// `VERSION_1`).
    case missingFeature(String)
    /// The backend's GET_CONFIG answer was unusable, for example size 0 (the backend's error
    /// signal) or a size other than the one requested.
    case badConfig(String)

    // MARK: Caller

    /// An argument outside what the frontend supports, such as a queue size that is not a
    /// power of two.
    case invalidArgument(String)
    /// A call made in the wrong state, such as `start` before `negotiate`.
    case invalidState(String)
    /// The frontend's own guest RAM is too small for what was asked of it.
    case guestRAMExhausted(requestedBytes: UInt64, cursor: GuestAddress)
    /// A guest memory access the frontend made itself failed. This is a bug in the frontend or
    /// in a test's addresses.
    case guestMemory(GuestMemoryError)
    /// Every request slot (or every descriptor) of the queue is in use.
    case queueFull(queue: Int)

    // MARK: Data path

    /// No completion arrived in time. The backend lost the request or stalled.
    case completionTimeout(queue: Int, outstanding: Int, milliseconds: Int)
    /// The used ring advanced but the backend never signalled the call eventfd, although the
    /// driver had asked for an interrupt (EVENT_IDX `used_event`, or no NO_INTERRUPT flag).
    case missedNotification(queue: Int, usedIndex: UInt16, lastSeen: UInt16)
    /// The backend put something impossible in the used ring, such as a head we never made
    /// available or the same head twice.
    case badCompletion(queue: Int, String)

    public var description: String {
        switch self {
        case .connectFailed(let path, let errno): "cannot connect to \(path): \(errno)"
        case .socket(let operation, let errno): "\(operation) failed: \(errno)"
        case .disconnected(let context): "backend disconnected (\(context))"
        case .timedOut(let context, let ms): "no reply from the backend within \(ms) ms (\(context))"
        case .unexpectedReply(let expected, let header):
            "expected a \(expected) reply, got request \(Self.requestName(header.request)) "
                + "flags 0x\(String(header.flags, radix: 16)) size \(header.size)"
        case .badReplyPayload(let request, let size, let expected):
            "\(request) reply payload of \(size) bytes, expected \(expected)"
        case .negativeAcknowledgement(let request, let status):
            "backend refused \(request) (REPLY_ACK status \(status))"
        case .missingFeature(let what): "backend does not offer \(what)"
        case .badConfig(let why): "bad GET_CONFIG reply: \(why)"
        case .invalidArgument(let why): "invalid argument: \(why)"
        case .invalidState(let why): "invalid state: \(why)"
        case .guestRAMExhausted(let requested, let cursor):
            "guest RAM exhausted: \(requested) bytes requested at \(cursor)"
        case .guestMemory(let error): "frontend guest memory access: \(error)"
        case .queueFull(let queue): "queue \(queue) has no free request slot or descriptors"
        case .completionTimeout(let queue, let outstanding, let ms):
            "queue \(queue): \(outstanding) request(s) not completed within \(ms) ms"
        case .missedNotification(let queue, let used, let lastSeen):
            "queue \(queue): used index moved from \(lastSeen) to \(used) but the call eventfd was never signalled"
        case .badCompletion(let queue, let why): "queue \(queue): bad used element: \(why)"
        }
    }

    static func requestName(_ code: UInt32) -> String {
        FrontendRequest(rawValue: code)?.description ?? "\(code)"
    }

    /// Maps a socket `Errno` to a frontend error. Timeouts and hang-ups get their own cases.
    static func fromSocket(_ errno: Errno, operation: String, timeoutMillis: Int) -> FrontendError {
        switch errno {
        case .wouldBlock: .timedOut(context: operation, milliseconds: timeoutMillis)
        case .connectionReset, .brokenPipe: .disconnected(context: operation)
        default: .socket(operation: operation, errno: errno)
        }
    }
}
