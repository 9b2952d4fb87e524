import Glibc
import SocketServer
import SwitchboardProtocol

/// What a node learns from its lease thread, delivered on the loop.
public enum LeaseEvent: Sendable {
    /// The node's lease lapsed (it was paused or cut off): another node may have taken any of
    /// its sessions, so it serves none of them any more. It goes on as a new incarnation.
    case lost
    /// Another node wants these sessions (a peer of theirs reached it): hand them over.
    case handOff([String])
    /// Sessions without a live owner that this node took (their timers must run somewhere).
    case adopted([SessionRecord])
}

/// What authorises a peer or a call for a session (token digests, tenant).
public struct SessionCredentials: Sendable {
    public var workerTokenHash: [UInt8]
    public var clientTokenHash: [UInt8]
    public var tenant: String?
}

/// The answer to "serve this session here".
public enum Takeover: Sendable {
    case taken(SessionRecord)
    /// Another live node serves it (or this node is still taking it). Who may ask for it: a
    /// caller that proves one of these, and only such a caller, asks for a hand-over (`want`).
    case heldElsewhere(SessionCredentials)
    case notFound
}

/// Several nodes on one PostgreSQL database (docs/scaling.md). Each session is served by one
/// node at a time: its row names the owner (a node incarnation) and an epoch that grows with
/// every takeover. A node's lease (its row in `nodes`, renewed every third of `leaseMs`)
/// keeps its sessions; a session whose owner's lease lapsed, or that has no owner, may be
/// taken by any node. Every commit locks the rows of the sessions it writes and applies only
/// the ops of sessions this node still owns at the epoch it took them with (fencing): a node
/// that was paused and wakes up cannot write into a session another node took.
public final class PostgresStore: SessionStore, @unchecked Sendable {
    private let writer: PostgresConnection
    private let reader: PostgresConnection
    private let readLock = Locked<Int>(0)
    private var committer: GroupCommitter!
    /// Sessions this node owns, with the epoch it took each at.
    private let owned = Locked<[String: Int64]>([:])
    private let node: Locked<String>
    public let nodeName: String
    public let leaseMs: Int
    private let url: String
    private let loop: EventLoop
    private let fencedHandler = Locked<(@Sendable ([String]) -> Void)?>(nil)
    private var leaseThread: pthread_t?
    private let leaseStop = Locked<Bool>(false)

    public var nodeId: String { node.withLock { $0 } }
    public var isHealthy: Bool { committer.isHealthy }
    public var failedCommits: Int { committer.failedCommits }
    public var commitStats: CommitStats { committer.commitStats }

    /// Schema versions, applied in order under an advisory lock (nodes may start together)
    /// and recorded in `switchboard_schema`.
    static let migrations = [
        """
        CREATE TABLE nodes (id TEXT PRIMARY KEY, name TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
          lease_expires TIMESTAMPTZ NOT NULL);
        CREATE TABLE sessions (id TEXT PRIMARY KEY, ordinal BIGSERIAL NOT NULL, created_at BIGINT NOT NULL, timeouts TEXT NOT NULL,
          metadata TEXT, client_config TEXT NOT NULL, worker_token BYTEA NOT NULL, client_token BYTEA NOT NULL,
          phase TEXT NOT NULL, reason TEXT, result TEXT, error TEXT, ended_at BIGINT, tenant TEXT,
          owner TEXT, epoch BIGINT NOT NULL DEFAULT 0, wanted_by TEXT, released_at TIMESTAMPTZ);
        CREATE INDEX sessions_ordinal ON sessions (ordinal);
        CREATE INDEX sessions_owner ON sessions (owner);
        CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;
        CREATE TABLE states (session TEXT PRIMARY KEY, state TEXT NOT NULL);
        CREATE TABLE entries (g BIGSERIAL PRIMARY KEY, session TEXT NOT NULL, n BIGINT NOT NULL, direction TEXT NOT NULL,
          ts BIGINT NOT NULL, body BYTEA NOT NULL, stream SMALLINT, seq BIGINT, command_id TEXT, journaled BOOLEAN NOT NULL);
        CREATE UNIQUE INDEX entries_n ON entries (session, n);
        CREATE INDEX entries_seq ON entries (session, stream, seq) WHERE stream IS NOT NULL;
        CREATE TABLE events (session TEXT NOT NULL, event_seq BIGINT NOT NULL, type TEXT NOT NULL, ts BIGINT NOT NULL,
          server_ts BIGINT NOT NULL, source TEXT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (session, event_seq));
        CREATE INDEX events_type ON events (session, type, event_seq);
        CREATE TABLE ids (session TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (session, id))
        """,
    ]

