import Testing
import Foundation
import Glibc
import SocketServer
import SwitchboardProtocol
@testable import SwitchboardServer

@Suite struct StoreTests {
    func record(_ id: String, _ ordinal: Int) -> SessionRecord {
        SessionRecord(id: id, ordinal: ordinal, createdAt: epochMillis(), timeouts: SessionTimeouts(), metadata: nil, clientConfig: [:],
                      workerTokenHash: [1], clientTokenHash: [2], phase: .created, reason: nil, result: nil, error: nil, state: [:])
    }

    static func path(_ name: String) -> String { "/tmp/switchboard-store-test-\(name)-\(getpid()).db" }

    /// Opens a store at `path` on a loop of its own, runs `body`, then closes both and removes
    /// the files.
    func withStore(_ path: String, _ body: (SQLiteStore) throws -> Void) throws {
        let loop = try EventLoop.spawn()
        defer { loop.stop() }
        defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
        let store = try SQLiteStore(path: path, loop: loop)
        defer { store.close() }
        try body(store)
    }

    /// Submits `ops` and waits (bounded) until they are committed.
    func commit(_ store: any SessionStore, _ ops: [StoreOp]) {
        let done = DispatchSemaphore(value: 0)
        store.submit(ops) { done.signal() }
        #expect(done.wait(timeout: .now() + 10) == .success, "not committed within 10 s")
    }

    /// A batch writes one state snapshot per session, its last, where it was queued; the other
    /// ops keep their order.
    @Test func aBatchKeepsTheLastStateOfEachSession() {
        func state(_ id: String, _ k: Int) -> StoreOp { .updateState(id: id, state: JSONWriter.serialize(.object(["k": .int(k)]))) }
        func describe(_ ops: [StoreOp]) -> [String] {
            ops.map { op in
                if case .updateState(let id, let st) = op { return "\(id)=\((try? JSONParser.parse(st))?["k"]?.intValue ?? -1)" }
                return "op:\(op.session)"
            }
        }
        let cases: [([StoreOp], [String])] = [
            ([], []),
            ([state("s", 1)], ["s=1"]),
            ([state("s", 1), state("s", 2), state("s", 3)], ["s=3"]),
            ([state("s", 1), .usedId(session: "t", id: "x"), state("t", 1), state("s", 2), .trimEvents(session: "s", throughSeq: 1)],
             ["op:t", "t=1", "s=2", "op:s"]),
        ]
        for (ops, expected) in cases {
            var written: [StoreOp] = []
            StoreBatch(ops).forEach { written.append($0) }
            #expect(describe(written) == expected)
        }
    }

    /// Journal entries are grouped (up to `maxRun`) for one INSERT each; the ops that do not
    /// touch stored entries run before the group, and a trim or a delete runs after the
    /// entries queued before it.
    @Test func journalEntriesAreGroupedAroundTheOpsThatTouchThem() {
        func entry(_ s: String, _ n: Int) -> StoreOp {
            .journal(session: s, n: n, direction: "worker_to_server", ts: 0, body: [], message: nil, journaled: true)
        }
        func state(_ id: String) -> StoreOp { .updateState(id: id, state: Array("{}".utf8)) }
        func describe(_ op: StoreOp) -> String {
            switch op {
            case .journal(let e): return "\(e.session)\(e.n)"
            case .updateState(let id, _): return "state:\(id)"
            case .trimJournal(let s, let n, _): return "trim:\(s)\(n)"
            case .delete(let s): return "delete:\(s)"
            default: return "op:\(op.session)"
            }
        }
        let cases: [(ops: [StoreOp], maxRun: Int, expected: [String])] = [
            ([], 8, []),
            ([entry("a", 1), state("a"), entry("a", 2), state("a")], 8, ["state:a", "[a1 a2]"]),
            ([entry("a", 1), entry("b", 1), entry("a", 2)], 2, ["[a1 b1]", "[a2]"]),
            ([entry("a", 1), .usedId(session: "a", id: "x"), entry("a", 2), .trimJournal(session: "a", throughN: 1, keepFrom: (0, 0)), entry("a", 3)],
             8, ["op:a", "[a1 a2]", "trim:a1", "[a3]"]),
            ([entry("a", 1), .delete(session: "b"), state("c"), entry("c", 1)], 8, ["[a1]", "delete:b", "state:c", "[c1]"]),
            ([state("a"), state("a"), entry("a", 1)], 1, ["state:a", "[a1]"]),
        ]
        for c in cases {
            var written: [String] = []
            let batch = StoreBatch(c.ops)
            batch.forEach(maxRun: c.maxRun, entries: { run in
                #expect(run.count <= c.maxRun)
                written.append("[" + run.map { describe(batch.ops[$0]) }.joined(separator: " ") + "]")
            }, { written.append(describe($0)) })
            #expect(written == c.expected)
        }
    }

