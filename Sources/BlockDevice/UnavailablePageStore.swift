import RemoteMem

/// The store of a device that must not serve now: a standby migration destination before its
/// rings start, a source after the switchover, a backend fenced by another. Every operation
/// fails with `.busy(reason)` (IOERR to the guest), so nothing is read or written by mistake.
final class UnavailablePageStore: PageStore {
    let capacityBytes: UInt64
    let reason: String

    init(capacityBytes: UInt64, reason: String) {
        self.capacityBytes = capacityBytes
        self.reason = reason
    }

    func read(at offset: UInt64, into destination: UnsafeMutableRawBufferPointer) throws(PageStoreError) { throw .busy(reason) }
    func write(at offset: UInt64, from source: UnsafeRawBufferPointer) throws(PageStoreError) { throw .busy(reason) }
    func discard(at offset: UInt64, length: UInt64) throws(PageStoreError) { throw .busy(reason) }
    func flush() throws(PageStoreError) { throw .busy(reason) }
    var residentBytes: UInt64 { 0 }
}
