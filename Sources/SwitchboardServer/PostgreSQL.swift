import CPostgreSQL
import Glibc

public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public var description: String
    /// The SQLSTATE of a server error ("40001", …), nil for a connection problem.
    public var state: String? = nil
}

/// One libpq connection, used by one thread at a time (the store's writer, or a reader under
/// the store's lock). Parameters and results travel as text, `bytea` as binary parameters and
/// hex text results. A broken connection is reset before the next statement.
final class PostgresConnection {
    private var conn: OpaquePointer?
    let url: String

    enum Value {
        case text(String), int(Int64), bytes(ArraySlice<UInt8>), null, bool(Bool)
        static func optText(_ s: String?) -> Value { s.map { .text($0) } ?? .null }
    }

    init(url: String) throws(PostgresError) {
        self.url = url
        try connect()
    }

    deinit { PQfinish(conn) }

    private func connect() throws(PostgresError) {
        PQfinish(conn)
        // Bounds a lost link: connecting gives up after 5 s, and a statement sent into a link
        // that went away fails after 5 s unacknowledged instead of waiting for TCP's minutes
        // (the connection string may set other values: it comes last and wins).
        let owned: [UnsafeMutablePointer<CChar>?] = ["connect_timeout", "tcp_user_timeout", "dbname", "5", "5000", url].map { (text: String) in strdup(text) }
        defer { for p in owned { free(p) } }
        let keys: [UnsafePointer<CChar>?] = owned[0..<3].map { $0.map { UnsafePointer($0) } } + [nil]
        let values: [UnsafePointer<CChar>?] = owned[3..<6].map { $0.map { UnsafePointer($0) } } + [nil]
        conn = PQconnectdbParams(keys, values, 1)
        guard let c = conn, PQstatus(c) == CONNECTION_OK else {
            let message = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            throw PostgresError(description: "cannot connect to PostgreSQL: \(message.trimmedLine)")
        }
        // Notices ("relation already exists, skipping") are not errors: not printed.
        PQsetNoticeProcessor(c, { _, _ in }, nil)
        // A statement that waits on a lock or a stuck server fails instead of stalling its thread.
        _ = try? exec("SET statement_timeout = 5000; SET lock_timeout = 4000; SET idle_in_transaction_session_timeout = 30000")
    }

    /// Rows of a result, read as text.
    struct Rows {
        fileprivate let result: OpaquePointer
        var count: Int { Int(PQntuples(result)) }
        /// Rows an INSERT, UPDATE or DELETE changed.
        var changed: Int { Int(String(cString: PQcmdTuples(result))) ?? 0 }
        func isNull(_ row: Int, _ col: Int) -> Bool { PQgetisnull(result, Int32(row), Int32(col)) == 1 }
        func text(_ row: Int, _ col: Int) -> String? {
            isNull(row, col) ? nil : String(cString: PQgetvalue(result, Int32(row), Int32(col)))
        }
        func int(_ row: Int, _ col: Int) -> Int64 { text(row, col).flatMap { Int64($0) } ?? 0 }
        func bool(_ row: Int, _ col: Int) -> Bool { text(row, col) == "t" }
        /// A `bytea` column (hex output: `\x0a1b…`).
        func bytes(_ row: Int, _ col: Int) -> [UInt8] {
            guard !isNull(row, col), let p = PQgetvalue(result, Int32(row), Int32(col)) else { return [] }
            let n = Int(PQgetlength(result, Int32(row), Int32(col)))
            guard n >= 2, p[0] == 0x5C, p[1] == 0x78 else { return [] }
            var out = [UInt8]()
            out.reserveCapacity((n - 2) / 2)
            func nibble(_ c: CChar) -> UInt8 {
                let u = UInt8(bitPattern: c)
                switch u {
                case 0x30...0x39: return u - 0x30
                case 0x61...0x66: return u - 0x61 + 10
                case 0x41...0x46: return u - 0x41 + 10
                default: return 0
                }
            }
            var i = 2
            while i + 1 < n { out.append(nibble(p[i]) << 4 | nibble(p[i + 1])); i += 2 }
            return out
        }
    }

    /// Runs statements without parameters (several separated by `;`).
    func exec(_ sql: String) throws(PostgresError) {
        try ensureConnected()
        let r = PQexec(conn, sql)
        defer { PQclear(r) }
        try check(r, sql)
    }

    /// Runs one statement with `$n` parameters and hands its rows to `body`.
    @discardableResult
    func query<T>(_ sql: String, _ params: [Value] = [], _ body: (Rows) throws(PostgresError) -> T) throws(PostgresError) -> T {
        try ensureConnected()
        let result: OpaquePointer? = encoded(params) { values, lengths, formats in
            PQexecParams(conn, sql, Int32(params.count), nil, values, lengths, formats, 0)
        }
        defer { PQclear(result) }
        try check(result, sql)
        return try body(Rows(result: result!))
    }