    static func migrate(_ db: PostgresConnection) throws(PostgresError) {
        try db.exec("SELECT pg_advisory_lock(7402711)")
        defer { _ = try? db.exec("SELECT pg_advisory_unlock(7402711)") }
        try db.exec("CREATE TABLE IF NOT EXISTS switchboard_schema (version INTEGER NOT NULL)")
        var version = 0
        try db.query("SELECT COALESCE(MAX(version), 0) FROM switchboard_schema") { r throws(PostgresError) in version = Int(r.int(0, 0)) }
        for (k, sql) in migrations.enumerated() where k >= version {
            try db.exec("BEGIN; \(sql); INSERT INTO switchboard_schema (version) VALUES (\(k + 1)); COMMIT")
        }
    }

    /// `nodeName` must be unique among the nodes: a node that starts expires the leases of
    /// earlier incarnations of its name (it replaced them), so their sessions move at once.
    public init(url: String, nodeName: String, leaseMs: Int, loop: EventLoop) throws(PostgresError) {
        self.url = url
        self.nodeName = nodeName
        self.leaseMs = leaseMs
        self.loop = loop
        node = Locked(PostgresStore.incarnation(of: nodeName))
        writer = try PostgresConnection(url: url)
        try PostgresStore.migrate(writer)
        reader = try PostgresConnection(url: url)
        try register(on: writer, replacing: true)
        do {
            committer = try GroupCommitter(loop: loop, name: "store", commit: { [unowned self] batch in try self.commit(batch) },
                                           recover: {}, fenced: { [weak self] ids in self?.fencedHandler.withLock { $0 }?(ids) })
        } catch {
            throw PostgresError(description: "cannot start the store's writer: \(error)")
        }
    }

    static func incarnation(of name: String) -> String { name + "#" + Crypto.hex(Crypto.randomBytes(6)) }

    private func register(on db: PostgresConnection, replacing: Bool) throws(PostgresError) {
        let me = nodeId
        try db.run("INSERT INTO nodes (id, name, lease_expires) VALUES ($1, $2, now() + $3 * interval '1 millisecond')",
                   [.text(me), .text(nodeName), .int(Int64(leaseMs))])
        if replacing {
            try db.run("UPDATE nodes SET lease_expires = '-infinity' WHERE name = $1 AND id <> $2", [.text(nodeName), .text(me)])
        }
        // Rows of incarnations long gone that own nothing.
        try db.run("DELETE FROM nodes n WHERE n.lease_expires < now() - interval '1 day' AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.owner = n.id)")
    }

    // MARK: Writes

    public func submit(_ ops: [StoreOp], completion: (@Sendable () -> Void)?) { committer.submit(ops, completion: completion) }
    public func submit(_ op: StoreOp) { committer.submit(op) }

    /// Stops the lease thread, commits what is queued and stops the writer.
    public func close() {
        leaseStop.withLock { $0 = true }
        if let leaseThread { pthread_join(leaseThread, nil) }
        leaseThread = nil
        committer.close()
        // Whatever this node still owns may be taken at once, not one lease later.
        _ = try? writer.run("UPDATE nodes SET lease_expires = '-infinity' WHERE id = $1", [.text(nodeId)])
    }

    /// `{"a","b"}`: a text array parameter.
    static func array(_ items: some Sequence<String>) -> String {
        "{" + items.map { "\"" + $0.replacingBackslashesAndQuotes() + "\"" }.joined(separator: ",") + "}"
    }