    /// Every group commit counts once; count and sum only grow (a Prometheus summary's).
    @Test func commitsAreCountedSinceStart() throws {
        try withStore(Self.path("stats")) { store throws in
            let before = store.commitStats
            for k in 1...5 { commit(store, [.usedId(session: "s", id: "c\(k)")]) }
            let after = store.commitStats
            #expect(after.count == before.count + 5)
            #expect(after.sumMs > before.sumMs && after.recent.count == after.count)
        }
    }

    @Test func purgeReturnsExactlyTheTerminalSessionsItDeletes() throws {
        try withStore(Self.path("purge")) { store throws in
            commit(store, [.insertSession(record("live", 1)), .insertSession(record("done", 2)),
                           .updateLifecycle(id: "done", phase: .complete, reason: .workerCompleted, result: nil, error: nil),
                           .event(session: "done", eventSeq: 1, type: "console", ts: 1, serverTs: 1, source: "client", payload: [:])])
            #expect(try store.purgeTerminal(endedBefore: epochMillis() - 60_000).isEmpty)
            #expect(try store.purgeTerminal(endedBefore: epochMillis() + 1_000) == ["done"])
            commit(store, [])
            #expect(try store.loadSessions().map(\.id) == ["live"])
            #expect(try store.events(session: "done", after: 0, limit: 10, types: nil).isEmpty)
        }
    }

    @Test func eventsAreFilteredByTypeWithANextPageMarker() throws {
        try withStore(Self.path("events")) { store throws in
            let types = ["navigation", "console", "navigation", "net.response", "navigation"]
            commit(store, types.enumerated().map { i, t in
                .event(session: "s", eventSeq: i + 1, type: t, ts: 0, serverTs: 0, source: "client", payload: [:])
            })
            let page = try store.events(session: "s", after: 1, limit: 1, types: ["navigation"])
            #expect(page.map(\.eventSeq) == [3, 5])  // one past the limit: there is a next page
            #expect(try store.events(session: "s", after: 0, limit: 10, types: ["console", "net.response"]).map(\.eventSeq) == [2, 4])
        }
    }

    func entry(_ s: String, _ n: Int, _ body: String, _ m: StreamPosition? = nil, journaled: Bool = true) -> StoreOp {
        .journal(session: s, n: n, direction: m == nil ? "worker_to_server" : "server_to_client", ts: Int64(n), body: Array(body.utf8)[...],
                 message: m, journaled: journaled)
    }

    func tails(_ store: any SessionStore, _ s: String, limit: Int = 100) throws -> [String] {
        try store.messages(session: s, limit: limit).map { "\($0.stream):\($0.seq):\(String(decoding: $0.body, as: UTF8.self))" }
    }

    /// A message the server sent is one row: its journal entry, from which the replay tail is
    /// read back; a journal trim keeps what a replay tail still holds, out of the journal.
    @Test func sentMessagesAreStoredOnceAsTheirJournalEntries() throws {
        try withStore(Self.path("records")) { store throws in try sentMessagesAreStoredOnce(store) }
    }

    func sentMessagesAreStoredOnce(_ store: any SessionStore) throws {
        do {
            commit(store, [entry("s", 1, "in"), entry("s", 2, "c1", StreamPosition(stream: 1, seq: 1, commandId: "a")),
                           entry("s", 3, "w1", StreamPosition(stream: 0, seq: 1, commandId: nil)),
                           entry("s", 4, "c2", StreamPosition(stream: 1, seq: 2, commandId: "b")), entry("t", 1, "other")])
            #expect(try store.journal(session: "s", after: 0, limit: 10).map(\.n) == [1, 2, 3, 4])
            #expect(try tails(store, "s") == ["0:1:w1", "1:1:c1", "1:2:c2"])
            #expect(try tails(store, "s", limit: 1) == ["0:1:w1", "1:2:c2"])
            #expect(try store.messages(session: "s", limit: 1).map(\.commandId) == [nil, "b"])
            // A command's id is stored on its `server.command` row, next to ids stored on their own.
            commit(store, [.usedId(session: "s", id: "y1")])
            #expect(try store.usedIds(session: "s") == ["a", "b", "y1"])
            // The journal drops 1…3; the worker's tail still starts at seq 1, the client's at 2.
            commit(store, [.trimJournal(session: "s", throughN: 3, keepFrom: (worker: 1, client: 2))])
            #expect(try store.journal(session: "s", after: 0, limit: 10).map(\.n) == [4])
            #expect(try tails(store, "s") == ["0:1:w1", "1:2:c2"])
            #expect(try store.usedIds(session: "s") == ["a", "b", "y1"])  // "a"'s row is gone, its id stays used
            #expect(try store.lastJournalEntry(session: "s") == 4)
            // Rows kept only for replay leave with their tail; journal entries do not.
            commit(store, [.trimMessages(session: "s", stream: 0, throughSeq: 1), .trimMessages(session: "s", stream: 1, throughSeq: 2)])
            #expect(try tails(store, "s") == ["1:2:c2"])
            #expect(try store.usedIds(session: "s") == ["a", "b", "y1"])
            #expect(try store.journal(session: "t", after: 0, limit: 10).map(\.n) == [1])
        }
    }