    func run(_ sql: String, _ params: [Value] = []) throws(PostgresError) {
        if inPipeline {
            let sent = encoded(params) { values, lengths, formats in
                PQsendQueryParams(conn, sql, Int32(params.count), nil, values, lengths, formats, 0)
            }
            guard sent == 1 else { throw PostgresError(description: "cannot send: \(String(cString: PQerrorMessage(conn)).trimmedLine)") }
            pipelined += 1
            return
        }
        try query(sql, params) { _ throws(PostgresError) in () }
    }

    private var inPipeline = false
    private var pipelined = 0

    /// From here to `endPipeline`, `run` only sends its statement: a group commit's statements
    /// travel together and their results are read once (one round trip instead of one each).
    func beginPipeline() throws(PostgresError) {
        try ensureConnected()
        guard PQenterPipelineMode(conn) == 1 else { throw PostgresError(description: "cannot enter pipeline mode") }
        inPipeline = true
        pipelined = 0
    }

    /// Reads the results of the statements sent since `beginPipeline`; throws the first error
    /// (the statements after a failed one are not run).
    func endPipeline() throws(PostgresError) {
        guard inPipeline else { return }
        inPipeline = false
        guard PQpipelineSync(conn) == 1 else {
            reset()
            throw PostgresError(description: "cannot end the pipeline: \(String(cString: PQerrorMessage(conn)).trimmedLine)")
        }
        var first: PostgresError? = nil
        for _ in 0..<pipelined {
            while let r = PQgetResult(conn) {
                let status = PQresultStatus(r)
                if first == nil, status != PGRES_COMMAND_OK, status != PGRES_TUPLES_OK {
                    let state = PQresultErrorField(r, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
                    first = PostgresError(description: String(cString: PQresultErrorMessage(r)).trimmedLine, state: state)
                }
                PQclear(r)
            }
        }
        if let sync = PQgetResult(conn) { PQclear(sync) }
        // Results left unread mean the connection is out of step: start a new one.
        if PQexitPipelineMode(conn) != 1 { reset() }
        if let first { throw first }
    }

    /// Drops the connection; the next statement connects again.
    private func reset() {
        PQfinish(conn)
        conn = nil
    }

    /// The number of rows a statement changed.
    func update(_ sql: String, _ params: [Value] = []) throws(PostgresError) -> Int {
        try query(sql, params) { r throws(PostgresError) in r.changed }
    }

    /// Parameters as libpq takes them: text values, or binary for `bytea` (passed where they
    /// are, not copied).
    private func encoded<R>(_ params: [Value], _ body: ([UnsafePointer<CChar>?], [Int32], [Int32]) -> R) -> R {
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int32] = []
        var formats: [Int32] = []
        pointers.reserveCapacity(params.count)
        lengths.reserveCapacity(params.count)
        formats.reserveCapacity(params.count)
        func step(_ i: Int) -> R {
            guard i < params.count else { return body(pointers, lengths, formats) }
            func text(_ c: [CChar]) -> R {
                c.withUnsafeBufferPointer { b in
                    pointers.append(b.baseAddress); lengths.append(0); formats.append(0)
                    return step(i + 1)
                }
            }
            switch params[i] {
            case .null:
                pointers.append(nil); lengths.append(0); formats.append(0)
                return step(i + 1)
            // A text value cannot hold NUL: one would end the C string early (peers' ids and
            // types are refused with one; anything else is stored with U+FFFD instead).
            case .text(let s): return text(s.utf8.contains(0) ? Array(s.replacing("\u{0}", with: "\u{FFFD}").utf8CString) : Array(s.utf8CString))
            case .int(let n): return text(Array(String(n).utf8CString))
            case .bool(let b): return text(Array((b ? "t" : "f").utf8CString))
            // (An empty value still needs a pointer: a null one would mean SQL NULL.)
            case .bytes(let b) where b.isEmpty: return text([0])
            case .bytes(let b):
                return b.withUnsafeBytes { raw in
                    pointers.append(raw.baseAddress?.assumingMemoryBound(to: CChar.self))
                    lengths.append(Int32(clamping: raw.count)); formats.append(1)
                    return step(i + 1)
                }
            }
        }
        return step(0)
    }

    private func ensureConnected() throws(PostgresError) {
        if conn == nil || PQstatus(conn) != CONNECTION_OK { try connect() }
    }

    private func check(_ r: OpaquePointer?, _ sql: String) throws(PostgresError) {
        let status = r.map { PQresultStatus($0) } ?? PGRES_FATAL_ERROR
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let message = r.map { String(cString: PQresultErrorMessage($0)) } ?? String(cString: PQerrorMessage(conn))
            let state = r.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) }
            throw PostgresError(description: "\(message.trimmedLine) in: \(sql.prefix(80))", state: state)
        }
    }
}

extension String {
    /// The text without its trailing newline (libpq's messages end with one).
    var trimmedLine: String {
        var s = Substring(self)
        while let l = s.last, l == "\n" || l == " " { s.removeLast() }
        return String(s)
    }
}