    private func commit(_ batch: StoreBatch) throws(PostgresError) -> [String] {
        // Completions alone (a barrier after earlier writes): nothing to write.
        guard !batch.isEmpty else { return [] }
        let me = nodeId
        do {
            try writer.exec("BEGIN")
            // Fencing: the rows of the batch's sessions are locked until the commit, so a
            // takeover waits for it, and ops of sessions owned elsewhere are dropped.
            var rows: [String: (owner: String?, epoch: Int64)] = [:]
            let ids = batch.sessions
            try writer.query("SELECT id, owner, epoch FROM sessions WHERE id = ANY($1::text[]) FOR SHARE", [.text(PostgresStore.array(ids))]) { r throws(PostgresError) in
                for i in 0..<r.count { rows[r.text(i, 0) ?? ""] = (r.text(i, 1), r.int(i, 2)) }
            }
            let epochs = owned.withLock { $0 }
            var lost = Set<String>()
            var released: [String] = []
            // The batch's statements travel together; their results are read at the end.
            try writer.beginPipeline()
            try batch.forEach { op throws(PostgresError) in
                let id = op.session
                if let row = rows[id] {
                    guard row.owner == me, let e = epochs[id], e == row.epoch else { lost.insert(id); return }
                } else {
                    // A new session, or one deleted meanwhile (retention).
                    guard case .insertSession = op else { return }
                }
                if case .release = op { released.append(id) }
                try apply(op, on: writer, me: me, epoch: epochs[id] ?? 0)
            }
            try writer.run("COMMIT")
            try writer.endPipeline()
            // Only now: a failed commit is retried with the same epochs.
            if !lost.isEmpty || !released.isEmpty { owned.withLock { o in for id in lost.union(released) { o[id] = nil } } }
            return lost.sorted()
        } catch {
            try? writer.endPipeline()
            _ = try? writer.exec("ROLLBACK")
            throw error
        }
    }

    private func apply(_ op: StoreOp, on db: PostgresConnection, me: String, epoch: Int64) throws(PostgresError) {
        switch op {
        case .insertSession(let r):
            // A new session has no owner: the first node a peer or a call for it reaches takes it.
            try db.run("""
            INSERT INTO sessions (id, created_at, timeouts, metadata, client_config, worker_token, client_token, phase, reason,
              result, error, tenant, released_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12, now()) ON CONFLICT (id) DO NOTHING
            """, [.text(r.id), .int(r.createdAt), .text(SQLiteStore.encode(r.timeouts)), PostgresStore.json(r.metadata.map { .object($0) }),
                  .text(JSONWriter.string(.object(r.clientConfig))), .bytes(r.workerTokenHash[...]), .bytes(r.clientTokenHash[...]),
                  .text(r.phase.rawValue), .optText(r.reason?.rawValue), PostgresStore.json(r.result), PostgresStore.json(r.error), .optText(r.tenant)])
            try putState(r.id, JSONWriter.serialize(.object(r.state)), on: db)
        case .updateLifecycle(let id, let phase, let reason, let result, let error):
            try db.run("UPDATE sessions SET phase = $1, reason = $2, result = $3, error = $4, ended_at = $5 WHERE id = $6",
                       [.text(phase.rawValue), .optText(reason?.rawValue), PostgresStore.json(result), PostgresStore.json(error),
                        phase.isTerminal ? .int(epochMillis()) : .null, .text(id)])
        case .updateState(let id, let state):
            try putState(id, state, on: db)
        case .trimMessages(let s, let stream, let through):
            let scope = "session = $1 AND stream = $2 AND seq <= $3 AND NOT journaled"
            try db.run("INSERT INTO ids (session, id) SELECT session, command_id FROM entries WHERE \(scope) AND command_id IS NOT NULL ON CONFLICT DO NOTHING",
                       [.text(s), .int(Int64(stream)), .int(Int64(through))])
            try db.run("DELETE FROM entries WHERE \(scope)", [.text(s), .int(Int64(stream)), .int(Int64(through))])
        case .event(let s, let n, let type, let ts, let serverTs, let source, let payload):
            try db.run("INSERT INTO events (session, event_seq, type, ts, server_ts, source, payload) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING",
                       [.text(s), .int(Int64(n)), .text(type), .int(ts), .int(serverTs), .text(source), .text(JSONWriter.string(.object(payload)))])
        case .journal(let e):
            let m = e.message
            try db.run("""
            INSERT INTO entries (session, n, direction, ts, body, stream, seq, command_id, journaled) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
            ON CONFLICT (session, n) DO UPDATE SET direction = EXCLUDED.direction, ts = EXCLUDED.ts, body = EXCLUDED.body,
              stream = EXCLUDED.stream, seq = EXCLUDED.seq, command_id = EXCLUDED.command_id, journaled = EXCLUDED.journaled
            """, [.text(e.session), .int(Int64(e.n)), .text(e.direction.description), .int(e.ts), .bytes(e.body), m.map { .int(Int64($0.stream)) } ?? .null,
                  m.map { .int(Int64($0.seq)) } ?? .null, .optText(m?.commandId), .bool(e.journaled)])
        case .trimJournal(let s, let through, let keep):
            // Entries through `through` leave the journal; messages still in a replay tail stay.
            let params: [PostgresConnection.Value] = [.text(s), .int(Int64(through)), .int(Int64(keep.worker)), .int(Int64(keep.client))]
            let gone = "session = $1 AND n <= $2 AND NOT (stream IS NOT NULL AND seq >= CASE stream WHEN 0 THEN $3::bigint ELSE $4::bigint END)"
            try db.run("INSERT INTO ids (session, id) SELECT session, command_id FROM entries WHERE \(gone) AND command_id IS NOT NULL ON CONFLICT DO NOTHING", params)
            try db.run("DELETE FROM entries WHERE \(gone)", params)
            try db.run("UPDATE entries SET journaled = false WHERE session = $1 AND n <= $2 AND journaled", [.text(s), .int(Int64(through))])
        case .trimEvents(let s, let through):
            try db.run("DELETE FROM events WHERE session = $1 AND event_seq <= $2", [.text(s), .int(Int64(through))])
        case .usedId(let s, let id):
            try db.run("INSERT INTO ids (session, id) VALUES ($1, $2) ON CONFLICT DO NOTHING", [.text(s), .text(id)])
        case .delete(let s):
            try PostgresStore.deleteSessions([s], on: db)
        case .release(let s):
            try db.run("UPDATE sessions SET owner = NULL, released_at = now() WHERE id = $1 AND owner = $2 AND epoch = $3",
                       [.text(s), .text(me), .int(epoch)])
        }
    }

