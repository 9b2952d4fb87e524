import Glibc
import Synchronization
import CSystem

/// Something registered with an event loop for readiness.
public protocol Selectable: AnyObject {
    var fd: Int32 { get }
    func readable()
    func writable()
}

/// A timer scheduled on a loop. Cancelling is O(1) (the heap drops it lazily).
public final class Timer: @unchecked Sendable {
    // Only touched on its loop's thread.
    fileprivate let deadline: UInt64
    fileprivate let order: UInt64
    fileprivate var action: (() -> Void)?
    fileprivate init(deadline: UInt64, order: UInt64, action: @escaping () -> Void) {
        self.deadline = deadline; self.order = order; self.action = action
    }
    public func cancel() { action = nil }
    public var isActive: Bool { action != nil }
}

/// Monotonic time in nanoseconds.
@inline(__always) public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Wall-clock time in Unix epoch milliseconds.
public func epochMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// One thread that waits for socket readiness, runs timers and runs jobs. It is also a
/// `SerialExecutor`: session actors use it as their executor, so a message read from a socket
/// on this thread reaches its session synchronously (`assumeIsolated`) — no hop, no Task.
public final class EventLoop: SerialExecutor, @unchecked Sendable {
    // Everything below except `queue` is confined to the loop thread.
    public let selector: Selector
    private var handlers: [Selectable?] = []
    private var events: [ReadinessEvent] = []
    private var timers: [Timer] = []
    private var timerOrder: UInt64 = 0
    private let queue = Locked<[Work]>([])
    /// The buffer `runQueue` ran last, emptied: it becomes the queue on the next swap.
    private var spareBatch: [Work] = []
    private let running = Locked<Bool>(false)
    /// The loop's thread (0 until it runs); read from any thread by `inLoop`.
    private let threadID = Atomic<UInt>(0)
    /// One read buffer shared by every connection of this loop: reads happen one at a time.
    public let readBuffer: UnsafeMutableRawBufferPointer
    /// Where TLS connections of this loop decrypt into.
    public let plainBuffer: UnsafeMutableRawBufferPointer
    /// Time at the start of the current iteration.
    public private(set) var now: UInt64 = monotonicNanos()
    /// Loop-local objects (shared zlib streams, caches) keyed by name.
    public var locals: [String: AnyObject] = [:]
    /// Called at the end of every iteration, after all ready I/O and jobs ran (loop thread).
    private var iterationHooks: [() -> Void] = []

    /// Adds a hook run at the end of every iteration (e.g. to start one group commit for
    /// everything the iteration produced). Loop thread only.
    public func onIterationEnd(_ hook: @escaping () -> Void) { iterationHooks.append(hook) }

    private enum Work: Sendable { case job(UnownedJob), closure(@Sendable () -> Void) }