    /// The extremes a session can hand the store: entry numbers and seqs at the ends of Int64,
    /// trims that keep everything or nothing, a 4 MiB body and one that is not UTF-8, command
    /// ids of 100 000 characters or with quotes, NULs and emoji, and limits of 0 and Int.max.
    @Test func extremeNumbersAndSizesRoundTrip() throws {
        try withStore(Self.path("extremes")) { store throws in try extremesRoundTrip(store, odd: "a\"b\u{0}c😀") }
    }

    func extremesRoundTrip(_ store: any SessionStore, odd: String) throws {
        do {
            let long = String(repeating: "i", count: 100_000)
            let big = [UInt8](repeating: 0x61, count: 4 << 20), binary: [UInt8] = [0xFF, 0xFE, 0x00, 0xC0]
            commit(store, [
                .journal(session: "s", n: 1, direction: "server_to_client", ts: .min, body: big[...],
                         message: StreamPosition(stream: 1, seq: 1, commandId: long), journaled: true),
                .journal(session: "s", n: Int.max - 1, direction: "server_to_client", ts: .max, body: binary[...],
                         message: StreamPosition(stream: 1, seq: Int.max, commandId: odd), journaled: true),
                .journal(session: "s", n: Int.max, direction: "worker_to_server", ts: 0, body: [][...], message: nil, journaled: true),
            ])
            #expect(try store.lastJournalEntry(session: "s") == Int.max)
            #expect(try store.messages(session: "s", limit: 0).isEmpty)
            let all = try store.messages(session: "s", limit: Int.max)
            #expect(all.map(\.seq) == [1, Int.max])
            #expect(all.map(\.body) == [big, binary])
            #expect(try store.usedIds(session: "s") == [long, odd])
            #expect(try store.journal(session: "s", after: Int.max - 2, limit: Int.max).map(\.n) == [Int.max - 1, Int.max])
            // Keeping everything hides the entries from the journal and keeps the tail.
            commit(store, [.trimJournal(session: "s", throughN: Int.max, keepFrom: (worker: Int.min, client: Int.min))])
            #expect(try store.journal(session: "s", after: 0, limit: 10).isEmpty)
            #expect(try store.messages(session: "s", limit: 10).map(\.seq) == [1, Int.max])
            // Keeping nothing deletes every row; the ids stay used.
            commit(store, [.trimJournal(session: "s", throughN: Int.max, keepFrom: (worker: Int.max, client: Int.max)),
                           .trimMessages(session: "s", stream: 1, throughSeq: Int.max)])
            #expect(try store.messages(session: "s", limit: 10).isEmpty)
            #expect(try store.usedIds(session: "s") == [long, odd])
            #expect(try store.lastJournalEntry(session: "s") == 0)
        }
    }

