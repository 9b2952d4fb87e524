import CSQLite
import CSQLiteWAL

public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// A small SQLite connection wrapper: prepared statements cached by SQL text. Used by one
/// thread at a time (the store's writer, or a reader under the store's lock).
final class Database {
    private var db: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]

    /// Set up once, before the first connection: without memory statistics (nothing reads
    /// them), SQLite's allocations take no process-wide lock. The VFS that writes a commit's
    /// WAL frames in one write (`CSQLiteWAL`); nil (the default VFS) if it cannot register.
    private static let vfs: String? = {
        _ = sb_sqlite3_memstatus_off()
        return sb_wal_vfs_register() == SQLITE_OK ? SB_WAL_VFS_NAME : nil
    }()

    init(path: String) throws(SQLiteError) {
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, Database.vfs) == SQLITE_OK else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw SQLiteError(description: "cannot open \(path): \(message)")
        }
        sqlite3_busy_timeout(db, 5000)
    }

    deinit {
        for s in statements.values { sqlite3_finalize(s) }
        for s in staticStatements.values { sqlite3_finalize(s) }
        for s in numbered.values { sqlite3_finalize(s) }
        sqlite3_close(db)
        walFrames.deallocate()
    }

    /// Written by SQLite's WAL hook once `trackWALFrames` installed it.
    private let walFrames: UnsafeMutablePointer<Int32> = {
        let p = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        p.initialize(to: 0)
        return p
    }()

    /// Counts the frames in the WAL after each commit of this connection (`framesInWAL`).
    /// Turns off SQLite's automatic checkpoints (they share the hook).
    func trackWALFrames() { sb_sqlite3_count_wal_frames(db, walFrames) }

    /// Frames in the WAL after this connection's last commit (0 unless `trackWALFrames`).
    var framesInWAL: Int { Int(walFrames.pointee) }

    /// The writes SQLite made to this connection's WAL and the writes that reached the file for
    /// them (`CSQLiteWAL`); nil while no WAL is open through that VFS.
    var walWrites: (sqlite: Int, file: Int)? {
        var s: Int64 = 0, f: Int64 = 0
        guard sb_wal_vfs_file_stats(db, &s, &f) == SQLITE_OK else { return nil }
        return (Int(s), Int(f))
    }

    /// The rowid of this connection's last insert.
    var lastInsertRowid: Int64 { sqlite3_last_insert_rowid(db) }

    var lastError: String { String(cString: sqlite3_errmsg(db)) }

    func setBusyTimeout(ms: Int32) { sqlite3_busy_timeout(db, ms) }

    func exec(_ sql: String) throws(SQLiteError) {
        var err: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &err) != SQLITE_OK {
            let message = err.map { String(cString: $0) } ?? lastError
            sqlite3_free(err)
            throw SQLiteError(description: "\(message) in: \(sql.prefix(80))")
        }
    }

    /// Statements of `run`, by the address of their (static) text: no string hashing.
    private var staticStatements: [UInt: OpaquePointer] = [:]

    /// Runs `sql` with `args`, calling `row` for each result row.
    func query(_ sql: String, _ args: [SQLValue] = [], row: ((Row) -> Void)? = nil) throws(SQLiteError) {
        if let s = statements[sql] { return try execute(s, sql, args, row) }
        let s = try prepare(sql)
        statements[sql] = s
        try execute(s, sql, args, row)
    }

    /// `query` for statements whose text is a literal (the store's per-row statements).
    func run(_ sql: StaticString, _ args: [SQLValue] = [], row: ((Row) -> Void)? = nil) throws(SQLiteError) {
        let key = UInt(bitPattern: sql.utf8Start)
        if let s = staticStatements[key] { return try execute(s, sql.description, args, row) }
        let s = try prepare(sql.description)
        staticStatements[key] = s
        try execute(s, sql.description, args, row)
    }

    private func prepare(_ sql: String) throws(SQLiteError) -> OpaquePointer {
        var s: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &s, nil) == SQLITE_OK, let s else {
            throw SQLiteError(description: "\(lastError) in: \(sql.prefix(80))")
        }
        return s
    }

    /// Statements kept by a number the caller chooses (the store's multi-row inserts, by row
    /// count): no text is hashed to find them.
    private var numbered: [Int: OpaquePointer] = [:]

    /// Runs the statement numbered `key` (prepared from `sql` the first time), its parameters
    /// bound by `bind` straight from the caller's values (no array of them is made).
    func run(numbered key: Int, _ sql: @autoclosure () -> String, bind: (Binder) -> Void) throws(SQLiteError) {
        let stmt: OpaquePointer
        if let s = numbered[key] { stmt = s } else { stmt = try prepare(sql()); numbered[key] = stmt }
        defer { sqlite3_reset(stmt); sqlite3_clear_bindings(stmt) }
        bind(Binder(stmt: stmt))
        try step(stmt, sql(), nil)
    }

    /// `sql` is the statement's text, for an error message.
    private func execute(_ stmt: OpaquePointer, _ sql: @autoclosure () -> String, _ args: [SQLValue], _ row: ((Row) -> Void)?) throws(SQLiteError) {
        defer { sqlite3_reset(stmt); sqlite3_clear_bindings(stmt) }
        let b = Binder(stmt: stmt)
        for (i, a) in args.enumerated() { b.bind(Int32(i + 1), a) }
        try step(stmt, sql(), row)
    }

    private func step(_ stmt: OpaquePointer, _ sql: @autoclosure () -> String, _ row: ((Row) -> Void)?) throws(SQLiteError) {
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw SQLiteError(description: "\(lastError) in: \(sql().prefix(80))") }
            row?(Row(stmt: stmt))
        }
    }

    /// Binds a statement's parameters (numbered from 1). Text and blobs are copied by SQLite,
    /// literals are not.
    struct Binder {
        let stmt: OpaquePointer
        func null(_ i: Int32) { sqlite3_bind_null(stmt, i) }
        func int(_ i: Int32, _ v: Int64) { sqlite3_bind_int64(stmt, i, v) }
        func int(_ i: Int32, _ v: Int) { sqlite3_bind_int64(stmt, i, Int64(v)) }
        func text(_ i: Int32, _ t: String) {
            var t = t
            t.withUTF8 { u in _ = u.withMemoryRebound(to: CChar.self) { sb_sqlite3_bind_text(stmt, i, $0.baseAddress, Int32($0.count)) } }
        }
        func bytes(_ i: Int32, _ b: ArraySlice<UInt8>) {
            b.withUnsafeBytes { _ = sb_sqlite3_bind_blob(stmt, i, $0.baseAddress, Int32($0.count)) }
        }
        func literal(_ i: Int32, _ t: StaticString) {
            _ = t.utf8Start.withMemoryRebound(to: CChar.self, capacity: t.utf8CodeUnitCount) { sb_sqlite3_bind_static_text(stmt, i, $0, Int32(t.utf8CodeUnitCount)) }
        }

        func bind(_ i: Int32, _ a: SQLValue) {
            switch a {
            case .null: null(i)
            case .int(let v): int(i, v)
            case .text(let t): text(i, t)
            case .blob(let b): bytes(i, b[...])
            case .bytes(let b): bytes(i, b)
            case .literal(let t): literal(i, t)
            case .utf8(let b):
                b.withUnsafeBytes { _ = sb_sqlite3_bind_text(stmt, i, $0.baseAddress?.assumingMemoryBound(to: CChar.self), Int32($0.count)) }
            }
        }
    }

    struct Row {
        let stmt: OpaquePointer
        func int(_ i: Int32) -> Int64 { sqlite3_column_int64(stmt, i) }
        func isNull(_ i: Int32) -> Bool { sqlite3_column_type(stmt, i) == SQLITE_NULL }
        func text(_ i: Int32) -> String? {
            guard let p = sqlite3_column_text(stmt, i) else { return nil }
            return String(decoding: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(stmt, i))), as: UTF8.self)
        }
        func blob(_ i: Int32) -> [UInt8] {
            let n = Int(sqlite3_column_bytes(stmt, i))
            guard n > 0, let p = sqlite3_column_blob(stmt, i) else { return [] }
            return Array(UnsafeRawBufferPointer(start: p, count: n))
        }
    }
}

/// A value bound to a statement parameter.
enum SQLValue {
    case null
    case int(Int64)
    case text(String)
    case blob([UInt8])
    case bytes(ArraySlice<UInt8>)
    /// UTF-8 bytes bound as text.
    case utf8([UInt8])
    /// Literal text (no String is made for it).
    case literal(StaticString)

    static func int(_ v: Int) -> SQLValue { .int(Int64(v)) }
    static func optText(_ s: String?) -> SQLValue { s.map { .text($0) } ?? .null }
    static func json(_ v: JSON?) -> SQLValue { v.map { .text(JSONWriter.string($0)) } ?? .null }
}

import SwitchboardProtocol
