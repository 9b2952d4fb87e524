import Testing
import Foundation
import Glibc
@testable import SwitchboardServer

/// The store's connections write the WAL through `CSQLiteWAL`, which gathers a transaction's
/// frames and writes them when the commit frame is complete. These tests check the promise
/// that rests on: when COMMIT returns, every byte of the transaction is in the file (another
/// connection reads it, and recovery from a copy of the files as they are then finds it), and
/// a transaction that fits in the buffer reaches the file in one write.
@Suite struct WALCoalescingTests {
    /// (rows, bytes per row) of each transaction, in order: small ones, one over the buffer's
    /// 128 KiB, a row whose overflow pages alone pass it, and small ones after those.
    static let transactions: [(rows: Int, bytes: Int)] = [
        (1, 10), (8, 300), (40, 300), (3, 5_000), (1, 200_000), (2, 70_000), (1, 1), (100, 100), (5, 64 * 1024),
    ]

    static func path(_ name: String) -> String { "/tmp/switchboard-wal-test-\(name)-\(getpid()).db" }

    static func remove(_ path: String) { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }

    static func copy(_ from: String, _ to: String) throws {
        remove(to)
        for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: from + suffix) {
            try FileManager.default.copyItem(atPath: from + suffix, toPath: to + suffix)
        }
    }

    /// A new database at `path` in WAL mode (as the store sets it, without automatic
    /// checkpoints) holding an empty table `t`; `pragmas` are set before it is made.
    static func create(_ path: String, pragmas: String = "") throws -> Database {
        remove(path)
        let db = try Database(path: path)
        try db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0; \(pragmas) CREATE TABLE t (g INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        return db
    }

    /// The rows of table `t` as (g, body), in order.
    static func rows(_ db: Database) throws -> [(Int64, [UInt8])] {
        var out: [(Int64, [UInt8])] = []
        try db.query("SELECT g, body FROM t ORDER BY g") { r in out.append((r.int(0), r.blob(1))) }
        return out
    }

    @Test func everyCommitIsInTheFileWhenItReturns() throws {
        let path = Self.path("commit"), crashed = Self.path("crashed")
        defer { Self.remove(path); Self.remove(crashed) }
        let writer = try Self.create(path)
        let reader = try Database(path: path)
        var expected: [(Int64, [UInt8])] = []
        var generator = SystemRandomNumberGenerator()
        for (k, t) in Self.transactions.enumerated() {
            let before = try #require(writer.walWrites)
            try writer.exec("BEGIN")
            for _ in 0..<t.rows {
                let body = (0..<t.bytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
                try writer.query("INSERT INTO t (body) VALUES (?)", [.blob(body)])
                expected.append((writer.lastInsertRowid, body))
            }
            try writer.exec("COMMIT")
            let after = try #require(writer.walWrites)
            let made = after.sqlite - before.sqlite, written = after.file - before.file
            // Two writes per frame (its header, its page) from SQLite; here one write, or one
            // per 128 KiB less a frame (the buffer is written before a part would overflow it).
            let frameBytes = made / 2 * (4096 + 24)
            #expect(made >= 2, "transaction \(k)")
            #expect(written >= 1 && written <= frameBytes / (0x1ffff - 4096 - 24) + 1, "transaction \(k): \(made) writes became \(written)")

            // Another connection reads the transaction through its own descriptor.
            let seen = try Self.rows(reader)
            #expect(seen.map(\.0) == expected.map(\.0), "transaction \(k)")
            #expect(seen.map(\.1) == expected.map(\.1), "transaction \(k)")

            // The files as a crash of the process now would leave them: recovery from the WAL
            // alone (no -shm) finds every committed row.
            try Self.copy(path, crashed)
            let recovered = try Self.rows(try Database(path: crashed))
            #expect(recovered.map(\.0) == expected.map(\.0), "transaction \(k)")
            #expect(recovered.map(\.1) == expected.map(\.1), "transaction \(k)")
        }
    }

    /// Transactions of 1 to 80 pages: the commit frame lands at every place in the buffer,
    /// the frame whose header fits and whose page does not included (the buffer is written
    /// between the two, and the page is still written at once).
    @Test func theCommitFrameIsWrittenWhereverItFallsInTheBuffer() throws {
        let path = Self.path("frames")
        defer { Self.remove(path) }
        let writer = try Self.create(path)
        let reader = try Database(path: path)
        var count = 0
        for rows in 1...80 {
            // A 3 500-byte row fills a 4 KiB leaf of its own: about one frame per row.
            try writer.exec("BEGIN")
            for _ in 0..<rows { try writer.query("INSERT INTO t (body) VALUES (randomblob(3500))") }
            try writer.exec("COMMIT")
            count += rows
            var seen = -1
            try reader.query("SELECT COUNT(*) FROM t") { r in seen = Int(r.int(0)) }
            #expect(seen == count, "after a transaction of \(rows) rows")
        }
    }

    /// A rolled-back transaction leaves nothing another connection or recovery can see, and
    /// the next commit is whole.
    @Test func aRollbackLeavesNothingAndTheNextCommitIsWhole() throws {
        let path = Self.path("rollback"), crashed = Self.path("rollback-crashed")
        defer { Self.remove(path); Self.remove(crashed) }
        let writer = try Self.create(path, pragmas: "PRAGMA cache_size=8;")
        try writer.query("INSERT INTO t (body) VALUES (?)", [.blob([1, 2, 3])])
        // A small page cache spills this transaction's pages into the WAL before it ends.
        try writer.exec("BEGIN")
        for _ in 0..<50 { try writer.query("INSERT INTO t (body) VALUES (?)", [.blob([UInt8](repeating: 7, count: 20_000))]) }
        try writer.exec("ROLLBACK")
        try writer.query("INSERT INTO t (body) VALUES (?)", [.blob([4, 5])])
        let expected: [[UInt8]] = [[1, 2, 3], [4, 5]]
        #expect(try Self.rows(try Database(path: path)).map(\.1) == expected)
        try Self.copy(path, crashed)
        #expect(try Self.rows(try Database(path: crashed)).map(\.1) == expected)
    }
}