    /// What the in-memory index answers is read back from the tables after a restart:
    /// journal, replay tails, used ids, the newest state of each session. Rows nothing reads
    /// any more (superseded states, trimmed entries) stay in the tables until the store tidies
    /// after a checkpoint or at close; a restart after a crash (the files copied as they are)
    /// finds them and still answers as before: the newest state wins, a trimmed entry's
    /// command id is still used.
    @Test func aReopenedStoreAnswersAsBeforeFromItsTables() throws {
        let path = Self.path("reopen"), crashed = Self.path("reopen-crashed")
        defer { for p in [path, crashed] { for suffix in ["", "-wal", "-shm"] { unlink(p + suffix) } } }
        let states = 50
        // Entry 1 leaves, entry 2 (command "a") is kept for replay only, then leaves too.
        let trims: [StoreOp] = [.trimJournal(session: "s", throughN: 2, keepFrom: (worker: 1, client: 1)),
                                .trimMessages(session: "s", stream: 1, throughSeq: 1)]
        func count(_ table: String, _ p: String) throws -> Int {
            var n = 0
            try Database(path: p).query("SELECT COUNT(*) FROM \(table)") { r in n = Int(r.int(0)) }
            return n
        }
        var before: (journal: [Int], tails: [String], ids: Set<String>, last: Int)? = nil
        func answersAsBefore(_ store: SQLiteStore) throws {
            #expect(try store.journal(session: "s", after: 0, limit: 10).map(\.n) == before?.journal)
            #expect(try tails(store, "s") == before?.tails)
            #expect(try store.usedIds(session: "s") == before?.ids)
            #expect(try store.lastJournalEntry(session: "s") == before?.last)
            let loaded = try store.loadSessions()
            let last = states - (states % 2 == 0 ? 0 : 1), lastOdd = states - (states % 2 == 0 ? 1 : 0)
            #expect(loaded.map(\.id) == ["s", "t"])
            #expect(loaded.map { $0.state["k"]?.intValue } == [last, lastOdd])
        }
        do {
            let loop = try EventLoop.spawn()
            defer { loop.stop() }
            let store = try SQLiteStore(path: path, loop: loop)
            defer { store.close() }
            commit(store, [.insertSession(record("s", 1)), .insertSession(record("t", 2)),
                           entry("s", 1, "in"), entry("s", 2, "c1", StreamPosition(stream: 1, seq: 1, commandId: "a")),
                           entry("s", 3, "w1", StreamPosition(stream: 0, seq: 1, commandId: nil)), entry("t", 1, "other"),
                           entry("s", 4, "c2", StreamPosition(stream: 1, seq: 2, commandId: "b"), journaled: false)])
            commit(store, trims + [.usedId(session: "s", id: "y")])
            // One commit per state: each supersedes the one before.
            for k in 1...states { commit(store, [.updateState(id: k % 2 == 0 ? "s" : "t", state: JSONWriter.serialize(.object(["k": .int(k)])))]) }
            before = (try store.journal(session: "s", after: 0, limit: 10).map(\.n), try tails(store, "s"),
                      try store.usedIds(session: "s"), try store.lastJournalEntry(session: "s"))
            #expect(before?.journal == [3])
            #expect(before?.tails == ["0:1:w1", "1:2:c2"])
            #expect(before?.ids == ["a", "b", "y"])
            // Nothing tidied yet: every state row (two from the sessions' creation), every entry.
            #expect(try count("states", path) == states + 2)
            #expect(try count("entries", path) == 5)
            for suffix in ["", "-wal"] { _ = try FileManager.default.copyItem(atPath: path + suffix, toPath: crashed + suffix) }
        }
        // Closing tidied: one state row per session; the trimmed entry's id is in `ids`.
        #expect(try count("states", path) == 2)
        #expect(try count("entries", path) == 3)
        try withStore(crashed) { store throws in
            #expect(try store.usedIds(session: "s") == before?.ids)
            // Entries trimmed before the crash are listed again until the next trim.
            #expect(try store.journal(session: "s", after: 0, limit: 10).map(\.n) == [1, 3])
            #expect(try tails(store, "s") == ["0:1:w1", "1:1:c1", "1:2:c2"])
            commit(store, trims)
            try answersAsBefore(store)
        }
        try withStore(path) { store throws in
            try answersAsBefore(store)
            // Deleting a session takes its rows; the other session keeps its own.
            commit(store, [.delete(session: "s")])
            #expect(try tails(store, "s").isEmpty)
            #expect(try store.usedIds(session: "s").isEmpty)
            #expect(try store.journal(session: "t", after: 0, limit: 10).map(\.n) == [1])
            #expect(try store.loadSessions().map(\.id) == ["t"])
        }
    }

    /// A commit that fails after the index took some of its changes (here a trim, then a
    /// state row refused by a trigger) leaves nothing behind: the index is read back from what
    /// is committed, the retried batch trims the rows for good, after a restart too.
    @Test func aFailedCommitLeavesTheIndexAsCommitted() throws {
        let path = Self.path("rollback")
        defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
        do {
            let loop = try EventLoop.spawn()
            defer { loop.stop() }
            let store = try SQLiteStore(path: path, loop: loop)
            defer { store.close() }
            commit(store, [entry("s", 1, "one"), entry("s", 2, "two")])
            let other = try Database(path: path)
            try other.exec("CREATE TRIGGER refuse BEFORE INSERT ON states BEGIN SELECT RAISE(ABORT, 'refused'); END")
            let done = DispatchSemaphore(value: 0)
            store.submit([.trimJournal(session: "s", throughN: 1, keepFrom: (worker: .max, client: .max)),
                          .updateState(id: "s", state: JSONWriter.serialize(.object(["k": .int(1)])))]) { done.signal() }
            let deadline = Date().addingTimeInterval(10)
            while store.failedCommits == 0 && Date() < deadline { usleep(1_000) }
            #expect(store.failedCommits > 0)
            #expect(!store.isHealthy)
            try other.exec("DROP TRIGGER refuse")
            #expect(done.wait(timeout: .now() + 10) == .success, "not committed within 10 s")
            #expect(store.isHealthy)
            #expect(try store.journal(session: "s", after: 0, limit: 10).map(\.n) == [2])
        }
        try withStore(path) { store throws in
            #expect(try store.journal(session: "s", after: 0, limit: 10).map(\.n) == [2])
            #expect(try store.lastJournalEntry(session: "s") == 2)
        }
    }

