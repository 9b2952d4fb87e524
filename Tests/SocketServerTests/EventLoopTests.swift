import Testing
import Synchronization
@testable import SocketServer

/// A selector driven by the test: readiness is whatever the test scripts.
final class ScriptedSelector: Selector, @unchecked Sendable {
    let scripted = Mutex<[ReadinessEvent]>([])
    let registered = Mutex<[Int32: Interest]>([:])
    func register(fd: Int32, interest: Interest) throws(SystemError) { registered.withLock { $0[fd] = interest } }
    func reregister(fd: Int32, interest: Interest) throws(SystemError) { registered.withLock { $0[fd] = interest } }
    func deregister(fd: Int32) { _ = registered.withLock { $0.removeValue(forKey: fd) } }
    func wait(timeoutMs: Int32, into events: inout [ReadinessEvent]) throws(SystemError) {
        let ready = scripted.withLock { s -> [ReadinessEvent] in let r = s; s.removeAll(); return r }
        if ready.isEmpty { usleepMillis(min(max(timeoutMs, 0), 5)) }
        events.append(contentsOf: ready)
    }
    func wakeup() {}
    func close() {}
}

func usleepMillis(_ ms: Int32) {
    var ts = timespec(tv_sec: 0, tv_nsec: Int(ms) * 1_000_000)
    nanosleep(&ts, nil)
}

/// A value shared between the test and the loop thread.
final class Shared<T: Sendable>: Sendable {
    private let m: Mutex<T>
    init(_ v: T) { m = Mutex(v) }
    func withLock<R>(_ body: (inout T) -> R) -> R { m.withLock { body(&$0) } }
}

final class Recorder: Selectable, @unchecked Sendable {
    let fd: Int32
    let log: Shared<[String]>
    init(fd: Int32, log: Shared<[String]>) { self.fd = fd; self.log = log }
    func readable() { log.withLock { $0.append("r\(fd)") } }
    func writable() { log.withLock { $0.append("w\(fd)") } }
}

@Suite struct EventLoopTests {
    @Test func readinessTimersAndJobsRunOnTheLoopThread() async throws {
        let selector = ScriptedSelector()
        let loop = try EventLoop(selector: selector)
        let log = Shared<[String]>([])
        let recorder = Recorder(fd: 7, log: log)
        let thread = Thread { loop.run() }
        thread.start()
        defer { loop.stop() }
        // Registration and scheduling happen on the loop.
        let done = Shared<Bool>(false)
        loop.execute {
            try? loop.register(recorder, interest: .read)
            loop.schedule(afterMillis: 30) { log.withLock { $0.append("t30") } }
            loop.schedule(afterMillis: 10) { log.withLock { $0.append("t10") } }
            let cancelled = loop.schedule(afterMillis: 20) { log.withLock { $0.append("never") } }
            cancelled.cancel()
            log.withLock { $0.append(loop.inLoop ? "inLoop" : "offLoop") }
        }
        for _ in 0..<200 where selector.registered.withLock({ $0[7] }) == nil { usleepMillis(5) }
        selector.scripted.withLock { $0.append(ReadinessEvent(fd: 7, readable: true, writable: true)) }
        for _ in 0..<200 where log.withLock({ $0.count }) < 5 { usleepMillis(5) }
        loop.execute { done.withLock { $0 = true } }
        let entries = log.withLock { $0 }
        #expect(entries.contains("inLoop"))
        #expect(entries.filter { $0.hasPrefix("t") } == ["t10", "t30"])
        #expect(entries.contains("w7") && entries.contains("r7"))
        #expect(!entries.contains("never"))
        #expect(selector.registered.withLock { $0[7] } == .read)
    }

    @Test func sessionStyleActorRunsOnTheLoopExecutor() async throws {
        let loop = try EventLoop.spawn()
        defer { loop.stop() }
        actor Counter {
            nonisolated let loop: EventLoop
            nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
            var n = 0
            init(loop: EventLoop) { self.loop = loop }
            func bump() -> (Int, Bool) { n += 1; return (n, loop.inLoop) }
        }
        let c = Counter(loop: loop)
        // From async code the actor hops onto the loop thread...
        let (n, onLoop) = await c.bump()
        #expect(n == 1 && onLoop)
        // ...and code already on the loop reaches it synchronously.
        let result = Shared<Int>(0)
        loop.execute { result.withLock { $0 = c.assumeIsolated { $0.n += 1; return $0.n } } }
        for _ in 0..<200 where result.withLock({ $0 }) == 0 { usleepMillis(5) }
        #expect(result.withLock { $0 } == 2)
    }
}

import Foundation
