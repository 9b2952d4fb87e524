import Testing
import Foundation
import Glibc
import SocketServer
import SwitchboardProtocol
@testable import SwitchboardServer

/// A PostgreSQL for the store tests, started once per test process by `scripts/postgres.sh`
/// (loopback, a temporary directory) and stopped by its PID when the process exits. Each test
/// works in a database of its own.
final class ThrowawayPostgres: Sendable {
    let url: String
    nonisolated(unsafe) static var dir: String? = nil

    static let installed = FileManager.default.fileExists(atPath: "/usr/lib/postgresql")
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    static let shared: Result<ThrowawayPostgres, Error> = Result {
        let dir = "/tmp/switchboard-pg-test-\(getpid())"
        try script("up", dir)
        ThrowawayPostgres.dir = dir
        atexit { if let d = ThrowawayPostgres.dir { try? ThrowawayPostgres.script("down", d) } }
        // The script leaves the connection string in DIR/pg/url.
        let url = try String(contentsOfFile: dir + "/pg/url", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return ThrowawayPostgres(url: url)
    }

    init(url: String) { self.url = url }

    /// Runs scripts/postgres.sh (posix_spawn and waitpid: no run loop needed).
    static func script(_ args: String...) throws {
        let argv = ([root + "/scripts/postgres.sh"] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var pid: pid_t = 0
        guard posix_spawn(&pid, argv[0]!, &actions, nil, argv, environ) == 0 else { throw PostgresError(description: "cannot run postgres.sh") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else { throw PostgresError(description: "postgres.sh \(args) exited with status \(status)") }
    }

    /// A new, empty database; its connection string.
    static func database(_ name: String) throws -> String {
        let server = try shared.get()
        let admin = try PostgresConnection(url: server.url)
        try admin.exec("DROP DATABASE IF EXISTS \(name)")
        try admin.exec("CREATE DATABASE \(name)")
        return server.url.replacingOccurrences(of: "/switchboard", with: "/\(name)")
    }
}

@Suite(.enabled(if: ThrowawayPostgres.installed, "PostgreSQL is installed by scripts/install-deps.sh"))
struct PostgresStoreTests {
    let sqlite = StoreTests()

    /// Opens `count` stores (nodes) on a new database, each on a loop of its own.
    func withNodes(_ name: String, count: Int = 1, leaseMs: Int = 60_000, _ body: ([PostgresStore]) throws -> Void) throws {
        let url = try ThrowawayPostgres.database(name)
        var loops: [EventLoop] = []
        var stores: [PostgresStore] = []
        defer {
            for s in stores { s.close() }
            for l in loops { l.stop() }
        }
        for k in 0..<count {
            let loop = try EventLoop.spawn()
            loops.append(loop)
            stores.append(try PostgresStore(url: url, nodeName: "node\(k)", leaseMs: leaseMs, loop: loop))
        }
        try body(stores)
    }

    /// Stores sessions and takes them for `store` (a new session has no owner).
    func own(_ store: PostgresStore, _ ids: [String]) throws {
        sqlite.commit(store, ids.enumerated().map { .insertSession(sqlite.record($1, $0 + 1)) })
        for id in ids {
            guard case .taken = try store.takeOver(id) else { Issue.record("\(id) not taken"); return }
        }
    }

    /// The SQLite store's table tests, on PostgreSQL: the same reads after the same writes.
    @Test func answersAsTheSQLiteStoreDoes() throws {
        try withNodes("answers") { nodes throws in
            try own(nodes[0], ["s", "t"])
            try sqlite.sentMessagesAreStoredOnce(nodes[0])
        }
        try withNodes("extremes") { nodes throws in
            try own(nodes[0], ["s"])
            // Text cannot hold a NUL in PostgreSQL (peers' ids with one are refused).
            try sqlite.extremesRoundTrip(nodes[0], odd: "a\"b\\c😀")
        }
    }

    /// A session is served by one node: another is refused while the owner's lease runs and
    /// asks for a hand-over; once the lease lapsed it takes the session, and the old owner's
    /// writes are refused (fenced) and reported, not applied.
    @Test func aSessionTakenByAnotherNodeFencesTheOldOwner() throws {
        try withNodes("fencing", count: 2) { nodes throws in
            let (a, b) = (nodes[0], nodes[1])
            try own(a, ["s"])
            sqlite.commit(a, [sqlite.entry("s", 1, "by a")])
            guard case .heldElsewhere(let c) = try b.takeOver("s") else { Issue.record("taken while a's lease runs"); return }
            #expect(c.workerTokenHash == [1] && c.clientTokenHash == [2])
            let admin = try PostgresConnection(url: try ThrowawayPostgres.shared.get().url.replacingOccurrences(of: "/switchboard", with: "/fencing"))
            // Asking is separate (the relay asks only for a caller with the session's token).
            try admin.query("SELECT wanted_by FROM sessions WHERE id = 's'") { r throws(PostgresError) in #expect(r.isNull(0, 0)) }
            b.want("s")
            try admin.query("SELECT wanted_by FROM sessions WHERE id = 's'") { r throws(PostgresError) in #expect(r.text(0, 0) == b.nodeId) }
            // a is paused past its lease.
            try admin.run("UPDATE nodes SET lease_expires = now() - interval '1 second' WHERE id = $1", [.text(a.nodeId)])
            guard case .taken(let r) = try b.takeOver("s") else { Issue.record("not taken after the lease lapsed"); return }
            #expect(r.id == "s" && r.workerTokenHash == [1])
            let fenced = Locked<[String]>([])
            a.onFenced { ids in fenced.withLock { $0 += ids } }
            sqlite.commit(a, [sqlite.entry("s", 2, "by a, too late"), .usedId(session: "s", id: "late")])
            #expect(fenced.withLock { $0 } == ["s"])
            sqlite.commit(b, [sqlite.entry("s", 2, "by b")])
            #expect(try b.journal(session: "s", after: 0, limit: 10).map { String(decoding: $0.bytes, as: UTF8.self) } == ["by a", "by b"])
            #expect(try b.usedIds(session: "s").isEmpty)
            // Once fenced, a stays out even though its epoch map no longer names the session.
            sqlite.commit(a, [sqlite.entry("s", 3, "again")])
            #expect(try b.lastJournalEntry(session: "s") == 2)
            // Nor does a, its lease lapsed, take a session nobody holds: it would drop it as soon
            // as its lease thread saw the lapse. b, whose lease runs, takes it back.
            sqlite.commit(b, [.release(session: "s")])
            guard case .heldElsewhere = try a.takeOver("s") else { Issue.record("taken by a node whose lease lapsed"); return }
            guard case .taken = try b.takeOver("s") else { Issue.record("a released session was not taken back"); return }
        }
    }

    /// A released session (hand-over, drain) is taken at once by the next node; one nobody
    /// serves is adopted by a node's lease thread after a lease, with its record. (The lease
    /// is long enough that a node starved of CPU for a second on a busy machine keeps it:
    /// with 400 ms, b's lease once lapsed under a loaded test run and a adopted "s".)
    @Test func releasedAndUnservedSessionsFindANode() throws {
        try withNodes("handoff", count: 2, leaseMs: 3_000) { nodes throws in
            let (a, b) = (nodes[0], nodes[1])
            try own(a, ["s"])
            sqlite.commit(a, [.release(session: "s")])
            guard case .taken = try b.takeOver("s") else { Issue.record("a released session was not taken"); return }
            // Both nodes renew their leases: b keeps "s"; "new", which nobody serves, goes to one of them.
            let adopted = Locked<[String]>([])
            let seen = DispatchSemaphore(value: 0)
            for node in [a, b] {
                try node.startLeases { event in
                    if case .adopted(let records) = event { adopted.withLock { $0 += records.map(\.id) }; seen.signal() }
                }
            }
            sqlite.commit(b, [.insertSession(sqlite.record("new", 2))])
            #expect(seen.wait(timeout: .now() + 60) == .success, "not adopted within 60 s")
            usleep(2_500_000)  // two more lease periods (renewals every second): nothing else is adopted
            #expect(adopted.withLock { $0 } == ["new"])
            guard case .heldElsewhere = try a.takeOver("new"), case .heldElsewhere = try b.takeOver("s") else {
                Issue.record("a served session was taken again"); return
            }
        }
    }

    /// A statement of a group commit that fails (here one refused by a trigger) fails the
    /// whole batch, which is retried until it commits: nothing before it in the batch lands
    /// alone, nothing is acknowledged meanwhile, and the store reports itself unhealthy.
    @Test func aFailedGroupCommitIsRetriedWhole() throws {
        try withNodes("retry") { nodes throws in
            let store = nodes[0]
            try own(store, ["s"])
            let admin = try PostgresConnection(url: try ThrowawayPostgres.shared.get().url.replacingOccurrences(of: "/switchboard", with: "/retry"))
            try admin.exec("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()
            """)
            let done = DispatchSemaphore(value: 0)
            store.submit([sqlite.entry("s", 1, "before"), .event(session: "s", eventSeq: 1, type: "console", ts: 1, serverTs: 1, source: "client", payload: [:]),
                          sqlite.entry("s", 2, "after")]) { done.signal() }
            let deadline = Date().addingTimeInterval(10)
            while store.failedCommits == 0 && Date() < deadline { usleep(1_000) }
            #expect(store.failedCommits > 0 && !store.isHealthy)
            #expect(done.wait(timeout: .now() + 0.2) == .timedOut, "acknowledged before it committed")
            #expect(try store.journal(session: "s", after: 0, limit: 10).isEmpty)
            try admin.exec("DROP TRIGGER refuse ON events")
            #expect(done.wait(timeout: .now() + 10) == .success, "not committed within 10 s")
            #expect(store.isHealthy)
            #expect(try store.journal(session: "s", after: 0, limit: 10).map(\.n) == [1, 2])
            #expect(try store.eventCount(session: "s") == 1)
        }
    }

    /// Lists come from the database, newest first, by tenant and phase, with a cursor.
    @Test func listsPageThroughEveryNodesSessions() throws {
        try withNodes("lists") { nodes throws in
            var records = (1...5).map { sqlite.record("s\($0)", $0) }
            for i in records.indices { records[i].tenant = i == 4 ? "other" : "mine" }
            sqlite.commit(nodes[0], records.map { .insertSession($0) })
            sqlite.commit(nodes[0], [])
            let page = try nodes[0].listSessions(tenant: "mine", phase: nil, before: .max, limit: 3)
            #expect(page.map(\.id) == ["s4", "s3", "s2"])
            let next = try nodes[0].listSessions(tenant: "mine", phase: .created, before: page[1].ordinal, limit: 3)
            #expect(next.map(\.id) == ["s2", "s1"])
            #expect(try nodes[0].listSessions(tenant: "mine", phase: .active, before: .max, limit: 3).isEmpty)
        }
    }
}
