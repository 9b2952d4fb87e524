import Testing
import Foundation
import Glibc
import Synchronization
import SocketServer
import SwitchboardProtocol
@testable import SwitchboardServer

@Suite struct StoreTests {
    func record(_ id: String, _ ordinal: Int) -> SessionRecord {
        SessionRecord(id: id, ordinal: ordinal, createdAt: epochMillis(), timeouts: SessionTimeouts(), metadata: nil, clientConfig: [:],
                      workerTokenHash: [1], clientTokenHash: [2], phase: .created, reason: nil, result: nil, error: nil, state: [:])
    }

    /// Submits `ops` and waits (bounded) until they are committed.
    func commit(_ store: SQLiteStore, _ ops: [StoreOp]) {
        let done = Mutex<Bool>(false)
        store.submit(ops) { done.withLock { $0 = true } }
        for _ in 0..<500 where !done.withLock({ $0 }) { usleep(10_000) }
    }

    @Test func purgeReturnsExactlyTheTerminalSessionsItDeletes() throws {
        let loop = try EventLoop.spawn()
        defer { loop.stop() }
        let path = "/tmp/switchboard-store-test-\(getpid()).db"
        defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
        let store = try SQLiteStore(path: path, loop: loop)
        defer { store.close() }
        commit(store, [.insertSession(record("live", 1)), .insertSession(record("done", 2)),
                       .updateLifecycle(id: "done", phase: .complete, reason: .workerCompleted, result: nil, error: nil),
                       .event(session: "done", eventSeq: 1, type: "console", ts: 1, serverTs: 1, source: "client", payload: [:])])
        #expect(try store.purgeTerminal(endedBefore: epochMillis() - 60_000).isEmpty)
        #expect(try store.purgeTerminal(endedBefore: epochMillis() + 1_000) == ["done"])
        commit(store, [])
        #expect(try store.loadSessions().map(\.id) == ["live"])
        #expect(try store.events(session: "done", after: 0, limit: 10, types: nil).isEmpty)
    }

    @Test func eventsAreFilteredByTypeWithANextPageMarker() throws {
        let loop = try EventLoop.spawn()
        defer { loop.stop() }
        let path = "/tmp/switchboard-store-test-events-\(getpid()).db"
        defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
        let store = try SQLiteStore(path: path, loop: loop)
        defer { store.close() }
        let types = ["navigation", "console", "navigation", "net.response", "navigation"]
        commit(store, types.enumerated().map { i, t in
            .event(session: "s", eventSeq: i + 1, type: t, ts: 0, serverTs: 0, source: "client", payload: [:])
        })
        let page = try store.events(session: "s", after: 1, limit: 1, types: ["navigation"])
        #expect(page.map(\.eventSeq) == [3, 5])  // one past the limit: there is a next page
        #expect(try store.events(session: "s", after: 0, limit: 10, types: ["console", "net.response"]).map(\.eventSeq) == [2, 4])
    }
}

@Suite struct ConfigurationDocs {
    /// Every configuration key is documented, with its default, in config/switchboard.toml.
    @Test func everyKeyIsDocumentedWithItsDefault() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("config/switchboard.toml"), encoding: .utf8)
        let documented = Set(text.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("# "), let eq = line.range(of: " = ") else { return nil }
            return String(line[line.index(line.startIndex, offsetBy: 2)..<eq.lowerBound])
        })
        for key in ServeConfiguration.keys.map(\.name) {
            #expect(documented.contains(key), "\(key) is not documented in config/switchboard.toml")
        }
    }
}