    /// Without a stored journal, sent messages are still stored (for replay), never listed.
    /// A worker's command and the `server.command` that carries its params on (a response and
    /// its result likewise) keep the params once: the command's row leaves them out when the
    /// two are committed together and both say where the same bytes are. The journal reads
    /// every entry back as it was written, before and after the store is reopened; entries
    /// whose bytes differ, that are too short, or that are committed apart are stored whole.
    @Test func bytesAMessageAndTheNextShareAreStoredOnce() throws {
        let path = Self.path("shared")
        defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
        let params = "{\"expression\":\"" + String(repeating: "x", count: 300) + "\"}"
        func inbound(_ n: Int, _ p: String) -> (StoreOp, [UInt8]) {
            let head = "{\"type\":\"worker.command\",\"id\":\"c\(n)\",\"params\":", tail = ",\"command\":\"evaluate\"}"
            let body = Array((head + p + tail).utf8)
            return (.journal(session: "s", n: n, direction: "worker_to_server", ts: Int64(n), body: body[...], message: nil, journaled: true,
                             repeatedByNext: head.utf8.count..<(head.utf8.count + p.utf8.count)), body)
        }
        func outbound(_ n: Int, seq: Int, _ p: String) -> (StoreOp, [UInt8]) {
            let head = "{\"type\":\"server.command\",\"seq\":\(seq),\"id\":\"c\(n)\",\"command\":\"evaluate\",\"params\":", tail = ",\"timeoutMs\":30000}"
            let body = Array((head + p + tail).utf8)
            return (.journal(session: "s", n: n, direction: "server_to_client", ts: Int64(n), body: body[...],
                             message: StreamPosition(stream: 1, seq: seq, commandId: "c\(n)"), journaled: true,
                             repeatsPrevious: head.utf8.count..<(head.utf8.count + p.utf8.count)), body)
        }
        let short = "{\"a\":1}"
        let ops = [inbound(1, params), outbound(2, seq: 1, params),                        // shared
                   inbound(3, params), outbound(4, seq: 2, params.replacingOccurrences(of: "xx", with: "xy")),  // bytes differ
                   inbound(5, short), outbound(6, seq: 3, short)]                            // too short to bother
        let apart = [inbound(7, params), outbound(8, seq: 4, params)]                        // committed apart
        let written = (ops + apart).map(\.1)
        func storedSizes() throws -> [Int] {
            var sizes: [Int] = []
            try Database(path: path).query("SELECT length(body) FROM entries ORDER BY n") { r in sizes.append(Int(r.int(0))) }
            return sizes
        }
        func readsBackAsWritten(_ store: SQLiteStore) throws {
            let journal = try store.journal(session: "s", after: 0, limit: 100)
            #expect(journal.map(\.n) == Array(1...8))
            #expect(journal.map { Array($0.bytes) } == written)
        }
        try withStore(path) { store in
            commit(store, ops.map(\.0))
            commit(store, [apart[0].0])
            commit(store, [apart[1].0])
            try readsBackAsWritten(store)
            let sizes = try storedSizes()
            #expect(sizes == written.enumerated().map { $0.offset == 0 ? $0.element.count - params.utf8.count : $0.element.count })
            // After a restart the index is read back from the tables: the same answers.
            let loop = try EventLoop.spawn()
            defer { loop.stop() }
            let reopened = try SQLiteStore(path: path, loop: loop)
            defer { reopened.close() }
            try readsBackAsWritten(reopened)
            // The command leaves the journal before the message that holds its params.
            commit(reopened, [.trimJournal(session: "s", throughN: 1, keepFrom: (worker: Int.max, client: 1))])
            #expect(try reopened.journal(session: "s", after: 0, limit: 100).map { Array($0.bytes) } == Array(written.dropFirst()))
        }
    }

    /// The pure halves: offsets that do not fit leave the row as stored, a next entry that is
    /// gone leaves `null` where the shared bytes were.
    @Test func aRowIsRestoredFromItsNextEntryOrKeptValid() {
        let stored = Array("{\"p\":,\"t\":1}".utf8), next = Array("{\"q\":[1,2]}".utf8)
        let at = 5
        #expect(String(decoding: SQLiteStore.restored(stored, shared: .init(at: at, from: 5, count: 5), next: next), as: UTF8.self) == "{\"p\":[1,2],\"t\":1}")
        #expect(String(decoding: SQLiteStore.restored(stored, shared: .init(at: at, from: 5, count: 5), next: nil), as: UTF8.self) == "{\"p\":null,\"t\":1}")
        #expect(String(decoding: SQLiteStore.restored(stored, shared: .init(at: at, from: 9, count: 5), next: next), as: UTF8.self) == "{\"p\":null,\"t\":1}")
        #expect(SQLiteStore.restored(stored, shared: .init(at: 99, from: 0, count: 1), next: next) == stored)
        #expect(SQLiteStore.restored(stored, shared: .init(at: -1, from: 0, count: 1), next: next) == stored)
        #expect(SQLiteStore.restored(stored, shared: .init(at: 0, from: Int.max, count: Int.max), next: next).count == stored.count + 4)
    }