    private func putState(_ session: String, _ state: [UInt8], on db: PostgresConnection) throws(PostgresError) {
        try db.run("INSERT INTO states (session, state) VALUES ($1, $2) ON CONFLICT (session) DO UPDATE SET state = EXCLUDED.state",
                   [.text(session), .text(String(decoding: state, as: UTF8.self))])
    }

    static func deleteSessions(_ ids: [String], on db: PostgresConnection) throws(PostgresError) {
        let list = PostgresConnection.Value.text(PostgresStore.array(ids))
        for table in ["entries", "states", "events", "ids"] { try db.run("DELETE FROM \(table) WHERE session = ANY($1::text[])", [list]) }
        try db.run("DELETE FROM sessions WHERE id = ANY($1::text[])", [list])
    }

    static func json(_ v: JSON?) -> PostgresConnection.Value {
        guard let v, !v.isNull else { return .null }
        return .text(JSONWriter.string(v))
    }

    public func commitNow(_ ops: [StoreOp]) throws {
        let me = nodeId
        let epochs = owned.withLock { $0 }
        try read { db throws(PostgresError) in
            try db.exec("BEGIN")
            do throws(PostgresError) {
                for op in ops { try apply(op, on: db, me: me, epoch: epochs[op.session] ?? 0) }
                try db.exec("COMMIT")
            } catch {
                _ = try? db.exec("ROLLBACK")
                throw error
            }
        }
    }

    // MARK: Ownership

    /// Called on the loop with the sessions whose writes were refused (another node took
    /// them), before the completions of that commit run.
    public func onFenced(_ handler: @escaping @Sendable ([String]) -> Void) { fencedHandler.withLock { $0 = handler } }

