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

    public init(stream: Int, seq: Int, commandId: String?) {
        self.stream = stream
        self.seq = seq
        self.commandId = commandId
    }

    /// The stream of `role`'s outbound messages, and the role a stream belongs to.
    static func stream(of role: Role) -> Int { role == .worker ? 0 : 1 }
    static func role(of stream: Int) -> Role { stream == 0 ? .worker : .client }
}

/// A journal entry to store; `message` when it is a message the server sent on a stream, and
/// `journaled` false when it is stored only for replay (the journal is not stored). A struct
/// rather than the op's tuple: copying it is three retains, not the runtime's generic copy
/// of a tuple.
public struct EntryWrite: Sendable {
    public var session: String
    public var n: Int
    public var direction: StaticString
    public var ts: Int64
    public var body: ArraySlice<UInt8>
    public var message: StreamPosition?
    public var journaled: Bool
    /// Bytes of `body` (offsets from its start) that the session's next entry repeats: the
    /// params of a worker's command that its `server.command` carries, the result of a
    /// client's response that its `server.command_result` carries.
    public var repeatedByNext: Range<Int>? = nil
    /// Where in `body` this entry repeats bytes of the session's previous entry.
    public var repeatsPrevious: Range<Int>? = nil
}

/// One write. Applied in order, many per transaction.
public enum StoreOp: Sendable {
    case insertSession(SessionRecord)
    case updateLifecycle(id: String, phase: Phase, reason: EndReason?, result: JSON?, error: JSON?)
    /// The session's state row: JSON text (`Session.stateSnapshot`).
    case updateState(id: String, state: [UInt8])
    /// Deletes the stream's messages through `throughSeq` that are not journal entries (kept
    /// only for replay: the journal is not stored, or was trimmed past them).
    case trimMessages(session: String, stream: Int, throughSeq: Int)
    case event(session: String, eventSeq: Int, type: String, ts: Int64, serverTs: Int64, source: String, payload: JSONObject)
    /// A journal entry (`EntryWrite`).
    case journal(EntryWrite)
    /// Entries through `throughN` leave the journal; those that are still in a replay tail
    /// (`seq` at or after their stream's `keepFrom`) stay for replay.
    case trimJournal(session: String, throughN: Int, keepFrom: (worker: Int, client: Int))
    case trimEvents(session: String, throughSeq: Int)
    case usedId(session: String, id: String)
    case delete(session: String)
    /// This node stops serving the session (several nodes: its row loses its owner, after
    /// everything queued before is committed). Nothing to do for a single node's store.
    case release(session: String)

    public static func journal(session: String, n: Int, direction: StaticString, ts: Int64, body: ArraySlice<UInt8>,
                               message: StreamPosition?, journaled: Bool,
                               repeatedByNext: Range<Int>? = nil, repeatsPrevious: Range<Int>? = nil) -> StoreOp {
        .journal(EntryWrite(session: session, n: n, direction: direction, ts: ts, body: body, message: message, journaled: journaled,
                            repeatedByNext: repeatedByNext, repeatsPrevious: repeatsPrevious))
    }

    /// The session the op writes to.
    var session: String {
        switch self {
        case .insertSession(let r): return r.id
        case .updateLifecycle(let id, _, _, _, _), .updateState(let id, _): return id
        case .journal(let e): return e.session
        case .trimMessages(let s, _, _), .event(let s, _, _, _, _, _, _),
             .trimJournal(let s, _, _), .trimEvents(let s, _), .usedId(let s, _), .delete(let s), .release(let s):
            return s
        }
    }
}

/// One group commit's writes: the ops in the order they were queued, less the state
/// snapshots that a later snapshot of the same session in the batch replaces (a state row is
/// a full snapshot). Nothing is copied: superseded ops are only marked.
struct StoreBatch {
    let ops: [StoreOp]
    private var superseded: [Bool]

    init(_ ops: [StoreOp]) {
        self.ops = ops
        superseded = Array(repeating: false, count: ops.count)
        var last: [String: Int] = [:]
        for i in ops.indices {
            guard case .updateState(let id, _) = ops[i] else { continue }
            if let earlier = last.updateValue(i, forKey: id) { superseded[earlier] = true }
        }
    }

    var isEmpty: Bool { ops.isEmpty }