    @Test func withoutAStoredJournalMessagesAreKeptForReplayOnly() throws {
        try withStore(Self.path("nojournal")) { store throws in
            commit(store, (1...3).map { entry("s", $0, "w\($0)", StreamPosition(stream: 1, seq: $0, commandId: "c\($0)"), journaled: false) })
            #expect(try store.journal(session: "s", after: 0, limit: 10).isEmpty)
            #expect(try tails(store, "s") == ["1:1:w1", "1:2:w2", "1:3:w3"])
            commit(store, [.trimMessages(session: "s", stream: 1, throughSeq: 2)])
            #expect(try tails(store, "s") == ["1:3:w3"])
            #expect(try store.usedIds(session: "s") == ["c1", "c2", "c3"])
            #expect(try store.lastJournalEntry(session: "s") == 3)
        }
    }

    /// A database written before messages became journal entries (version 1) is migrated in
    /// place; its retained messages still replay, its journal still reads, its sessions keep
    /// their state and their used command ids.
    @Test func aDatabaseFromBeforeKeepsItsJournalAndReplayTails() throws {
        let path = Self.path("migrate")
        do {
            let old = try Database(path: path)
            try old.exec(SQLiteStore.schema)
            try old.exec("\(SQLiteStore.migrations[0]); PRAGMA user_version = 1;")
            try old.exec("""
            INSERT INTO journal (session, n, direction, ts, body) VALUES ('s', 1, 'server_to_client', 1, '{"seq":1}');
            INSERT INTO messages (session, stream, seq, body, command_id) VALUES ('s', 1, 1, '{"seq":1}', 'a');
            INSERT INTO sessions (id, ordinal, created_at, timeouts, client_config, worker_token, client_token, phase)
              VALUES ('s', 1, 1, '{}', '{}', x'01', x'02', 'active');
            INSERT INTO session_state (id, state) VALUES ('s', '{"commandCounter":7}');
            """)
        }
        try withStore(path) { store throws in
            #expect(try store.loadSessions().map { $0.state["commandCounter"]?.intValue } == [7])
            #expect(try store.usedIds(session: "s") == ["a"])
            #expect(try store.journal(session: "s", after: 0, limit: 10).map(\.n) == [1])
            #expect(try tails(store, "s") == [#"1:1:{"seq":1}"#])
            commit(store, [entry("s", 2, "c2", StreamPosition(stream: 1, seq: 2, commandId: nil))])
            #expect(try tails(store, "s") == [#"1:1:{"seq":1}"#, "1:2:c2"])
            #expect(try tails(store, "s", limit: 1) == ["1:2:c2"])
            commit(store, [.trimMessages(session: "s", stream: 1, throughSeq: 1)])
            #expect(try tails(store, "s") == ["1:2:c2"])
        }
    }

    /// Under sustained commits the WAL is checkpointed between commits and starts again from
    /// its beginning: it stays near `checkpointFrames` pages instead of growing with the load.
    /// The rows nothing reads any more are deleted on the way, not only at close: the entries
    /// trims let go after each checkpoint, superseded states in batches.
    @Test func theWALStaysBoundedUnderSustainedCommits() throws {
        let path = Self.path("wal")
        try withStore(path) { store throws in
            let body = String(repeating: "x", count: 1000)
            let bound = (SQLiteStore.checkpointFrames + 256) * (4096 + 24)
            var largest = 0
            for i in 0..<8_000 {
                // One commit per entry, spread over 64 sessions (64 different leaf pages); each
                // session keeps its last 50 entries and a state (which supersedes the one before).
                let (s, n) = ("s\(i % 64)", i / 64 + 1)
                commit(store, [entry(s, n, body), .trimJournal(session: s, throughN: n - 50, keepFrom: (worker: .max, client: .max)),
                               .updateState(id: s, state: JSONWriter.serialize(.object(["n": .int(n)])))])
                var st = stat()
                if stat(path + "-wal", &st) == 0 { largest = max(largest, Int(st.st_size)) }
            }
            #expect(largest > 0)
            #expect(largest <= bound, "the WAL reached \(largest) bytes")
            #expect(try store.journal(session: "s63", after: 0, limit: 1000).count == 50)
            var (rows, states) = (0, 0)
            try Database(path: path).query("SELECT (SELECT COUNT(*) FROM entries), (SELECT COUNT(*) FROM states)") { r in
                (rows, states) = (Int(r.int(0)), Int(r.int(1)))
            }
            #expect(rows >= 64 * 50 && rows < 8_000 - 2_000, "\(rows) entry rows")
            #expect(states >= 64 && states < 64 + SQLiteStore.supersededBatch + 64, "\(states) state rows")
        }
    }

