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
final class GroupCommitter: @unchecked Sendable {
    /// Commits `ops` in one transaction; returns the sessions whose writes were refused
    /// because another node owns them now (their ops were not applied).
    typealias Commit = (StoreBatch) throws -> [String]

    private let loop: EventLoop
    private let name: String
    private let pending = Locked<(ops: [StoreOp], done: [@Sendable () -> Void], stop: Bool)>(([], [], false))
    /// What the current loop iteration submitted (loop thread only), handed over at its end.
    private var openOps: [StoreOp] = []
    private var openDone: [@Sendable () -> Void] = []
    private var wakeRead: Int32 = -1
    private var wakeWrite: Int32 = -1
    private var thread: pthread_t?
    private let latencies = Locked<[Double]>([])
    private let health = Atomic<Bool>(true)
    private let failures = Atomic<Int>(0)
    var isHealthy: Bool { health.load(ordering: .relaxed) }
    var failedCommits: Int { failures.load(ordering: .relaxed) }
    var commitLatencies: [Double] { latencies.withLock { $0 } }

    /// `commit` runs the transaction (`StoreBatch`: superseded state snapshots left out)
    /// and rolls it back when it fails; `recover` runs after such a failure; `idle` runs after
    /// a commit's completions were handed back;
    /// `fenced` gets the sessions another node took, on the loop, before the completions.
    init(loop: EventLoop, name: String, commit: @escaping Commit, recover: @escaping () -> Void,
         idle: @escaping () -> Void = {}, fenced: (@Sendable ([String]) -> Void)? = nil) throws(SystemError) {
        self.loop = loop
        self.name = name
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SystemError("pipe") }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        thread = try startThread { self.run(commit: commit, recover: recover, idle: idle, fenced: fenced) }
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

    /// The loop iteration ends: what it submitted goes to the writer.
    private func handOver() {
        guard !openOps.isEmpty || !openDone.isEmpty else { return }
        queue(&openOps, &openDone)
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
            let stop = pending.withLock { p -> Bool in
                swap(&ops, &p.ops)
                swap(&done, &p.done)
                return p.stop
            }
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
                    usleep(UInt32(min(1_000_000, 25_000 << min(6, retries))))
                    retries += 1
                    wake()
                    continue
                }
                retries = 0
                if !health.exchange(true, ordering: .relaxed) { GroupCommitter.say("\(name) commits work again") }
                let ms = Double(monotonicNanos() - start) / 1e6
                latencies.withLock { l in
                    l.append(ms)
                    if l.count > 10_000 { l.removeFirst(5_000) }
                }
                if !done.isEmpty || !lost.isEmpty {
                    let done = done
                    loop.execute {
                        if !lost.isEmpty { fenced?(lost) }
                        for d in done { d() }
                    }
                }
                idle()
            }
            if stop { break }
        }
    }
}