    /// Calls `body` with each op to write, in order.
    func forEach<E: Error>(_ body: (StoreOp) throws(E) -> Void) throws(E) {
        for i in ops.indices where !superseded[i] { try body(ops[i]) }
    }

    /// `forEach`, except that journal entries go to `entries` in groups of up to `maxRun`, in
    /// their order, as their positions in `ops` (no op is copied). The ops between the entries
    /// of a group that do not touch stored entries (state rows, events, ids, lifecycle) run
    /// before the group, which is written before any op that does (a trim or a delete): all
    /// of them commit together, so only the order of writes to the same rows matters.
    func forEach<E: Error>(maxRun: Int, entries: ([Int]) throws(E) -> Void, _ body: (StoreOp) throws(E) -> Void) throws(E) {
        var run: [Int] = []
        run.reserveCapacity(maxRun)
        func flush() throws(E) {
            guard !run.isEmpty else { return }
            try entries(run)
            run.removeAll(keepingCapacity: true)
        }
        for i in ops.indices where !superseded[i] {
            switch ops[i] {
            case .journal:
                run.append(i)
                if run.count == maxRun { try flush() }
            case .trimMessages, .trimJournal, .delete:
                try flush()
                try body(ops[i])
            default:
                try body(ops[i])
            }
        }
        try flush()
    }

    /// The sessions the batch writes to.
    var sessions: Set<String> { Set(ops.map(\.session)) }
}

/// Where sessions live. The relay writes through `submit` (asynchronous, batched) and reads
/// with the query methods; nothing SQLite-specific crosses this protocol, so a PostgreSQL
/// implementation can stand behind it for several nodes.
public protocol SessionStore: AnyObject, Sendable {
    /// Queues writes; `completion` runs on the event loop once they are committed.
    func submit(_ ops: [StoreOp], completion: (@Sendable () -> Void)?)
    /// Queues one write (no array is made for it: most writes come one at a time).
    func submit(_ op: StoreOp)
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
    var commitStats: CommitStats { get }
    /// False from a failed commit until the next successful one.
    var isHealthy: Bool { get }
    /// Commits that failed (each is retried until it succeeds).
    var failedCommits: Int { get }
    func close()
}

