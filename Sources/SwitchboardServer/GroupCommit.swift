import Glibc
import Synchronization
import SocketServer

/// The write path the stores share: writes queued from the loop are committed by one thread,
/// everything queued since the last commit in one transaction (group commit); completions go
/// back to the loop once committed. What one loop iteration submits reaches the writer as one
/// unit when the iteration ends: a commit never holds part of what one message led to (a
/// response's cleared pending state without the result it produced), and the writer is woken
/// at most once per iteration. Submissions from other threads go to the writer at once. A
/// failed commit is acknowledged to no one: the batch goes back to the front of the queue and
/// is retried with backoff until it commits (the server recovers by itself); meanwhile
/// `isHealthy` is false.
///
/// With `OnLoop` (a local store whose commit takes microseconds), a small iteration that ends
/// while the writer is idle and nothing is queued is committed by the loop itself: under
/// light load a command's commit costs no thread hand-offs (waking the writer, waking the
/// loop back). Larger iterations go to the writer, so that on several cores the loop goes
/// on reading while the writer commits, and iterations queue behind a commit in progress.
final class GroupCommitter: @unchecked Sendable {
    /// Commits `ops` in one transaction; returns the sessions whose writes were refused
    /// because another node owns them now (their ops were not applied).
    typealias Commit = (StoreBatch) throws -> [String]

    /// How the loop commits an iteration itself when the writer is idle.
    struct OnLoop {
        /// Commits without waiting for locks (a busy database fails at once, and the batch
        /// goes to the writer, which retries with backoff).
        var commit: (StoreBatch) throws -> Void
        /// Whether the writer has upkeep to do after the loop's commit (a checkpoint).
        var needsIdle: () -> Bool
        /// Iterations with more writes than this go to the writer.
        var maxOps = 32
        /// A commit of the loop's that took longer than this (a disk that blocks writes, a
        /// large batch) leaves the next ones to the writer for `pauseNanos`: the loop never
        /// stalls on the disk more than once in that time.
        var slowNanos: UInt64 = 2_000_000
        var pauseNanos: UInt64 = 1_000_000_000
    }

    private let loop: EventLoop
    private let name: String
    /// The writer's queue; `writing` while the writer or the loop (`OnLoop`) holds the store.
    private let pending = Locked<(ops: [StoreOp], done: [@Sendable () -> Void], stop: Bool, writing: Bool)>(([], [], false, false))
    private let onLoop: OnLoop?
    private let recover: () -> Void
    /// What the current loop iteration submitted (loop thread only), handed over at its end.
    private var openOps: [StoreOp] = []
    private var openDone: [@Sendable () -> Void] = []
    /// Loop only: when the loop may commit again after a slow commit of its own.
    private var loopCommitsResumeAt: UInt64 = 0
    private var wakeRead: Int32 = -1
    private var wakeWrite: Int32 = -1
    private var thread: pthread_t?
    private let stats = Locked(CommitStats())
    private let health = Atomic<Bool>(true)
    private let failures = Atomic<Int>(0)
    var isHealthy: Bool { health.load(ordering: .relaxed) }
    var failedCommits: Int { failures.load(ordering: .relaxed) }
    var commitStats: CommitStats { stats.withLock { $0 } }

