import Glibc
import Synchronization
import SocketServer
import SwitchboardProtocol

/// A session's durable row.
public struct SessionRecord: Sendable {
    public var id: String
    public var ordinal: Int
    public var createdAt: Int64
    public var timeouts: SessionTimeouts
    public var metadata: JSONObject?
    public var clientConfig: JSONObject
    public var workerTokenHash: [UInt8]
    public var clientTokenHash: [UInt8]
    public var phase: Phase
    public var reason: EndReason?
    public var result: JSON?
    public var error: JSON?
    /// The mutable bookkeeping of the session (pending slot, counters, subscription, …) as JSON.
    public var state: JSONObject
    /// The tenant (API key) that created the session: a digest of the key, never the key.
    /// Nil for sessions stored before tenants were recorded (every key sees those).
    public var tenant: String? = nil
}

/// Where a journal entry sits in a replay stream, when it is a sequenced message the server
/// sent: such a message is stored once, as its journal entry, and the replay tail is read
/// back from those entries.
public struct StreamPosition: Sendable, Equatable {
    /// 0 for the worker's stream, 1 for the client's.
    public var stream: Int
    public var seq: Int
    public var commandId: String?

    /// The stream of `role`'s outbound messages, and the role a stream belongs to.
    static func stream(of role: Role) -> Int { role == .worker ? 0 : 1 }
    static func role(of stream: Int) -> Role { stream == 0 ? .worker : .client }
}

/// One write. Applied in order, many per transaction.
public enum StoreOp: Sendable {
    case insertSession(SessionRecord)
    case updateLifecycle(id: String, phase: Phase, reason: EndReason?, result: JSON?, error: JSON?)
    case updateState(id: String, state: JSONObject)
    /// Deletes the stream's messages through `throughSeq` that are not journal entries (kept
    /// only for replay: the journal is not stored, or was trimmed past them).
    case trimMessages(session: String, stream: Int, throughSeq: Int)
    case event(session: String, eventSeq: Int, type: String, ts: Int64, serverTs: Int64, source: String, payload: JSONObject)
    /// A journal entry; `message` when it is a message the server sent on a stream, and
    /// `journaled` false when it is stored only for replay (the journal is not stored).
    case journal(session: String, n: Int, direction: StaticString, ts: Int64, body: ArraySlice<UInt8>, message: StreamPosition?, journaled: Bool)
    /// Entries through `throughN` leave the journal; those that are still in a replay tail
    /// (`seq` at or after their stream's `keepFrom`) stay for replay.
    case trimJournal(session: String, throughN: Int, keepFrom: (worker: Int, client: Int))
    case trimEvents(session: String, throughSeq: Int)
    case usedId(session: String, id: String)
    case delete(session: String)
}

/// Where sessions live. The relay writes through `submit` (asynchronous, batched) and reads
/// with the query methods; nothing SQLite-specific crosses this protocol, so a PostgreSQL
/// implementation can stand behind it for several nodes.
public protocol SessionStore: AnyObject, Sendable {
    /// Queues writes; `completion` runs on the event loop once they are committed.
    func submit(_ ops: [StoreOp], completion: (@Sendable () -> Void)?)
    func loadSessions() throws -> [SessionRecord]
    /// The last `limit` messages of each stream, by stream and seq.
    func messages(session: String, limit: Int) throws -> [(stream: Int, seq: Int, body: [UInt8], commandId: String?)]
    func events(session: String, after: Int, limit: Int, types: Set<String>?) throws -> [StoredEvent]
    func lastEvent(session: String, type: String) throws -> StoredEvent?
    func eventCount(session: String) throws -> Int
    func journal(session: String, after: Int, limit: Int) throws -> [JournalEntry]
    func usedIds(session: String) throws -> Set<String>
    /// The number of the session's last journal entry (0 when none).
    func lastJournalEntry(session: String) throws -> Int
    /// Commits `ops` before returning (at start, before any peer is served).
    func commitNow(_ ops: [StoreOp]) throws
    /// Deletes terminal sessions that ended before `endedBefore`; returns their ids.
    func purgeTerminal(endedBefore: Int64) throws -> [String]
    var commitLatencies: [Double] { get }
    /// False from a failed commit until the next successful one.
    var isHealthy: Bool { get }
    /// Commits that failed (each is retried until it succeeds).
    var failedCommits: Int { get }
    func close()
}

