import Glibc

/// A pthread mutex with condition variables that wait against the monotonic clock: the
/// blocking primitive of the client (a caller sleeps on its request's condition until the
/// receiver thread completes it or the deadline passes). `Synchronization.Mutex` has no
/// condition variables, hence this small wrapper.
///
/// Storage is allocated once, so the lock never moves while threads block on it.
final class PosixLock: @unchecked Sendable {
    // SAFETY: the mutex lives at a fixed heap address for the object's lifetime and is only
    // used through pthread calls, which are thread-safe by definition.
    fileprivate let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` with the lock held.
    @inline(__always)
    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// A condition variable bound to one `PosixLock`, timed against `CLOCK_MONOTONIC` so a wall
/// clock step never stretches or cuts a request timeout.
final class PosixCondition: @unchecked Sendable {
    // SAFETY: as `PosixLock`: fixed address, pthread calls only.
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    /// Waits (the caller holds `lock`) until signalled; spurious wake-ups are possible.
    func wait(_ lock: PosixLock) { pthread_cond_wait(condition, lock.mutex) }

    /// Waits until signalled or `deadline` passes; returns false on timeout.
    @discardableResult
    func wait(_ lock: PosixLock, until deadline: MonotonicInstant) -> Bool {
        var time = timespec(tv_sec: Int(deadline.nanoseconds / 1_000_000_000),
                            tv_nsec: Int(deadline.nanoseconds % 1_000_000_000))
        return pthread_cond_timedwait(condition, lock.mutex, &time) != ETIMEDOUT
    }

    func signal() { pthread_cond_signal(condition) }
    func broadcast() { pthread_cond_broadcast(condition) }
}

/// A point on `CLOCK_MONOTONIC`, in nanoseconds: deadlines and latencies.
struct MonotonicInstant: Comparable, Sendable {
    var nanoseconds: UInt64

    static var now: MonotonicInstant {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return MonotonicInstant(nanoseconds: UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec))
    }

    func adding(milliseconds: Int) -> MonotonicInstant {
        MonotonicInstant(nanoseconds: nanoseconds + UInt64(max(0, milliseconds)) * 1_000_000)
    }

    /// Whole milliseconds from this instant to now.
    var millisecondsElapsed: UInt64 { (MonotonicInstant.now.nanoseconds - nanoseconds) / 1_000_000 }

    static func < (a: MonotonicInstant, b: MonotonicInstant) -> Bool { a.nanoseconds < b.nanoseconds }
}
