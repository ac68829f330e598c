/// Something a `RemoteVolume` tells its operator (memx-vhost logs it): failures it handled and
/// the progress of re-replication.
public struct VolumeEvent: Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// A server was marked down, a group cannot get all its copies, a repair failed.
        case problem
        /// Re-replication progress.
        case progress
    }

    public var kind: Kind
    public var message: String

    public var description: String { message }
}