    /// A commit holds whole loop iterations: what one message led to (a response's cleared
    /// pending state and the result it produced) is never split between two commits, even
    /// when the writer comes back for more in the middle of an iteration. The writer is held
    /// inside each commit until the test lets it go, so where batches end does not depend on
    /// timing.
    @Test func aCommitNeverHoldsPartOfALoopIteration() throws {
        let loop = try EventLoop(selector: NullSelector(), readBufferSize: 4096)
        loop.adoptCurrentThread()
        let batches = Locked<[[String]]>([])
        let entered = DispatchSemaphore(value: 0), leave = DispatchSemaphore(value: 0)
        let committer = try GroupCommitter(loop: loop, name: "test", commit: { batch in
            batches.withLock { $0.append(Self.usedIds(batch)) }
            entered.signal()
            leave.wait()
            return []
        }, recover: {})
        func op(_ id: String) -> StoreOp { .usedId(session: "s", id: id) }
        func writerTookABatch() { #expect(entered.wait(timeout: .now() + 10) == .success, "the writer took no batch within 10 s") }
        loop.runPending()   // registers the end-of-iteration hand-over

        committer.submit(op("x0"))
        loop.runPending()
        writerTookABatch()                  // the writer is inside the commit of [x0]
        committer.submit(op("a1"))
        loop.runPending()                   // iteration 1 ends: [a1] waits for the writer
        committer.submit(op("b1"))          // iteration 2 has begun
        leave.signal()
        writerTookABatch()                  // the writer came back in the middle of iteration 2
        committer.submit(op("b2"))
        loop.runPending()                   // iteration 2 ends
        leave.signal()
        writerTookABatch()
        leave.signal()
        committer.close()
        #expect(batches.withLock { $0 } == [["x0"], ["a1"], ["b1", "b2"]])
    }

    /// With `OnLoop`, an iteration that ends while the writer is idle is committed by the
    /// loop itself; a loop commit that fails goes to the writer; while the writer is inside a
    /// commit, iterations queue behind it. Batches commit in the order they were submitted and
    /// nothing is acknowledged before its commit.
    @Test func theLoopCommitsItselfWhileTheWriterIsIdle() throws {
        let (loop, woken) = try Self.handDrivenLoop()
        let batches = Locked<[String]>([])      // "a1@loop" or "b1@writer"
        let acked = Locked<[String]>([])
        let failNext = Locked(false), hold = Locked(true)
        let entered = DispatchSemaphore(value: 0), leave = DispatchSemaphore(value: 0)
        func ids(_ batch: StoreBatch) -> String { Self.usedIds(batch).joined(separator: ",") }
        let committer = try GroupCommitter(loop: loop, name: "test", commit: { batch in
            batches.withLock { $0.append(ids(batch) + "@writer") }
            if hold.withLock({ $0 }) { entered.signal(); leave.wait() }
            return []
        }, recover: {}, onLoop: GroupCommitter.OnLoop(commit: { batch in
            #expect(loop.inLoop)
            if failNext.withLock({ f in defer { f = false }; return f }) { throw SQLiteError(description: "database is locked") }
            batches.withLock { $0.append(ids(batch) + "@loop") }
        }, needsIdle: { false }))
        func submit(_ id: String) { committer.submit([.usedId(session: "s", id: id)]) { acked.withLock { $0.append(id) } } }
        func writerTookABatch() { #expect(entered.wait(timeout: .now() + 10) == .success, "the writer took no batch within 10 s") }
        loop.runPending()   // registers the end-of-iteration hand-over

        submit("a1")
        loop.runPending()                   // the writer is idle: the loop commits [a1]
        #expect(batches.withLock { $0 } == ["a1@loop"] && acked.withLock { $0 }.isEmpty)
        loop.runPending()                   // its completion runs in the next iteration
        #expect(acked.withLock { $0 } == ["a1"])

        failNext.withLock { $0 = true }
        submit("b1")
        loop.runPending()                   // the loop's commit fails: [b1] goes to the writer
        writerTookABatch()
        submit("c1")
        loop.runPending()                   // the writer is inside a commit: [c1] queues
        #expect(batches.withLock { $0 } == ["a1@loop", "b1@writer"] && acked.withLock { $0 } == ["a1"])
        leave.signal()
        writerTookABatch()
        hold.withLock { $0 = false }
        leave.signal()
        Self.run(loop, woken) { acked.withLock { $0.count } == 3 }
        #expect(batches.withLock { $0 } == ["a1@loop", "b1@writer", "c1@writer"])
        #expect(acked.withLock { $0 } == ["a1", "b1", "c1"])

        // An iteration with more writes than `maxOps` goes to the writer.
        committer.submit((0...32).map { .usedId(session: "s", id: "d\($0)") }) { acked.withLock { $0.append("d") } }
        Self.run(loop, woken) { acked.withLock { $0.count } == 4 }
        #expect(batches.withLock { $0.last } == (0...32).map { "d\($0)" }.joined(separator: ",") + "@writer")
        committer.close()
    }

    /// After a commit of its own that was slow (here: any), the loop leaves the next ones to
    /// the writer for a while.
    @Test func aSlowLoopCommitLeavesTheNextOnesToTheWriter() throws {
        let (loop, woken) = try Self.handDrivenLoop()
        let batches = Locked<[String]>([]), acked = Locked(0)
        func ids(_ batch: StoreBatch) -> String { Self.usedIds(batch).joined(separator: ",") }
        let committer = try GroupCommitter(loop: loop, name: "test", commit: { batch in
            batches.withLock { $0.append(ids(batch) + "@writer") }
            return []
        }, recover: {}, onLoop: GroupCommitter.OnLoop(commit: { batch in
            batches.withLock { $0.append(ids(batch) + "@loop") }
        }, needsIdle: { false }, slowNanos: 0, pauseNanos: 3_600_000_000_000))
        loop.runPending()
        for id in ["a1", "b1", "c1"] {
            committer.submit([.usedId(session: "s", id: id)]) { acked.withLock { $0 += 1 } }
            loop.runPending()
        }
        Self.run(loop, woken) { acked.withLock { $0 } == 3 }
        // b1 and c1 went to the writer, in one commit or two.
        let all = batches.withLock { $0 }
        #expect(all.first == "a1@loop" && all.dropFirst().allSatisfy { $0.hasSuffix("@writer") })
        #expect(all.dropFirst().map { $0.replacingOccurrences(of: "@writer", with: "") }.joined(separator: ",") == "b1,c1")
        committer.close()
    }

    /// The ids of a batch's `usedId` writes, in order.
    static func usedIds(_ batch: StoreBatch) -> [String] {
        var ids: [String] = []
        batch.forEach { op in if case .usedId(_, let id) = op { ids.append(id) } }
        return ids
    }

    /// A loop driven by hand on this thread, and what is signalled when another thread queues
    /// work for it (a writer handing back completions).
    static func handDrivenLoop() throws -> (EventLoop, DispatchSemaphore) {
        let woken = DispatchSemaphore(value: 0)
        let loop = try EventLoop(selector: NullSelector { woken.signal() }, readBufferSize: 4096)
        loop.adoptCurrentThread()
        return (loop, woken)
    }

    /// Runs the loop's work until `done`, waiting for the writer between rounds.
    static func run(_ loop: EventLoop, _ woken: DispatchSemaphore, until done: () -> Bool) {
        for _ in 0..<100 {
            loop.runPending()
            if done() { return }
            #expect(woken.wait(timeout: .now() + 10) == .success, "no completion within 10 s")
        }
        Issue.record("not done after 100 rounds")
    }
}

@Suite struct ConfigurationTests {
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

    /// The relay's settings are the configuration's values: a configured key reaches them, and
    /// the defaults are the configuration's.
    @Test func configuredValuesReachTheRelaySettings() throws {
        var c = ServeConfiguration()
        try c.load(environment: ["SWITCHBOARD_REPLAY_MAX_MESSAGES": "7", "SWITCHBOARD_RETENTION_HOURS": "2",
                                 "SWITCHBOARD_DEFAULT_COMMAND_TIMEOUT_MS": "1234", "SWITCHBOARD_MAX_COMMAND_TIMEOUT_MS": "5678",
                                 "SWITCHBOARD_JOURNAL_STORED_ENTRIES": "99", "SWITCHBOARD_ALLOWED_ORIGINS": "https://a.example"])
        let s = RelaySettings(c)
        #expect(s.replayMaxMessages == 7)
        #expect(s.retentionMs == 2 * 3_600_000)
        #expect(s.defaults.commandTimeoutMs == 1234)
        #expect(s.maxima.commandTimeoutMs == 5678)
        #expect(s.journalStoredEntries == 99)
        #expect(s.allowedOrigins == ["https://a.example"])
        let d = RelaySettings(), dc = ServeConfiguration()
        #expect(d.replayMaxMessages == dc.replayMaxMessages && d.maxSessions == dc.maxSessions && d.retentionMs == Int64(dc.retentionHours) * 3_600_000)
        #expect(d.apiKeys.isEmpty && !d.tls && d.injectionScripts.isEmpty)
    }
}