/// SQLite in WAL mode. One writer thread commits everything queued since the last commit in
/// one transaction (group commit) and then hands the completions back to the loop; reads use
/// their own connection on the calling thread.
public final class SQLiteStore: SessionStore, @unchecked Sendable {
    private let writer: Database
    private let reader: Database
    private let readLock = Locked<Int>(0)
    private let loop: EventLoop
    private let pending = Locked<(ops: [StoreOp], done: [@Sendable () -> Void], stop: Bool)>(([], [], false))
    private var wakeRead: Int32 = -1
    private var wakeWrite: Int32 = -1
    private var thread: pthread_t?
    private let latencies = Locked<[Double]>([])
    private let health = Atomic<Bool>(true)
    private let failures = Atomic<Int>(0)
    public let path: String
    public var isHealthy: Bool { health.load(ordering: .relaxed) }
    public var failedCommits: Int { failures.load(ordering: .relaxed) }

    public static let schema = """
    CREATE TABLE IF NOT EXISTS sessions (
      id TEXT PRIMARY KEY, ordinal INTEGER NOT NULL, created_at INTEGER NOT NULL, timeouts TEXT NOT NULL,
      metadata TEXT, client_config TEXT NOT NULL, worker_token BLOB NOT NULL, client_token BLOB NOT NULL,
      phase TEXT NOT NULL, reason TEXT, result TEXT, error TEXT, ended_at INTEGER);
    CREATE TABLE IF NOT EXISTS session_state (id TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS sessions_ordinal ON sessions(ordinal);
    CREATE TABLE IF NOT EXISTS messages (session TEXT NOT NULL, stream INTEGER NOT NULL, seq INTEGER NOT NULL,
      body BLOB NOT NULL, command_id TEXT, PRIMARY KEY (session, stream, seq)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS events (session TEXT NOT NULL, event_seq INTEGER NOT NULL, type TEXT NOT NULL,
      ts INTEGER NOT NULL, server_ts INTEGER NOT NULL, source TEXT NOT NULL, payload TEXT NOT NULL,
      PRIMARY KEY (session, event_seq)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS ids (session TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (session, id)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS journal (session TEXT NOT NULL, n INTEGER NOT NULL, direction TEXT NOT NULL,
      ts INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (session, n)) WITHOUT ROWID;
    """

    /// Schema versions after the first, applied in order and recorded in `user_version`.
    static let migrations = [
        "ALTER TABLE sessions ADD COLUMN tenant TEXT",
        // Sequenced messages are stored once, as journal entries (`messages` is only read,
        // for databases written before).
        """
        ALTER TABLE journal ADD COLUMN stream INTEGER; ALTER TABLE journal ADD COLUMN seq INTEGER;
        ALTER TABLE journal ADD COLUMN command_id TEXT; ALTER TABLE journal ADD COLUMN journaled INTEGER NOT NULL DEFAULT 1
        """,
    ]

    static func migrate(_ db: Database) throws(SQLiteError) {
        var version = 0
        try db.query("PRAGMA user_version", []) { r in version = Int(r.int(0)) }
        for (k, sql) in migrations.enumerated() where k >= version {
            try db.exec("BEGIN; \(sql); PRAGMA user_version = \(k + 1); COMMIT;")
        }
    }