    /// `commit` runs the transaction (`StoreBatch`: superseded state snapshots left out)
    /// and rolls it back when it fails; `recover` runs after such a failure; `idle` runs on the
    /// writer after its commit's completions were handed back, and when the loop wakes it
    /// after a commit of its own (`OnLoop.needsIdle`);
    /// `fenced` gets the sessions another node took, on the loop, before the completions;
    /// `onLoop` lets the loop commit when the writer is idle.
    init(loop: EventLoop, name: String, commit: @escaping Commit, recover: @escaping () -> Void,
         idle: @escaping () -> Void = {}, fenced: (@Sendable ([String]) -> Void)? = nil, onLoop: OnLoop? = nil) throws(SystemError) {
        self.loop = loop
        self.name = name
        self.onLoop = onLoop
        self.recover = recover
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SystemError("pipe") }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        thread = try startThread(name: "store-writer") { self.run(commit: commit, recover: recover, idle: idle, fenced: fenced) }
        loop.execute { [weak self] in self?.loop.onIterationEnd { self?.handOver() } }
    }

    private func wake() {
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
    }

    func submit(_ ops: [StoreOp], completion: (@Sendable () -> Void)?) {
        guard loop.inLoop else {
            var ops = ops
            var done = completion.map { [$0] } ?? []
            queue(&ops, &done)
            return
        }
        openOps.append(contentsOf: ops)
        if let completion { openDone.append(completion) }
    }

    func submit(_ op: StoreOp) {
        guard loop.inLoop else { return submit([op], completion: nil) }
        openOps.append(op)
    }

    /// The loop iteration ends: what it submitted is committed here (`OnLoop`, writer idle)
    /// or goes to the writer.
    private func handOver() {
        guard !openOps.isEmpty || !openDone.isEmpty else { return }
        if let onLoop, openOps.count <= onLoop.maxOps, loop.now >= loopCommitsResumeAt, isHealthy, claimIdleStore() {
            if commitOnLoop(onLoop) { return }
            // Failed (a busy or failing database): the writer retries it with backoff. It may
            // have been woken while the loop held the store and gone back to sleep.
            queue(&openOps, &openDone)
            wake()
            return
        }
        queue(&openOps, &openDone)
    }

    /// Claims the store for the loop when nothing is queued and nobody is writing: every
    /// earlier batch is committed.
    private func claimIdleStore() -> Bool {
        pending.withLock { p in
            guard p.ops.isEmpty, p.done.isEmpty, !p.writing, !p.stop else { return false }
            p.writing = true
            return true
        }
    }

    /// Commits the iteration on the loop (the store claimed) and lets the store go; false
    /// when the commit failed.
    private func commitOnLoop(_ onLoop: OnLoop) -> Bool {
        let start = monotonicNanos()
        var committed = true
        do { try onLoop.commit(StoreBatch(openOps)) } catch {
            recover()
            committed = false
        }
        let writerWanted = pending.withLock { p in
            // Asked while the loop still holds the store (the WAL's size is the writer's too).
            let upkeep = committed && onLoop.needsIdle()
            p.writing = false
            return upkeep || !p.ops.isEmpty || !p.done.isEmpty || p.stop
        }
        let end = monotonicNanos()
        if end &- start > onLoop.slowNanos { loopCommitsResumeAt = end &+ onLoop.pauseNanos }
        guard committed else { return false }
        record(since: start)
        openOps.removeAll(keepingCapacity: true)
        if !openDone.isEmpty {
            let done = openDone
            openDone = []
            loop.execute { for d in done { d() } }
        }
        if writerWanted { wake() }
        return true
    }

    private func record(since start: UInt64) {
        let ms = Double(monotonicNanos() - start) / 1e6
        stats.withLock { s in
            s.recent.append(ms)
            if s.recent.count > CommitStats.recentAtMost { s.recent.removeFirst(CommitStats.recentAtMost / 2) }
            s.count += 1
            s.sumMs += ms
        }
    }

    /// Moves `ops` and `done` (left empty) to the writer's queue and wakes the writer when the
    /// queue was empty (otherwise a wake-up is already pending).
    private func queue(_ ops: inout [StoreOp], _ done: inout [@Sendable () -> Void]) {
        let wasEmpty = pending.withLock { p -> Bool in
            let e = p.ops.isEmpty && p.done.isEmpty
            if p.ops.isEmpty { swap(&p.ops, &ops) } else { p.ops.append(contentsOf: ops) }
            if p.done.isEmpty { swap(&p.done, &done) } else { p.done.append(contentsOf: done) }
            return e
        }
        ops.removeAll(keepingCapacity: true)
        done.removeAll(keepingCapacity: true)
        if wasEmpty { wake() }
    }

    /// Commits what is queued and stops the writer.
    func close() {
        if loop.inLoop { handOver() }
        pending.withLock { $0.stop = true }
        wake()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    /// One line on stderr (the store's writer and lease threads have no loop to log from).
    static func say(_ text: String) {
        let line = Array("switchboard: \(text)\n".utf8)
        line.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
    }

    private func run(commit: Commit, recover: () -> Void, idle: () -> Void, fenced: (@Sendable ([String]) -> Void)?) {
        var buf = [UInt8](repeating: 0, count: 64)
        var retries = 0
        // The queue and this batch swap buffers: taking a batch copies nothing.
        var ops: [StoreOp] = []
        var done: [@Sendable () -> Void] = []
        while true {
            _ = Glibc.read(wakeRead, &buf, buf.count)
            ops.removeAll(keepingCapacity: true)
            done = []
            let (stop, claimed) = pending.withLock { p -> (Bool, Bool) in
                // The loop is committing (`OnLoop`): it wakes the writer when it is done.
                guard !p.writing else { return (p.stop, false) }
                p.writing = true
                swap(&ops, &p.ops)
                swap(&done, &p.done)
                return (p.stop, true)
            }
            guard claimed else { continue }
            if !ops.isEmpty || !done.isEmpty {
                let start = monotonicNanos()
                let lost: [String]
                do {
                    lost = try commit(StoreBatch(ops))
                } catch {
                    recover()
                    let first = health.exchange(false, ordering: .relaxed)
                    failures.add(1, ordering: .relaxed)
                    if first { GroupCommitter.say("\(name) commit failed, retrying: \(error)") }
                    pending.withLock { p in
                        p.ops.insert(contentsOf: ops, at: 0)
                        p.done.insert(contentsOf: done, at: 0)
                    }
                    if stop && failures.load(ordering: .relaxed) > 20 { break }  // shutting down: give up
                    // Still `writing` while it backs off: the loop queues instead of committing.
                    usleep(UInt32(min(1_000_000, 25_000 << min(6, retries))))
                    retries += 1
                    pending.withLock { $0.writing = false }
                    wake()
                    continue
                }
                retries = 0
                if !health.exchange(true, ordering: .relaxed) { GroupCommitter.say("\(name) commits work again") }
                record(since: start)
                if !done.isEmpty || !lost.isEmpty {
                    let done = done
                    loop.execute {
                        if !lost.isEmpty { fenced?(lost) }
                        for d in done { d() }
                    }
                }
            }
            // Also when woken with nothing queued: after the loop's own commits.
            idle()
            pending.withLock { $0.writing = false }
            if stop { break }
        }
    }
}

/// Commit latencies in milliseconds: the latest ones (for quantiles) and totals since start
/// (a Prometheus summary's `_count` and `_sum` only grow).
public struct CommitStats: Sendable {
    /// Kept for quantiles: between half this many and this many of the latest commits.
    static let recentAtMost = 10_000
    public var recent: [Double] = []
    public var count = 0
    public var sumMs = 0.0
}