    /// Takes `id` for this node when it has no live owner.
    public func takeOver(_ id: String) throws -> Takeover {
        let me = nodeId
        return try read { db throws(PostgresError) -> Takeover in
            // One transaction: the session is taken only together with the record read back.
            try db.exec("BEGIN")
            do throws(PostgresError) {
                var epoch: Int64? = nil
                // Only while this node's own lease runs: a node that woke from a pause longer than
                // its lease would evict what it took as soon as its lease thread saw the lapse
                // (the peer is told `session_moved` and retries, as for a session held elsewhere).
                try db.query("""
                UPDATE sessions s SET owner = $1, epoch = s.epoch + 1, wanted_by = NULL, released_at = NULL
                WHERE s.id = $2 AND (s.owner IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = s.owner AND n.lease_expires > now()))
                  AND EXISTS (SELECT 1 FROM nodes m WHERE m.id = $1 AND m.lease_expires > now())
                RETURNING s.epoch
                """, [.text(me), .text(id)]) { r throws(PostgresError) in if r.count == 1 { epoch = r.int(0, 0) } }
                let answer: Takeover
                if let epoch, let record = try PostgresStore.records(db, "s.id = $1", [.text(id)]).first {
                    try db.exec("COMMIT")
                    owned.withLock { $0[id] = epoch }
                    return .taken(record)
                }
                answer = try db.query("SELECT worker_token, client_token, tenant FROM sessions WHERE id = $1", [.text(id)]) { r throws(PostgresError) in
                    r.count == 1 ? .heldElsewhere(SessionCredentials(workerTokenHash: r.bytes(0, 0), clientTokenHash: r.bytes(0, 1), tenant: r.text(0, 2)))
                                 : .notFound
                }
                try db.exec("COMMIT")
                return answer
            } catch {
                _ = try? db.exec("ROLLBACK")
                throw error
            }
        }
    }

    /// Asks the node serving `id` to hand it over to this one (its lease thread sees the
    /// request within a third of a lease). Only for callers authorised for the session.
    public func want(_ id: String) {
        let me = nodeId
        _ = try? read { db throws(PostgresError) in
            try db.run("UPDATE sessions SET wanted_by = $1 WHERE id = $2 AND owner IS DISTINCT FROM $1", [.text(me), .text(id)])
        }
    }

    static let recordColumns = """
    s.id, s.ordinal, s.created_at, s.timeouts, s.metadata, s.client_config, s.worker_token, s.client_token, s.phase,
    s.reason, s.result, s.error, s.tenant, st.state
    """

    static func records(_ db: PostgresConnection, _ condition: String, _ params: [PostgresConnection.Value],
                        suffix: String = "") throws(PostgresError) -> [SessionRecord] {
        try db.query("SELECT \(recordColumns) FROM sessions s LEFT JOIN states st ON st.session = s.id WHERE \(condition) \(suffix)", params) { r throws(PostgresError) in
            (0..<r.count).map { i in
                func json(_ c: Int) -> JSON? { r.text(i, c).flatMap { try? JSONParser.parse($0) } }
                return SessionRecord(id: r.text(i, 0) ?? "", ordinal: Int(r.int(i, 1)), createdAt: r.int(i, 2),
                                     timeouts: SQLiteStore.decodeTimeouts(r.text(i, 3)), metadata: json(4)?.objectValue,
                                     clientConfig: json(5)?.objectValue ?? [:], workerTokenHash: r.bytes(i, 6), clientTokenHash: r.bytes(i, 7),
                                     phase: Phase(rawValue: r.text(i, 8) ?? "") ?? .failed, reason: r.text(i, 9).flatMap { EndReason(rawValue: $0) },
                                     result: json(10), error: json(11), state: json(13)?.objectValue ?? [:], tenant: r.text(i, 12))
            }
        }
    }

    /// A page of the tenant's sessions, newest first, below ordinal `before`.
    public func listSessions(tenant: String, phase: Phase?, before: Int, limit: Int) throws -> [SessionRecord] {
        try read { db throws(PostgresError) in
            try PostgresStore.records(db, "(s.tenant = $1 OR s.tenant IS NULL) AND ($2::text IS NULL OR s.phase = $2) AND s.ordinal < $3",
                                      [.text(tenant), .optText(phase?.rawValue), .int(Int64(clamping: before))],
                                      suffix: "ORDER BY s.ordinal DESC LIMIT \(max(1, min(limit, 1001)))")
        }
    }

    /// Starts renewing this node's lease; `handler` runs on the loop.
    public func startLeases(_ handler: @escaping @Sendable (LeaseEvent) -> Void) throws {
        let db = try PostgresConnection(url: url)
        leaseThread = try startThread(name: "store-lease") { [unowned self] in self.leaseLoop(db, handler) }
    }