    public init(path: String, loop: EventLoop) throws(SQLiteError) {
        self.path = path
        self.loop = loop
        writer = try Database(path: path)
        // A locked database fails a commit after 1 s; the commit is retried (see writerLoop).
        writer.setBusyTimeout(ms: 1000)
        // WAL with synchronous=NORMAL: a commit appends to the WAL without fsync, so it survives
        // a crash of the process (SIGKILL, OOM kill, deploy). Checkpoints (which fsync) run on
        // the writer thread between commits once the WAL passes `checkpointFrames`, after the
        // batch's completions were handed back: no commit runs during a checkpoint, so it
        // copies the whole WAL and the next commit starts the WAL again from its beginning,
        // rewriting pages already in the page cache. (A checkpoint running beside the writer
        // never catches up under sustained load: the WAL grew by ~140 MB/s without bound.)
        try writer.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=67108864; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-65536; PRAGMA mmap_size=1073741824; PRAGMA temp_store=MEMORY;")
        writer.trackWALFrames()
        try writer.exec(SQLiteStore.schema)
        try SQLiteStore.migrate(writer)
        reader = try Database(path: path)
        try reader.exec("PRAGMA cache_size=-16384; PRAGMA mmap_size=1073741824;")
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SQLiteError(description: "pipe failed") }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        do {
            thread = try startThread { self.writerLoop() }
        } catch {
            throw SQLiteError(description: "cannot start the store's threads: \(error)")
        }
        // Submissions made during one loop iteration become one transaction: the writer is
        // woken when the iteration ends, not per submission.
        loop.execute { [weak self] in self?.loop.onIterationEnd { self?.wakeIfNeeded() } }
    }

    private let needsWake = Locked<Bool>(false)

    private func wakeIfNeeded() {
        guard needsWake.withLock({ v in let w = v; v = false; return w }) else { return }
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
    }

    /// The WAL size (in pages) past which the writer checkpoints between commits.
    static let checkpointFrames = 4096

    public func submit(_ ops: [StoreOp], completion: (@Sendable () -> Void)?) {
        let wasEmpty = pending.withLock { p -> Bool in
            let e = p.ops.isEmpty && p.done.isEmpty
            p.ops.append(contentsOf: ops)
            if let completion { p.done.append(completion) }
            return e
        }
        if wasEmpty {
            if loop.inLoop { needsWake.withLock { $0 = true } } else { var b: UInt8 = 1; _ = write(wakeWrite, &b, 1) }
        }
    }

    /// Commits what is queued and stops the writer.
    public func close() {
        pending.withLock { $0.stop = true }
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
        if let thread { pthread_join(thread, nil) }
        thread = nil
        try? writer.exec("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    private func writerLoop() {
        var buf = [UInt8](repeating: 0, count: 64)
        var retries = 0
        while true {
            _ = Glibc.read(wakeRead, &buf, buf.count)
            let (ops, done, stop) = pending.withLock { p -> ([StoreOp], [@Sendable () -> Void], Bool) in
                let r = (p.ops, p.done, p.stop)
                p.ops.removeAll(keepingCapacity: true)
                p.done.removeAll(keepingCapacity: true)
                return r
            }
            if !ops.isEmpty || !done.isEmpty {
                let start = monotonicNanos()
                do {
                    try writer.exec("BEGIN")
                    // State rows are full snapshots: only the last one per session is written.
                    var lastState: [String: JSONObject] = [:]
                    for op in ops {
                        if case .updateState(let id, let state) = op { lastState[id] = state } else { try apply(op, on: writer) }
                    }
                    for (id, state) in lastState { try apply(.updateState(id: id, state: state), on: writer) }
                    try writer.exec("COMMIT")
                } catch {
                    // A failed commit is acknowledged to no one: the batch goes back to the front of
                    // the queue and is retried with backoff until it commits (the server recovers by
                    // itself); meanwhile the relay reports unready and refuses new work.
                    try? writer.exec("ROLLBACK")
                    let first = health.exchange(false, ordering: .relaxed)
                    failures.add(1, ordering: .relaxed)
                    if first {
                        let line = Array("switchboard: store commit failed, retrying: \(error)\n".utf8)
                        line.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
                    }
                    pending.withLock { p in
                        p.ops.insert(contentsOf: ops, at: 0)
                        p.done.insert(contentsOf: done, at: 0)
                    }
                    if stop && failures.load(ordering: .relaxed) > 20 { break }  // shutting down: give up
                    usleep(UInt32(min(1_000_000, 25_000 << min(6, retries))))
                    retries += 1
                    var b: UInt8 = 1
                    _ = write(wakeWrite, &b, 1)
                    continue
                }
                retries = 0
                if !health.exchange(true, ordering: .relaxed) {
                    let line = Array("switchboard: store commits work again\n".utf8)
                    line.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
                }
                let ms = Double(monotonicNanos() - start) / 1e6
                latencies.withLock { l in
                    l.append(ms)
                    if l.count > 10_000 { l.removeFirst(5_000) }
                }
                if !done.isEmpty {
                    loop.execute { for d in done { d() } }
                }
                if writer.framesInWAL >= SQLiteStore.checkpointFrames { try? writer.exec("PRAGMA wal_checkpoint(PASSIVE)") }
            }
            if stop { break }
        }
    }

    public var commitLatencies: [Double] { latencies.withLock { $0 } }

    private func apply(_ op: StoreOp, on db: Database) throws(SQLiteError) {
        switch op {
        case .insertSession(let r):
            try db.query("""
            INSERT OR REPLACE INTO sessions (id, ordinal, created_at, timeouts, metadata, client_config, worker_token, client_token,
              phase, reason, result, error, ended_at, tenant) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL,?)
            """, [.text(r.id), .int(r.ordinal), .int(r.createdAt), .text(SQLiteStore.encode(r.timeouts)), .json(r.metadata.map { .object($0) }),
                  .json(.object(r.clientConfig)), .blob(r.workerTokenHash), .blob(r.clientTokenHash), .text(r.phase.rawValue),
                  .optText(r.reason?.rawValue), .json(r.result), .json(r.error), .optText(r.tenant)])
            try db.query("INSERT OR REPLACE INTO session_state (id, state) VALUES (?,?)", [.text(r.id), .json(.object(r.state))])
        case .updateLifecycle(let id, let phase, let reason, let result, let error):
            try db.query("UPDATE sessions SET phase = ?, reason = ?, result = ?, error = ?, ended_at = ? WHERE id = ?",
                             [.text(phase.rawValue), .optText(reason?.rawValue), .json(result), .json(error),
                              phase.isTerminal ? .int(epochMillis()) : .null, .text(id)])
        case .updateState(let id, let state):
            // State lives in its own narrow table: updating it never rewrites the session row.
            try db.query("INSERT OR REPLACE INTO session_state (id, state) VALUES (?,?)", [.text(id), .json(.object(state))])
        case .trimMessages(let s, let stream, let through):
            try db.query("DELETE FROM messages WHERE session = ? AND stream = ? AND seq <= ?", [.text(s), .int(stream), .int(through)])
            let rows = "FROM journal WHERE session = ?1 AND journaled = 0 AND stream = ?2 AND seq <= ?3"
            try db.query("INSERT OR IGNORE INTO ids (session, id) SELECT session, command_id \(rows) AND command_id IS NOT NULL", [.text(s), .int(stream), .int(through)])
            try db.query("DELETE \(rows)", [.text(s), .int(stream), .int(through)])
        case .event(let s, let n, let type, let ts, let serverTs, let source, let payload):
            try db.query("INSERT OR IGNORE INTO events (session, event_seq, type, ts, server_ts, source, payload) VALUES (?,?,?,?,?,?,?)",
                             [.text(s), .int(n), .text(type), .int(ts), .int(serverTs), .text(source), .json(.object(payload))])
        case .journal(let s, let n, let dir, let ts, let body, let m, let journaled):
            try db.query("INSERT OR REPLACE INTO journal (session, n, direction, ts, body, stream, seq, command_id, journaled) VALUES (?,?,?,?,?,?,?,?,?)",
                             [.text(s), .int(n), .text(dir.description), .int(ts), .bytes(body), m.map { .int($0.stream) } ?? .null,
                              m.map { .int($0.seq) } ?? .null, .optText(m?.commandId), .int(journaled ? 1 : 0)])
        case .trimJournal(let s, let through, let keep):
            let rows = "FROM journal WHERE session = ?1 AND n <= ?2 AND (stream IS NULL OR seq < CASE stream WHEN 0 THEN ?3 ELSE ?4 END)"
            // The command ids of deleted rows stay used.
            try db.query("INSERT OR IGNORE INTO ids (session, id) SELECT session, command_id \(rows) AND command_id IS NOT NULL",
                         [.text(s), .int(through), .int(keep.worker), .int(keep.client)])
            try db.query("DELETE \(rows)", [.text(s), .int(through), .int(keep.worker), .int(keep.client)])
            try db.query("UPDATE journal SET journaled = 0 WHERE session = ? AND n <= ? AND journaled = 1", [.text(s), .int(through)])
        case .trimEvents(let s, let through):
            try db.query("DELETE FROM events WHERE session = ? AND event_seq <= ?", [.text(s), .int(through)])
        case .usedId(let s, let id):
            try db.query("INSERT OR IGNORE INTO ids (session, id) VALUES (?,?)", [.text(s), .text(id)])
        case .delete(let s):
            for table in ["messages", "events", "journal", "ids"] { try db.query("DELETE FROM \(table) WHERE session = ?", [.text(s)]) }
            try db.query("DELETE FROM session_state WHERE id = ?", [.text(s)])
            try db.query("DELETE FROM sessions WHERE id = ?", [.text(s)])
        }
    }

    static func encode(_ t: SessionTimeouts) -> String {
        JSONWriter.string(.object(["connectTimeoutMs": .int(t.connectTimeoutMs), "sessionDurationMs": .int(t.sessionDurationMs),
                                   "disconnectGracePeriodMs": .int(t.disconnectGracePeriodMs), "commandTimeoutMs": .int(t.commandTimeoutMs)]))
    }

    static func decodeTimeouts(_ s: String?) -> SessionTimeouts {
        var t = SessionTimeouts()
        guard let s, let o = (try? JSONParser.parse(s))?.objectValue else { return t }
        t.connectTimeoutMs = o["connectTimeoutMs"]?.intValue ?? t.connectTimeoutMs
        t.sessionDurationMs = o["sessionDurationMs"]?.intValue ?? t.sessionDurationMs
        t.disconnectGracePeriodMs = o["disconnectGracePeriodMs"]?.intValue ?? t.disconnectGracePeriodMs
        t.commandTimeoutMs = o["commandTimeoutMs"]?.intValue ?? t.commandTimeoutMs
        return t
    }

    // MARK: Reads

    /// Reads run under a lock on their own connection (WAL: they do not wait for the writer).
    private func read<T>(_ body: (Database) throws(SQLiteError) -> T) throws(SQLiteError) -> T {
        var result: Result<T, SQLiteError>? = nil
        readLock.withLock { _ in result = Result { () throws(SQLiteError) -> T in try body(reader) } }
        return try result!.get()
    }

    public func loadSessions() throws -> [SessionRecord] {
        try read { db throws(SQLiteError) in
            var out: [SessionRecord] = []
            try db.query("""
            SELECT s.id, s.ordinal, s.created_at, s.timeouts, s.metadata, s.client_config, s.worker_token, s.client_token, s.phase,
                   s.reason, s.result, s.error, st.state, s.tenant FROM sessions s LEFT JOIN session_state st ON st.id = s.id ORDER BY s.ordinal
            """) { r in
                func json(_ i: Int32) -> JSON? { r.text(i).flatMap { try? JSONParser.parse($0) } }
                out.append(SessionRecord(id: r.text(0) ?? "", ordinal: Int(r.int(1)), createdAt: r.int(2), timeouts: SQLiteStore.decodeTimeouts(r.text(3)),
                                         metadata: json(4)?.objectValue, clientConfig: json(5)?.objectValue ?? [:],
                                         workerTokenHash: r.blob(6), clientTokenHash: r.blob(7),
                                         phase: Phase(rawValue: r.text(8) ?? "") ?? .failed, reason: r.text(9).flatMap { EndReason(rawValue: $0) },
                                         result: json(10), error: json(11), state: json(12)?.objectValue ?? [:], tenant: r.text(13)))
            }
            return out
        }
    }

    public func messages(session: String, limit: Int) throws -> [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] {
        try read { db throws(SQLiteError) in
            var out: [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] = []
            for stream in 0...1 {
                var rows: [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] = []
                // Newest first (walking the journal backwards stops after `limit`), then the
                // table of databases written before.
                for sql in ["SELECT seq, body, command_id FROM journal WHERE session = ? AND stream = ? ORDER BY n DESC LIMIT ?",
                            "SELECT seq, body, command_id FROM messages WHERE session = ? AND stream = ? ORDER BY seq DESC LIMIT ?"] {
                    try db.query(sql, [.text(session), .int(stream), .int(limit)]) { r in rows.append((stream, Int(r.int(0)), r.blob(1), r.text(2))) }
                }
                rows.sort { $0.seq < $1.seq }
                out.append(contentsOf: rows.suffix(max(0, limit)))
            }
            return out
        }
    }

    static func event(_ r: Database.Row) -> StoredEvent {
        StoredEvent(eventSeq: Int(r.int(0)), type: r.text(1) ?? "", ts: r.int(2), serverTs: r.int(3), source: r.text(4) ?? "client",
                    payload: (r.text(5).flatMap { try? JSONParser.parse($0) })?.objectValue ?? [:])
    }

    public func events(session: String, after: Int, limit: Int, types: Set<String>?) throws -> [StoredEvent] {
        try read { db throws(SQLiteError) in
            // One more than asked for tells the caller whether there is a next page.
            var out: [StoredEvent] = []
            let typeList = types.map { $0.sorted() } ?? []
            let filter = typeList.isEmpty ? "" : " AND type IN (" + typeList.map { _ in "?" }.joined(separator: ",") + ")"
            try db.query("SELECT event_seq, type, ts, server_ts, source, payload FROM events WHERE session = ? AND event_seq > ?\(filter) ORDER BY event_seq LIMIT ?",
                         [.text(session), .int(after)] + typeList.map { .text($0) } + [.int(limit + 1)]) { r in
                out.append(SQLiteStore.event(r))
            }
            return out
        }
    }

    public func lastEvent(session: String, type: String) throws -> StoredEvent? {
        try read { db throws(SQLiteError) in
            var out: StoredEvent? = nil
            try db.query("SELECT event_seq, type, ts, server_ts, source, payload FROM events WHERE session = ? AND type = ? ORDER BY event_seq DESC LIMIT 1",
                         [.text(session), .text(type)]) { r in out = SQLiteStore.event(r) }
            return out
        }
    }

    public func eventCount(session: String) throws -> Int {
        try read { db throws(SQLiteError) in
            var n = 0
            try db.query("SELECT COALESCE(MAX(event_seq), 0) FROM events WHERE session = ?", [.text(session)]) { r in n = Int(r.int(0)) }
            return n
        }
    }

    public func journal(session: String, after: Int, limit: Int) throws -> [JournalEntry] {
        try read { db throws(SQLiteError) in
            var out: [JournalEntry] = []
            try db.query("SELECT n, direction, ts, body FROM journal WHERE session = ? AND n > ? AND journaled = 1 ORDER BY n LIMIT ?",
                         [.text(session), .int(after), .int(limit)]) { r in
                out.append(JournalEntry(n: Int(r.int(0)), direction: JournalEntry.direction(r.text(1) ?? "server"), ts: r.int(2), bytes: r.blob(3)[...]))
            }
            return out
        }
    }

    public func usedIds(session: String) throws -> Set<String> {
        try read { db throws(SQLiteError) in
            var out = Set<String>()
            // Ids of commands still in the journal are on their `server.command` rows.
            try db.query("SELECT id FROM ids WHERE session = ?1 UNION SELECT command_id FROM journal WHERE session = ?1 AND command_id IS NOT NULL",
                         [.text(session)]) { r in if let t = r.text(0) { out.insert(t) } }
            return out
        }
    }

    public func commitNow(_ ops: [StoreOp]) throws {
        try read { db throws(SQLiteError) in
            try db.exec("BEGIN")
            do throws(SQLiteError) {
                for op in ops { try apply(op, on: db) }
                try db.exec("COMMIT")
            } catch {
                try? db.exec("ROLLBACK")
                throw error
            }
        }
    }

    public func lastJournalEntry(session: String) throws -> Int {
        try read { db throws(SQLiteError) in
            var n = 0
            try db.query("SELECT MAX(n) FROM journal WHERE session = ?", [.text(session)]) { r in n = Int(r.int(0)) }
            return n
        }
    }

    public func purgeTerminal(endedBefore: Int64) throws -> [String] {
        var ids: [String] = []
        try read { db throws(SQLiteError) in
            try db.query("SELECT id FROM sessions WHERE ended_at IS NOT NULL AND ended_at <= ?", [.int(endedBefore)]) { r in
                if let id = r.text(0) { ids.append(id) }
            }
        }
        if !ids.isEmpty { submit(ids.map { .delete(session: $0) }, completion: nil) }
        return ids
    }
}

extension JournalEntry {
    static let directions: [StaticString] = ["worker_to_server", "server_to_worker", "client_to_server", "server_to_client", "server"]
    static func direction(_ s: String) -> StaticString { directions.first { $0.description == s } ?? "server" }
}
