import CMemxShims
import Glibc

/// A joinable OS thread. Data-path threads are plain pthreads: no Swift concurrency hops per
/// request (design brief §3).
public final class OSThread: @unchecked Sendable {
    // SAFETY: `handle` is written once in `start` before any other thread can see `self`, and
    // read only by `join`, which callers invoke once from the owning thread.
    private var handle: pthread_t = pthread_t()
    private var joined = false

    private final class Box {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) { self.name = name; self.body = body }
    }

    /// Starts `body` on a new thread named `name` (visible in `top -H`).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(Errno) {
        let box = Unmanaged.passRetained(Box(name: name, body: body))
        let rc = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            memx_set_thread_name(box.name)
            box.body()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw Errno(rawValue: rc)
        }
    }

    /// Waits for the thread to finish. Idempotent.
    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(handle, nil)
    }
}