    private func leaseLoop(_ db: PostgresConnection, _ handler: @escaping @Sendable (LeaseEvent) -> Void) {
        let interval = max(50, leaseMs / 3)
        var failing = false
        var slept = 0
        while !leaseStop.withLock({ $0 }) {
            // Short steps: `close` does not wait a whole interval.
            usleep(50_000)
            slept += 50
            guard slept >= interval else { continue }
            slept = 0
            do {
                let me = nodeId
                let renewed = try db.update("UPDATE nodes SET lease_expires = now() + $1 * interval '1 millisecond' WHERE id = $2 AND lease_expires > now()",
                                            [.int(Int64(leaseMs)), .text(me)])
                if renewed == 0 {
                    node.withLock { $0 = PostgresStore.incarnation(of: nodeName) }
                    owned.withLock { $0.removeAll() }
                    try register(on: db, replacing: false)
                    loop.execute { handler(.lost) }
                    continue
                }
                let wanted = try db.query("SELECT id FROM sessions WHERE owner = $1 AND wanted_by IS NOT NULL LIMIT 1000", [.text(me)]) { r throws(PostgresError) in
                    (0..<r.count).compactMap { r.text($0, 0) }
                }
                if !wanted.isEmpty { loop.execute { handler(.handOff(wanted)) } }
                let adopted = try adoptOrphans(db, me: me)
                if !adopted.isEmpty { loop.execute { handler(.adopted(adopted)) } }
                if failing { failing = false; GroupCommitter.say("leases work again") }
            } catch {
                if !failing { failing = true; GroupCommitter.say("cannot renew the node's lease: \(error)") }
            }
        }
    }

    /// Takes sessions that are not over and have no live owner: those released more than a
    /// lease ago that no node has taken since (a new session nobody connected to included),
    /// and those of nodes whose lease lapsed. A session another live node asked for is left to it.
    private func adoptOrphans(_ db: PostgresConnection, me: String) throws(PostgresError) -> [SessionRecord] {
        var taken: [(String, Int64)] = []
        try db.query("""
        UPDATE sessions SET owner = $1, epoch = epoch + 1, wanted_by = NULL, released_at = NULL WHERE id IN (
          SELECT s.id FROM sessions s WHERE s.ended_at IS NULL AND (
            (s.owner IS NULL AND s.released_at < now() - $2 * interval '1 millisecond'
               AND NOT EXISTS (SELECT 1 FROM nodes w WHERE w.id = s.wanted_by AND w.lease_expires > now()))
            OR (s.owner IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = s.owner AND n.lease_expires > now())))
          LIMIT 100 FOR UPDATE SKIP LOCKED)
        RETURNING id, epoch
        """, [.text(me), .int(Int64(leaseMs))]) { r throws(PostgresError) in
            taken = (0..<r.count).map { (r.text($0, 0) ?? "", r.int($0, 1)) }
        }
        guard !taken.isEmpty else { return [] }
        owned.withLock { o in for (id, e) in taken { o[id] = e } }
        return try PostgresStore.records(db, "s.id = ANY($1::text[])", [.text(PostgresStore.array(taken.map(\.0)))])
    }

    // MARK: Reads

    private func read<T>(_ body: (PostgresConnection) throws(PostgresError) -> T) throws(PostgresError) -> T {
        var result: Result<T, PostgresError>? = nil
        readLock.withLock { _ in result = Result { () throws(PostgresError) -> T in try body(reader) } }
        return try result!.get()
    }

    /// Sessions are taken on demand (`takeOver`) or adopted by the lease thread: none at start.
    public func loadSessions() throws -> [SessionRecord] { [] }

    public func messages(session: String, limit: Int) throws -> [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] {
        try read { db throws(PostgresError) in
            var out: [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] = []
            for stream in 0...1 {
                try db.query("SELECT seq, body, command_id FROM entries WHERE session = $1 AND stream = $2 ORDER BY seq DESC LIMIT $3",
                             [.text(session), .int(Int64(stream)), .int(Int64(max(0, limit)))]) { r throws(PostgresError) in
                    for i in (0..<r.count).reversed() { out.append((stream, Int(r.int(i, 0)), r.bytes(i, 1), r.text(i, 2))) }
                }
            }
            return out
        }
    }

    static func events(_ r: PostgresConnection.Rows) -> [StoredEvent] {
        (0..<r.count).map { i in
            StoredEvent(eventSeq: Int(r.int(i, 0)), type: r.text(i, 1) ?? "", ts: r.int(i, 2), serverTs: r.int(i, 3), source: r.text(i, 4) ?? "client",
                        payload: (r.text(i, 5).flatMap { try? JSONParser.parse($0) })?.objectValue ?? [:])
        }
    }