/// SQLite in WAL mode. One writer thread commits everything queued since the last commit in
/// one transaction (group commit) and then hands the completions back to the loop; a loop
/// iteration that ends while the writer is idle is committed by the loop itself
/// (`GroupCommitter.OnLoop`). Reads use their own connection on the calling thread.
///
/// Journal entries and state snapshots are appended to two tables keyed by a growing rowid
/// (`entries`, `states`): a commit writes the pages its bytes fill, shared by every session in
/// it, instead of a B-tree leaf per session. Which rows belong to which session is kept in
/// memory (`EntryIndex`, rebuilt from the tables at start). Rows nothing reads any more are
/// deleted in batches on the writer, between commits (`tidyUp`): superseded state rows 1 024
/// at a time, entry rows a trim let go right after each checkpoint, which already holds
/// commits back. (A session's journal trims 256 entries at a time; deleting them in the
/// commit of the command that trimmed held that command back a millisecond or two, 1 command
/// in 64 at one session. A loop commit that deletes 1 024 state rows could pass 2 ms and
/// leave the loop's commits to the writer for a second.)
public final class SQLiteStore: SessionStore, @unchecked Sendable {
    private let writer: Database
    private let index = Locked(EntryIndex())
    private let reader: Database
    private let readLock = Locked<Int>(0)
    private var committer: GroupCommitter!
    public let path: String
    public var isHealthy: Bool { committer.isHealthy }
    public var failedCommits: Int { committer.failedCommits }
    public var commitStats: CommitStats { committer.commitStats }

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
        // Entries and state snapshots are appended (rowid `g`), indexed per session in memory.
        // Messages of the table from before are replay-only entries numbered 0.
        """
        CREATE TABLE entries (g INTEGER PRIMARY KEY, session TEXT NOT NULL, n INTEGER NOT NULL, direction TEXT NOT NULL,
          ts INTEGER NOT NULL, body BLOB NOT NULL, stream INTEGER, seq INTEGER, command_id TEXT, journaled INTEGER NOT NULL);
        INSERT INTO entries (session, n, direction, ts, body, stream, seq, command_id, journaled)
          SELECT session, 0, CASE stream WHEN 0 THEN 'server_to_worker' ELSE 'server_to_client' END, 0, body, stream, seq, command_id, 0
          FROM messages ORDER BY session, stream, seq;
        INSERT INTO entries (session, n, direction, ts, body, stream, seq, command_id, journaled)
          SELECT session, n, direction, ts, body, stream, seq, command_id, journaled FROM journal ORDER BY session, n;
        CREATE TABLE states (g INTEGER PRIMARY KEY, session TEXT NOT NULL, state TEXT NOT NULL);
        INSERT INTO states (session, state) SELECT id, state FROM session_state ORDER BY id;
        DROP TABLE messages; DROP TABLE journal; DROP TABLE session_state
        """,
        // Bytes an entry shares with the session's next one (a command's params, a response's
        // result) are stored once, in the next entry: the entry's row leaves them out, and
        // they go back in at `shared_at` from `shared_from` of the next entry's body.
        """
        ALTER TABLE entries ADD COLUMN shared_at INTEGER; ALTER TABLE entries ADD COLUMN shared_from INTEGER;
        ALTER TABLE entries ADD COLUMN shared_count INTEGER
        """,
    ]

    /// Superseded state rows are deleted between commits once this many have gathered.
    static let supersededBatch = 1024
    /// Rows waiting to be deleted are deleted in a commit once this many have gathered (the
    /// writer has not come to them between commits).
    static let untidyAtMost = 65_536

    static func migrate(_ db: Database) throws(SQLiteError) {
        var version = 0
        try db.query("PRAGMA user_version", []) { r in version = Int(r.int(0)) }
        // The first layout, which the migrations start from (a database at a later version
        // has dropped some of its tables).
        if version == 0 { try db.exec(schema) }
        for (k, sql) in migrations.enumerated() where k >= version {
            try db.exec("BEGIN; \(sql); PRAGMA user_version = \(k + 1); COMMIT;")
        }
    }

    public init(path: String, loop: EventLoop) throws(SQLiteError) {
        self.path = path
        writer = try Database(path: path)
        // A locked database fails a commit after 1 s; the commit is retried (GroupCommitter).
        writer.setBusyTimeout(ms: SQLiteStore.busyTimeoutMs)
        // WAL with synchronous=NORMAL: a commit appends to the WAL without fsync, so it survives
        // a crash of the process (SIGKILL, OOM kill, deploy). Checkpoints (which fsync) run on
        // the writer thread between commits once the WAL passes `checkpointFrames`, after the
        // batch's completions were handed back: no commit runs during a checkpoint, so it
        // copies the whole WAL and the next commit starts the WAL again from its beginning,
        // rewriting pages already in the page cache. (A checkpoint running beside the writer
        // never catches up under sustained load: the WAL grew by ~140 MB/s without bound.)
        try writer.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=67108864; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-65536; PRAGMA mmap_size=1073741824; PRAGMA temp_store=MEMORY;")
        writer.trackWALFrames()
        try SQLiteStore.migrate(writer)
        reader = try Database(path: path)
        try reader.exec("PRAGMA cache_size=-16384; PRAGMA mmap_size=1073741824;")
        try loadIndex()
        do {
            committer = try GroupCommitter(loop: loop, name: "store", commit: { [unowned self] batch in try self.commit(batch); return [] },
                                           recover: { [unowned self] in try? self.loadIndex() },
                                           idle: { [unowned self] in
                                               let checkpoint = wantsCheckpoint
                                               if checkpoint { try? writer.exec("PRAGMA wal_checkpoint(PASSIVE)") }
                                               // Into the WAL started again (it stays near `checkpointFrames`).
                                               tidyUp(all: checkpoint)
                                           },
                                           onLoop: GroupCommitter.OnLoop(commit: { [unowned self] batch in
                                               // The loop does not wait for a lock another process holds.
                                               writer.setBusyTimeout(ms: 0)
                                               defer { writer.setBusyTimeout(ms: SQLiteStore.busyTimeoutMs) }
                                               try self.commit(batch)
                                           }, needsIdle: { [unowned self] in wantsCheckpoint || supersededBatchDue }))
        } catch {
            throw SQLiteError(description: "cannot start the store's writer: \(error)")
        }
    }


    /// Rebuilds the in-memory index from the tables (at start, and after a failed commit).
    private func loadIndex() throws(SQLiteError) {
        var fresh = EntryIndex()
        try writer.query("SELECT g, session, n, seq, stream, journaled, command_id IS NOT NULL FROM entries ORDER BY g") { r in
            fresh.load(r.text(1) ?? "", EntryIndex.Row(g: r.int(0), n: Int(r.int(2)), seq: Int(r.int(3)),
                                                      stream: r.isNull(4) ? -1 : Int8(clamping: r.int(4)), journaled: r.int(5) != 0,
                                                      hasCommandId: r.int(6) != 0))
        }
        fresh.finishLoading()
        try writer.query("SELECT g, session FROM states ORDER BY g") { r in fresh.setState(r.text(1) ?? "", g: r.int(0)) }
        index.withLock { $0 = fresh }
    }

    /// The WAL size (in pages) past which the writer checkpoints between commits. Commits wait
    /// while it runs: at 4 096 pages (16 MiB) each checkpoint held them back 15–25 ms and the
    /// 100-session p99 was 21–23 ms; at 2 048 it is 14 ms with the same throughput, and the
    /// 1-session p99 is unchanged; at 1 024 that p99 grows, at 256 it is five times as long
    /// (docs/performance.md).
    static let checkpointFrames = 2048
    /// How long the writer waits for a lock another process holds before a commit fails.
    static let busyTimeoutMs: Int32 = 1000

    /// Whether the WAL has grown past `checkpointFrames` (on the thread holding the writer).
    private var wantsCheckpoint: Bool { writer.framesInWAL >= SQLiteStore.checkpointFrames }
    /// Whether a batch of superseded state rows waits to be deleted.
    private var supersededBatchDue: Bool { index.withLock { $0.superseded.count } >= SQLiteStore.supersededBatch }

    public func submit(_ ops: [StoreOp], completion: (@Sendable () -> Void)?) { committer.submit(ops, completion: completion) }
    public func submit(_ op: StoreOp) { committer.submit(op) }

    /// Commits what is queued and stops the writer.
    public func close() {
        committer.close()
        tidyUp(all: true)
        try? writer.exec("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    /// One group commit. On failure it rolls back; the index, which took the batch's rows, is
    /// then read back from what is committed (`recover`).
    private func commit(_ batch: StoreBatch) throws(SQLiteError) {
        do {
            try writer.run("BEGIN")
            try batch.forEach(maxRun: SQLiteStore.entriesPerInsert,
                              entries: { run throws(SQLiteError) in try insert(entries: run.lazy.map { batch.ops[$0] }, on: writer) },
                              { op throws(SQLiteError) in try apply(op, on: writer) })
            if index.withLock({ $0.untidy }) >= SQLiteStore.untidyAtMost { try tidy(all: true) }
            try writer.run("COMMIT")
        } catch {
            try? writer.exec("ROLLBACK")
            throw error
        }
    }

    /// Deletes, in the open transaction, the superseded state rows once a batch has gathered,
    /// or with `all` every row waiting to be: superseded states and the entry rows trims let
    /// go (their command ids kept in `ids` first). One statement for each kind (the rowids as
    /// a JSON array).
    private func tidy(all: Bool) throws(SQLiteError) {
        let (states, entries) = index.withLock { x in
            (x.takeSuperseded(atLeast: all ? 1 : SQLiteStore.supersededBatch), all ? x.takeUnlinked() : [])
        }
        func list(_ g: some Sequence<Int64>) -> SQLValue { .text("[" + g.map(String.init).joined(separator: ",") + "]") }
        if !states.isEmpty { try writer.run("DELETE FROM states WHERE g IN (SELECT value FROM json_each(?))", [list(states)]) }
        let withIds = entries.filter(\.hasCommandId)
        if !withIds.isEmpty {
            try writer.run("INSERT OR IGNORE INTO ids (session, id) SELECT session, command_id FROM entries WHERE g IN (SELECT value FROM json_each(?)) AND command_id IS NOT NULL",
                           [list(withIds.map(\.g))])
        }
        if !entries.isEmpty { try writer.run("DELETE FROM entries WHERE g IN (SELECT value FROM json_each(?))", [list(entries.map(\.g))]) }
    }

    /// `tidy` in a transaction of its own, on the writer between commits (`all` after a
    /// checkpoint and at close). If it fails, the rows stay and the index is read back from
    /// the tables (which lists them again).
    private func tidyUp(all: Bool) {
        guard all ? index.withLock({ $0.untidy }) > 0 : supersededBatchDue else { return }
        do {
            try writer.run("BEGIN")
            try tidy(all: all)
            try writer.run("COMMIT")
        } catch {
            try? writer.exec("ROLLBACK")
            try? loadIndex()
        }
    }

    private func apply(_ op: StoreOp, on db: Database) throws(SQLiteError) {
        switch op {
        case .insertSession(let r):
            try db.query("""
            INSERT OR REPLACE INTO sessions (id, ordinal, created_at, timeouts, metadata, client_config, worker_token, client_token,
              phase, reason, result, error, ended_at, tenant) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL,?)
            """, [.text(r.id), .int(r.ordinal), .int(r.createdAt), .text(SQLiteStore.encode(r.timeouts)), .json(r.metadata.map { .object($0) }),
                  .json(.object(r.clientConfig)), .blob(r.workerTokenHash), .blob(r.clientTokenHash), .text(r.phase.rawValue),
                  .optText(r.reason?.rawValue), .json(r.result), .json(r.error), .optText(r.tenant)])
            try appendState(r.id, JSONWriter.serialize(.object(r.state)), on: db)
        case .updateLifecycle(let id, let phase, let reason, let result, let error):
            try db.query("UPDATE sessions SET phase = ?, reason = ?, result = ?, error = ?, ended_at = ? WHERE id = ?",
                             [.text(phase.rawValue), .optText(reason?.rawValue), .json(result), .json(error),
                              phase.isTerminal ? .int(epochMillis()) : .null, .text(id)])
        case .updateState(let id, let state):
            try appendState(id, state, on: db)
        case .trimMessages(let s, let stream, let through):
            index.withLock { $0.unlink(s, $0.trimMessages(s, stream: stream, throughSeq: through)) }
        case .event(let s, let n, let type, let ts, let serverTs, let source, let payload):
            try db.run("INSERT OR IGNORE INTO events (session, event_seq, type, ts, server_ts, source, payload) VALUES (?,?,?,?,?,?,?)",
                             [.text(s), .int(n), .text(type), .int(ts), .int(serverTs), .text(source), .json(.object(payload))])
        case .journal:
            try insert(entries: [op], on: db)
        case .trimJournal(let s, let through, let keep):
            let unjournaled = index.withLock { x in
                let (gone, unjournaled) = x.trimJournal(s, throughN: through, keepFrom: keep)
                x.unlink(s, gone)
                return unjournaled
            }
            for g in unjournaled { try db.run("UPDATE entries SET journaled = 0 WHERE g = ?", [.int(g)]) }
        case .trimEvents(let s, let through):
            try db.query("DELETE FROM events WHERE session = ? AND event_seq <= ?", [.text(s), .int(through)])
        case .usedId(let s, let id):
            try db.query("INSERT OR IGNORE INTO ids (session, id) VALUES (?,?)", [.text(s), .text(id)])
        case .delete(let s):
            let (rows, state) = index.withLock { $0.remove(s) }
            for r in rows { try db.run("DELETE FROM entries WHERE g = ?", [.int(r.g)]) }
            if let state { try db.run("DELETE FROM states WHERE g = ?", [.int(state)]) }
            for table in ["events", "ids"] { try db.query("DELETE FROM \(table) WHERE session = ?", [.text(s)]) }
            try db.query("DELETE FROM sessions WHERE id = ?", [.text(s)])
        case .release:
            break
        }
    }

    /// Journal entries per INSERT statement: one statement for several rows costs SQLite less
    /// than a statement each (`scripts/store-floor.sh`).
    static let entriesPerInsert = 8

    static func insertEntries(rows: Int) -> String {
        "INSERT INTO entries (g, session, n, direction, ts, body, stream, seq, command_id, journaled, shared_at, shared_from, shared_count) VALUES "
            + Array(repeating: "(?,?,?,?,?,?,?,?,?,?,?,?,?)", count: rows).joined(separator: ",")
    }

    /// Where an entry's row left out bytes that the session's next entry holds.
    struct Shared: Equatable {
        /// Where they go back in the entry's body as stored.
        var at: Int
        /// Where they start in the next entry's body.
        var from: Int
        var count: Int
    }

    /// What to store of `e`: its body, less the bytes that `next` (the session's next entry,
    /// written in the same commit) repeats, when it does: both say where the bytes are, and
    /// they are compared before one copy is left out.
    static func stored(_ e: EntryWrite, next: EntryWrite?) -> (body: ArraySlice<UInt8>, shared: Shared?) {
        guard let r = e.repeatedByNext, let next, next.session == e.session, next.n == e.n + 1, let r2 = next.repeatsPrevious,
              r.count == r2.count, r.count >= JSONWriter.markedRawMinimum,
              r.lowerBound >= 0, r.upperBound <= e.body.count, r2.lowerBound >= 0, r2.upperBound <= next.body.count
        else { return (e.body, nil) }
        let same = e.body.withUnsafeBytes { a in
            next.body.withUnsafeBytes { b in memcmp(a.baseAddress! + r.lowerBound, b.baseAddress! + r2.lowerBound, r.count) == 0 }
        }
        guard same else { return (e.body, nil) }
        var kept = [UInt8]()
        kept.reserveCapacity(e.body.count - r.count)
        kept.append(contentsOf: e.body.prefix(r.lowerBound))
        kept.append(contentsOf: e.body.dropFirst(r.upperBound))
        return (kept[...], Shared(at: r.lowerBound, from: r2.lowerBound, count: r.count))
    }

    /// An entry's body as it was written, from its row (`stored`) and the next entry's body.
    /// Offsets that do not fit (a next entry that is missing) put `null` where the shared
    /// bytes were: the entry stays a JSON value.
    static func restored(_ stored: some Collection<UInt8>, shared: Shared, next: [UInt8]?) -> [UInt8] {
        guard shared.at >= 0, shared.at <= stored.count, shared.count >= 0, shared.from >= 0 else { return Array(stored) }
        let middle: ArraySlice<UInt8>
        if let next, shared.from <= next.count, shared.count <= next.count - shared.from {
            middle = next[shared.from..<(shared.from + shared.count)]
        } else {
            middle = Array("null".utf8)[...]
        }
        var body: [UInt8] = []
        body.reserveCapacity(stored.count + middle.count)
        body.append(contentsOf: stored.prefix(shared.at))
        body.append(contentsOf: middle)
        body.append(contentsOf: stored.dropFirst(shared.at))
        return body
    }

    /// The first journal op of `session` in `ops`.
    private static func nextEntry(of session: String, in ops: some Collection<StoreOp>) -> EntryWrite? {
        for op in ops { if case .journal(let x) = op, x.session == session { return x } }
        return nil
    }

    /// Appends journal entries (`.journal` ops; any other op is skipped) with one statement.
    /// The index numbers the rows and takes them first: if the statement fails, the commit
    /// rolls back and the index is read back from the tables.
    private func insert(entries ops: some Collection<StoreOp>, on db: Database) throws(SQLiteError) {
        var replaced: [Int64] = []
        var count = 0
        let first = index.withLock { x in
            let first = x.nextG
            for op in ops {
                guard case .journal(let e) = op else { continue }
                let m = e.message
                let row = EntryIndex.Row(g: x.nextG, n: e.n, seq: m?.seq ?? 0, stream: m.map { Int8(clamping: $0.stream) } ?? -1,
                                         journaled: e.journaled, hasCommandId: m?.commandId != nil)
                if let old = x.append(e.session, row) { replaced.append(old) }
                count += 1
            }
            return first
        }
        guard count > 0 else { return }
        try db.run(numbered: count, SQLiteStore.insertEntries(rows: count)) { b in
            var i: Int32 = 1, g = first
            var position = 0
            for op in ops {
                defer { position += 1 }
                guard case .journal(let e) = op else { continue }
                let next = e.repeatedByNext == nil ? nil : SQLiteStore.nextEntry(of: e.session, in: ops.dropFirst(position + 1))
                let (body, shared) = SQLiteStore.stored(e, next: next)
                b.int(i, g); b.text(i + 1, e.session); b.int(i + 2, e.n); b.literal(i + 3, e.direction); b.int(i + 4, e.ts); b.bytes(i + 5, body)
                if let m = e.message {
                    b.int(i + 6, m.stream); b.int(i + 7, m.seq)
                    if let c = m.commandId { b.text(i + 8, c) } else { b.null(i + 8) }
                } else {
                    b.null(i + 6); b.null(i + 7); b.null(i + 8)
                }
                b.int(i + 9, e.journaled ? 1 : 0)
                if let shared {
                    b.int(i + 10, shared.at); b.int(i + 11, shared.from); b.int(i + 12, shared.count)
                } else {
                    b.null(i + 10); b.null(i + 11); b.null(i + 12)
                }
                i += 13
                g += 1
            }
        }
        for g in replaced { try db.run("DELETE FROM entries WHERE g = ?", [.int(g)]) }
    }

    private func appendState(_ session: String, _ state: [UInt8], on db: Database) throws(SQLiteError) {
        try db.run("INSERT INTO states (session, state) VALUES (?,?)", bind: { b in b.text(1, session); b.utf8(2, state) })
        let g = db.lastInsertRowid
        index.withLock { $0.setState(session, g: g) }
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
            let states = index.withLock { $0.states }
            try db.query("""
            SELECT id, ordinal, created_at, timeouts, metadata, client_config, worker_token, client_token, phase,
                   reason, result, error, tenant FROM sessions ORDER BY ordinal
            """) { r in
                func json(_ i: Int32) -> JSON? { r.text(i).flatMap { try? JSONParser.parse($0) } }
                out.append(SessionRecord(id: r.text(0) ?? "", ordinal: Int(r.int(1)), createdAt: r.int(2), timeouts: SQLiteStore.decodeTimeouts(r.text(3)),
                                         metadata: json(4)?.objectValue, clientConfig: json(5)?.objectValue ?? [:],
                                         workerTokenHash: r.blob(6), clientTokenHash: r.blob(7),
                                         phase: Phase(rawValue: r.text(8) ?? "") ?? .failed, reason: r.text(9).flatMap { EndReason(rawValue: $0) },
                                         result: json(10), error: json(11), state: [:], tenant: r.text(12)))
            }
            for i in out.indices {
                guard let g = states[out[i].id] else { continue }
                try db.query("SELECT state FROM states WHERE g = ?", [.int(g)]) { r in
                    out[i].state = r.text(0).flatMap { try? JSONParser.parse($0) }?.objectValue ?? [:]
                }
            }
            return out
        }
    }

    public func messages(session: String, limit: Int) throws -> [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] {
        let rows = index.withLock { $0.tails(session, limit: limit) }
        return try read { db throws(SQLiteError) in
            var out: [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] = []
            for row in rows {
                try db.run("SELECT body, command_id FROM entries WHERE g = ?", [.int(row.g)]) { r in
                    out.append((Int(row.stream), row.seq, r.blob(0), r.text(1)))
                }
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
        let rows = index.withLock { $0.journal(session, after: after, limit: limit) }
        return try read { db throws(SQLiteError) in
            var out: [JournalEntry] = []
            for row in rows {
                var entry: JournalEntry?, shared: Shared?
                try db.run("SELECT n, direction, ts, body, shared_at, shared_from, shared_count FROM entries WHERE g = ?", [.int(row.g)]) { r in
                    entry = JournalEntry(n: Int(r.int(0)), direction: JournalEntry.direction(r.text(1) ?? "server"), ts: r.int(2), bytes: r.blob(3)[...])
                    if !r.isNull(6) {
                        shared = Shared(at: Int(clamping: r.int(4)), from: Int(clamping: r.int(5)), count: Int(clamping: r.int(6)))
                    }
                }
                guard var entry else { continue }
                if let shared {
                    // The bytes left out are in the session's next entry.
                    var next: [UInt8]?
                    if let g = index.withLock({ $0.entry(session, n: row.n + 1)?.g }) {
                        try db.run("SELECT body FROM entries WHERE g = ?", [.int(g)]) { r in next = r.blob(0) }
                    }
                    entry.bytes = SQLiteStore.restored(entry.bytes, shared: shared, next: next)[...]
                }
                out.append(entry)
            }
            return out
        }
    }

    public func usedIds(session: String) throws -> Set<String> {
        let rows = index.withLock { $0.commandRows(session) }
        return try read { db throws(SQLiteError) in
            var out = Set<String>()
            try db.query("SELECT id FROM ids WHERE session = ?", [.text(session)]) { r in if let t = r.text(0) { out.insert(t) } }
            // Ids of commands still stored are on their `server.command` rows.
            for row in rows {
                try db.run("SELECT command_id FROM entries WHERE g = ?", [.int(row.g)]) { r in if let t = r.text(0) { out.insert(t) } }
            }
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
        index.withLock { $0.lastEntry(session) }
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