    public init(selector: Selector? = nil, readBufferSize: Int = 256 << 10) throws(SystemError) {
        if let selector { self.selector = selector } else { self.selector = try EpollSelector() }
        readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readBufferSize, alignment: 16)
        plainBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readBufferSize, alignment: 16)
    }

    deinit { readBuffer.deallocate(); plainBuffer.deallocate() }

    /// Starts a thread running this loop.
    public static func spawn(name: String = "switchboard-loop") throws(SystemError) -> EventLoop {
        let loop = try EventLoop()
        let tid = try startThread(name: name) { loop.run() }
        pthread_detach(tid)
        // Wait until the loop has recorded its thread, so `inLoop` is right from now on.
        while !loop.running.withLock({ $0 }) { sched_yield() }
        return loop
    }

    public var inLoop: Bool {
        let t = threadID.load(ordering: .acquiring)
        return t != 0 && pthread_equal(pthread_t(t), pthread_self()) != 0
    }

    // MARK: SerialExecutor

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        push(.job(unowned))
    }

    public func checkIsolated() {
        precondition(inLoop, "not on the event loop thread")
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    // MARK: Jobs and timers

    /// Runs `body` on the loop thread (soon, in order with other submitted work).
    public func execute(_ body: @escaping @Sendable () -> Void) { push(.closure(body)) }

    private func push(_ work: Work) {
        let wasEmpty = queue.withLock { q in
            let e = q.isEmpty
            q.append(work)
            return e
        }
        if wasEmpty && !inLoop { selector.wakeup() }
    }

    /// Schedules `action` after `delayNanos`. Loop thread only.
    @discardableResult
    public func schedule(afterNanos delayNanos: UInt64, _ action: @escaping () -> Void) -> Timer {
        timerOrder += 1
        let (deadline, overflow) = monotonicNanos().addingReportingOverflow(delayNanos)
        let t = Timer(deadline: overflow ? .max : deadline, order: timerOrder, action: action)
        timers.append(t)
        siftUp(timers.count - 1)
        return t
    }

    @discardableResult
    public func schedule(afterMillis ms: Int, _ action: @escaping () -> Void) -> Timer {
        // Saturating: a delay beyond ~584 years is "never" rather than a trap.
        let (nanos, overflow) = UInt64(max(0, ms)).multipliedReportingOverflow(by: 1_000_000)
        return schedule(afterNanos: overflow ? .max : nanos, action)
    }

    private func before(_ a: Timer, _ b: Timer) -> Bool {
        a.deadline != b.deadline ? a.deadline < b.deadline : a.order < b.order
    }
    private func siftUp(_ i: Int) {
        var i = i
        while i > 0 {
            let p = (i - 1) / 2
            if before(timers[i], timers[p]) { timers.swapAt(i, p); i = p } else { break }
        }
    }
    private func siftDown(_ i: Int) {
        var i = i
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < timers.count && before(timers[l], timers[m]) { m = l }
            if r < timers.count && before(timers[r], timers[m]) { m = r }
            if m == i { return }
            timers.swapAt(i, m); i = m
        }
    }
    private func popTimer() -> Timer {
        let top = timers[0]
        let last = timers.removeLast()
        if !timers.isEmpty { timers[0] = last; siftDown(0) }
        return top
    }

    // MARK: Registration

    public func register(_ s: Selectable, interest: Interest) throws(SystemError) {
        let fd = Int(s.fd)
        if fd >= handlers.count { handlers.append(contentsOf: repeatElement(nil, count: fd - handlers.count + 1)) }
        try selector.register(fd: s.fd, interest: interest)
        handlers[fd] = s
    }

    public func reregister(_ s: Selectable, interest: Interest) {
        try? selector.reregister(fd: s.fd, interest: interest)
    }

    public func deregister(_ s: Selectable) {
        selector.deregister(fd: s.fd)
        let fd = Int(s.fd)
        if fd < handlers.count, handlers[fd] === s { handlers[fd] = nil }
    }

    /// Every registered object (for periodic sweeps such as pings).
    public func forEachRegistered(_ body: (Selectable) -> Void) {
        for h in handlers { if let h { body(h) } }
    }

    // MARK: Driving by hand (tests and fuzzers)

    /// Makes the calling thread the loop's thread without running the loop, so that its work
    /// can be driven by hand with `runPending` and `fireNextTimer`.
    public func adoptCurrentThread() { threadID.store(UInt(pthread_self()), ordering: .releasing) }

    /// Runs the queued work and the iteration hooks once.
    public func runPending() {
        now = monotonicNanos()
        runQueue()
        for h in iterationHooks { h() }
    }

    /// Drops every pending timer (ending a driven-by-hand run).
    public func cancelAllTimers() {
        for t in timers { t.action = nil }
        timers.removeAll()
    }

    /// Runs the earliest pending timer as if its time had come; false when none is left.
    public func fireNextTimer() -> Bool {
        while !timers.isEmpty {
            let t = popTimer()
            if let action = t.action {
                t.action = nil
                action()
                return true
            }
        }
        return false
    }

    // MARK: Running

    public func stop() {
        running.withLock { $0 = false }
        selector.wakeup()
    }

    /// Runs the loop on the calling thread until `stop`.
    public func run() {
        threadID.store(UInt(pthread_self()), ordering: .releasing)
        running.withLock { $0 = true }
        events.reserveCapacity(256)
        while running.withLock({ $0 }) {
            now = monotonicNanos()
            runTimers()
            let hasWork = !queue.withLock { $0.isEmpty }
            var timeout: Int32 = -1
            if hasWork {
                timeout = 0
            } else if let first = timers.first {
                let n = monotonicNanos()
                timeout = first.deadline <= n ? 0 : Int32(min((first.deadline - n + 999_999) / 1_000_000, 60_000))
            }
            events.removeAll(keepingCapacity: true)
            do { try selector.wait(timeoutMs: timeout, into: &events) } catch { fatalError("\(error)") }
            now = monotonicNanos()
            for e in events {
                let fd = Int(e.fd)
                if e.writable, fd < handlers.count, let h = handlers[fd] { h.writable() }
                if e.readable, fd < handlers.count, let h = handlers[fd] { h.readable() }
            }
            runQueue()
            for h in iterationHooks { h() }
        }
        runQueue()
        for h in iterationHooks { h() }
    }

    private func runTimers() {
        while let first = timers.first, first.deadline <= now {
            let t = popTimer()
            if let action = t.action {
                t.action = nil
                action()
            }
        }
        // Drop cancelled timers at the top so the wait timeout stays right.
        while let first = timers.first, first.action == nil { _ = popTimer() }
    }

    private func runQueue() {
        // Bounded: work queued while running waits for the next iteration, so I/O is not starved.
        // The queue and the batch swap buffers: taking the work allocates nothing.
        var batch: [Work] = []
        swap(&batch, &spareBatch)
        queue.withLock { swap(&$0, &batch) }
        for w in batch {
            switch w {
            case .job(let j): j.runSynchronously(on: asUnownedSerialExecutor())
            case .closure(let c): c()
            }
        }
        batch.removeAll(keepingCapacity: true)
        spareBatch = batch
    }
}

private final class ThreadBox {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Starts a POSIX thread running `body` (the loop, the log writer, the store's writer:
/// long-lived threads outside Swift's executors). `name` is what `top -H`, `ps -L` and `perf`
/// show for the thread (the kernel keeps 15 bytes of it).
@discardableResult
public func startThread(name: String, _ body: @escaping () -> Void) throws(SystemError) -> pthread_t {
    let box = Unmanaged.passRetained(ThreadBox(body))
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        Unmanaged<ThreadBox>.fromOpaque(arg!).takeRetainedValue().body()
        return nil
    }, box.toOpaque())
    guard rc == 0 else { box.release(); throw SystemError("pthread_create", rc) }
    _ = pthread_setname_np(tid, String(decoding: name.utf8.prefix(15), as: UTF8.self))
    return tid
}

/// A value that belongs to the event loop thread, carried through another thread (e.g. the
/// store's writer) that only hands it back to the loop without touching it.
public struct LoopBound<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