    public func events(session: String, after: Int, limit: Int, types: Set<String>?) throws -> [StoredEvent] {
        try read { db throws(PostgresError) in
            let filter = (types?.isEmpty ?? true) ? "" : " AND type = ANY($4::text[])"
            var params: [PostgresConnection.Value] = [.text(session), .int(Int64(after)), .int(Int64(limit + 1))]
            if let types, !types.isEmpty { params.append(.text(PostgresStore.array(types.sorted()))) }
            return try db.query("SELECT event_seq, type, ts, server_ts, source, payload FROM events WHERE session = $1 AND event_seq > $2\(filter) ORDER BY event_seq LIMIT $3",
                                params) { r throws(PostgresError) in PostgresStore.events(r) }
        }
    }

    public func lastEvent(session: String, type: String) throws -> StoredEvent? {
        try read { db throws(PostgresError) in
            try db.query("SELECT event_seq, type, ts, server_ts, source, payload FROM events WHERE session = $1 AND type = $2 ORDER BY event_seq DESC LIMIT 1",
                         [.text(session), .text(type)]) { r throws(PostgresError) in PostgresStore.events(r).first }
        }
    }

    public func eventCount(session: String) throws -> Int {
        try read { db throws(PostgresError) in
            try db.query("SELECT COALESCE(MAX(event_seq), 0) FROM events WHERE session = $1", [.text(session)]) { r throws(PostgresError) in Int(r.int(0, 0)) }
        }
    }

    public func journal(session: String, after: Int, limit: Int) throws -> [JournalEntry] {
        try read { db throws(PostgresError) in
            try db.query("SELECT n, direction, ts, body FROM entries WHERE session = $1 AND n > $2 AND journaled ORDER BY n LIMIT $3",
                         [.text(session), .int(Int64(after)), .int(Int64(max(0, limit)))]) { r throws(PostgresError) in
                (0..<r.count).map { i in
                    JournalEntry(n: Int(r.int(i, 0)), direction: JournalEntry.direction(r.text(i, 1) ?? "server"), ts: r.int(i, 2), bytes: r.bytes(i, 3)[...])
                }
            }
        }
    }

    public func usedIds(session: String) throws -> Set<String> {
        try read { db throws(PostgresError) in
            try db.query("SELECT id FROM ids WHERE session = $1 UNION SELECT command_id FROM entries WHERE session = $1 AND command_id IS NOT NULL",
                         [.text(session)]) { r throws(PostgresError) in Set((0..<r.count).compactMap { r.text($0, 0) }) }
        }
    }

    public func lastJournalEntry(session: String) throws -> Int {
        try read { db throws(PostgresError) in
            try db.query("SELECT COALESCE(MAX(n), 0) FROM entries WHERE session = $1", [.text(session)]) { r throws(PostgresError) in Int(r.int(0, 0)) }
        }
    }

    /// One node at a time (an advisory lock) deletes up to 1 000 terminal sessions per call.
    public func purgeTerminal(endedBefore: Int64) throws -> [String] {
        try read { db throws(PostgresError) in
            try db.exec("BEGIN")
            do throws(PostgresError) {
                var mine = false
                try db.query("SELECT pg_try_advisory_xact_lock(7402712)") { r throws(PostgresError) in mine = r.bool(0, 0) }
                var ids: [String] = []
                if mine {
                    try db.query("SELECT id FROM sessions WHERE ended_at IS NOT NULL AND ended_at <= $1 LIMIT 1000", [.int(endedBefore)]) { r throws(PostgresError) in
                        ids = (0..<r.count).compactMap { r.text($0, 0) }
                    }
                    if !ids.isEmpty { try PostgresStore.deleteSessions(ids, on: db) }
                }
                try db.exec("COMMIT")
                return ids
            } catch {
                _ = try? db.exec("ROLLBACK")
                throw error
            }
        }
    }
}

extension String {
    /// The text with `\` and `"` escaped by a backslash (an element of a PostgreSQL array literal).
    func replacingBackslashesAndQuotes() -> String {
        var out = ""
        out.reserveCapacity(utf8.count)
        for c in self {
            if c == "\\" || c == "\"" { out.append("\\") }
            out.append(c)
        }
        return out
    }
}
