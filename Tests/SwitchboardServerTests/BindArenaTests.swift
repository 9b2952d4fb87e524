import Testing
import Foundation
import Glibc
@testable import SwitchboardServer

/// Text and blobs bound to a statement are copies the connection keeps (`BindArena`) until the
/// statement is reset: they must hold while it runs, also when a row callback runs another
/// statement on the same connection, and whatever their size.
@Suite struct BindArenaTests {
    static func withDatabase(_ name: String, _ body: (Database) throws -> Void) throws {
        let path = "/tmp/switchboard-bind-test-\(name)-\(getpid()).db"
        defer { for s in ["", "-wal", "-shm"] { unlink(path + s) } }
        try body(Database(path: path))
    }

    @Test func valuesOfARunningStatementOutliveTheStatementsItsRowsRun() throws {
        try Self.withDatabase("nested") { db in
            try db.exec("CREATE TABLE t (v TEXT); CREATE TABLE u (v BLOB)")
            let wanted = String(repeating: "w", count: 300)
            for _ in 0..<5 { try db.query("INSERT INTO t VALUES (?)", [.text(wanted)]) }
            try db.query("INSERT INTO t VALUES (?)", [.text("other")])
            // Each row the outer statement finds runs an insert whose value (as long as the
            // outer one) would land where the outer value is, were that memory let go of.
            var rows = 0
            try db.query("SELECT rowid FROM t WHERE v = ?", [.text(wanted)]) { _ in
                rows += 1
                try? db.query("INSERT INTO u VALUES (?)", [.blob(Array(repeating: UInt8(ascii: "x"), count: 300))])
            }
            #expect(rows == 5)
            var stored = 0
            try db.query("SELECT COUNT(*) FROM u WHERE v = ?", [.blob(Array(repeating: UInt8(ascii: "x"), count: 300))]) { r in stored = Int(r.int(0)) }
            #expect(stored == 5)
        }
    }

    @Test func valuesOfEverySizeRoundTrip() throws {
        try Self.withDatabase("sizes") { db in
            try db.exec("CREATE TABLE t (k INTEGER, b BLOB, s TEXT)")
            // Empty values, values that fill what is left of the block, and values larger than it.
            let sizes = [0, 1, 100, BindArena.blockSize - 1, BindArena.blockSize, BindArena.blockSize + 1, 3 * BindArena.blockSize]
            for (k, n) in sizes.enumerated() {
                let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ k) }
                let text = String(repeating: "é", count: n / 2)
                // Several values in one statement: they share the block, or overflow it.
                try db.run(numbered: 1, "INSERT INTO t VALUES (?,?,?)") { b in b.int(1, k); b.bytes(2, bytes[...]); b.text(3, text) }
            }
            var seen = 0
            try db.query("SELECT k, b, s FROM t ORDER BY k") { r in
                let k = Int(r.int(0)), n = sizes[k]
                #expect(r.blob(1) == (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ k) })
                #expect(r.text(2) == String(repeating: "é", count: n / 2))
                #expect(!r.isNull(1) && !r.isNull(2), "an empty value is stored empty, not NULL")
                seen += 1
            }
            #expect(seen == sizes.count)
        }
    }
}
