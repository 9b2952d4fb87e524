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
        let s: OpaquePointer
        if let p = statements[sql] { s = p } else { s = try prepare(sql); statements[sql] = s }
        try execute(s, sql, bind: { b in b.bind(args) }, row)
    }

    /// `query` for statements whose text is a literal (the store's per-row statements).
    func run(_ sql: StaticString, _ args: [SQLValue] = [], row: ((Row) -> Void)? = nil) throws(SQLiteError) {
        try run(sql, bind: { b in b.bind(args) }, row: row)
    }

    /// `run` with the parameters bound by `bind` straight from the caller's values (no array
    /// of them is made).
    func run(_ sql: StaticString, bind: (Binder) -> Void, row: ((Row) -> Void)? = nil) throws(SQLiteError) {
        let key = UInt(bitPattern: sql.utf8Start)
        let s: OpaquePointer
        if let p = staticStatements[key] { s = p } else { s = try prepare(sql.description); staticStatements[key] = s }
        try execute(s, sql.description, bind: bind, row)
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
    /// bound by `bind`.
    func run(numbered key: Int, _ sql: @autoclosure () -> String, bind: (Binder) -> Void) throws(SQLiteError) {
        let stmt: OpaquePointer
        if let s = numbered[key] { stmt = s } else { stmt = try prepare(sql()); numbered[key] = stmt }
        try execute(stmt, sql(), bind: bind, nil)
    }

    /// Where bound text and blobs are copied while statements run (`Binder`).
    private let arena = BindArena()

    /// `sql` is the statement's text, for an error message.
    private func execute(_ stmt: OpaquePointer, _ sql: @autoclosure () -> String, bind: (Binder) -> Void, _ row: ((Row) -> Void)?) throws(SQLiteError) {
        arena.enter()
        defer { arena.leave() }  // runs last: after the statement no longer holds its values
        defer { sqlite3_reset(stmt); sqlite3_clear_bindings(stmt) }
        bind(Binder(stmt: stmt, arena: arena))
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

    /// Binds a statement's parameters (numbered from 1). Text and blobs are copied into the
    /// connection's `BindArena`, which keeps them until the statement is reset (SQLite would
    /// otherwise allocate a copy of each); literals are not copied.
    struct Binder {
        let stmt: OpaquePointer
        let arena: BindArena
        func null(_ i: Int32) { sqlite3_bind_null(stmt, i) }
        func int(_ i: Int32, _ v: Int64) { sqlite3_bind_int64(stmt, i, v) }
        func int(_ i: Int32, _ v: Int) { sqlite3_bind_int64(stmt, i, Int64(v)) }
        func text(_ i: Int32, _ t: String) {
            var t = t
            t.withUTF8 { u in _ = sb_sqlite3_bind_kept_text(stmt, i, arena.copy(UnsafeRawBufferPointer(u)), Int32(u.count)) }
        }
        func bytes(_ i: Int32, _ b: ArraySlice<UInt8>) {
            b.withUnsafeBytes { _ = sb_sqlite3_bind_kept_blob(stmt, i, arena.copy($0), Int32($0.count)) }
        }
        /// UTF-8 bytes bound as text.
        func utf8(_ i: Int32, _ b: [UInt8]) {
            b.withUnsafeBytes { _ = sb_sqlite3_bind_kept_text(stmt, i, arena.copy($0), Int32($0.count)) }
        }
        func literal(_ i: Int32, _ t: StaticString) {
            _ = sb_sqlite3_bind_kept_text(stmt, i, t.utf8Start, Int32(t.utf8CodeUnitCount))  // in the binary: no copy
        }

        func bind(_ args: [SQLValue]) {
            for (i, a) in args.enumerated() { bind(Int32(i + 1), a) }
        }

        func bind(_ i: Int32, _ a: SQLValue) {
            switch a {
            case .null: null(i)
            case .int(let v): int(i, v)
            case .text(let t): text(i, t)
            case .blob(let b): bytes(i, b[...])
            case .bytes(let b): bytes(i, b)
            case .literal(let t): literal(i, t)
            case .utf8(let b): utf8(i, b)
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

/// Memory for the text and blobs bound to statements while they run: copied into a block
/// kept from run to run, and let go of in one step when the outermost run ends (a statement
/// may run another from a row callback). A value that does not fit in what is left of the
/// block gets memory of its own until then.
final class BindArena {
    static let blockSize = 64 << 10
    private let block = UnsafeMutableRawPointer.allocate(byteCount: BindArena.blockSize, alignment: 16)
    private var used = 0
    private var own: [UnsafeMutableRawPointer] = []
    private var depth = 0

    /// Before a statement is bound.
    func enter() { depth += 1 }

    /// After the statement is reset and its bindings cleared: the outermost frees every copy.
    func leave() {
        depth -= 1
        guard depth == 0 else { return }
        used = 0
        for p in own { p.deallocate() }
        own.removeAll(keepingCapacity: true)
    }

    /// A copy of `bytes` that stays until the outermost `leave`; never nil, also for no bytes
    /// (SQLite binds NULL for a nil pointer).
    func copy(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawPointer {
        let n = bytes.count
        let to: UnsafeMutableRawPointer
        if n <= BindArena.blockSize - used {
            to = block + used
            used += n
        } else {
            to = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 1)
            own.append(to)
        }
        if n > 0, let from = bytes.baseAddress { to.copyMemory(from: from, byteCount: n) }
        return UnsafeRawPointer(to)
    }

    deinit {
        for p in own { p.deallocate() }
        block.deallocate()
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
