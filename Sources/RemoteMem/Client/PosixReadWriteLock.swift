import Glibc

/// A pthread reader–writer lock: many holders share it, one excludes them all. Writes to a
/// volume share it; copying a page group to a new replica takes it exclusively, chunk by
/// chunk, so no write can land between the copy's read from the old replica and its write to
/// the new one.
final class PosixReadWriteLock: @unchecked Sendable {
    // SAFETY: the lock lives at a fixed heap address for the object's lifetime and is only
    // used through pthread calls, which are thread-safe by definition.
    private let rwlock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        rwlock = .allocate(capacity: 1)
        rwlock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(rwlock, nil)
    }

    deinit {
        pthread_rwlock_destroy(rwlock)
        rwlock.deallocate()
    }

    @inline(__always) func lockShared() { pthread_rwlock_rdlock(rwlock) }
    @inline(__always) func lockExclusive() { pthread_rwlock_wrlock(rwlock) }
    @inline(__always) func unlock() { pthread_rwlock_unlock(rwlock) }
}
