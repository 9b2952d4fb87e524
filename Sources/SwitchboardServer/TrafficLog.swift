import Glibc
import SwitchboardProtocol
import SocketServer

/// ISO-8601 renderings of epoch milliseconds, cached: many lines share a millisecond.
/// Used from the event loop thread only.
enum Timestamps {
    nonisolated(unsafe) private static var cachedMillis: Int64 = -1
    nonisolated(unsafe) private static var cached: [UInt8] = []

    static func iso(_ millis: Int64) -> [UInt8] {
        if millis != cachedMillis {
            cachedMillis = millis
            cached = ISO8601.formatBytes(millis)
        }
        return cached
    }
}

/// The operator log (docs/protocol.md section 13): one JSON object per line, appended by a
/// background writer thread so the event loop only formats and enqueues; rotated by size.
public final class TrafficLog: @unchecked Sendable {
    public struct Options: Sendable {
        public var path: String
        public var maxBytes: Int = 64 << 20
        public var keep: Int = 5
        public var redact = true
        public var maxString = 1024
        /// Bytes waiting for the writer thread at most; lines beyond it are dropped (and
        /// counted) rather than growing memory while the disk is slow.
        public var maxBuffer = 64 << 20
        public init(path: String) { self.path = path }
    }

    public let options: Options
    private let buffer = Locked<[UInt8]>([])
    /// The buffer the writer thread last wrote out (its own between flushes).
    private var spare: [UInt8] = []
    private let reopenRequested = Locked<Bool>(false)
    private let stopped = Locked<Bool>(false)
    private let wake = Locked<Int32>(-1)
    private var fd: Int32 = -1
    private var size = 0
    private var thread: pthread_t? = nil
    private let done = Locked<Bool>(false)

    public init(options: Options) throws(SystemError) {
        self.options = options
        try open()
    }

    private func open() throws(SystemError) {
        let f = Glibc.open(options.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard f >= 0 else { throw SystemError("open(\(options.path))") }
        fd = f
        var st = stat()
        fstat(f, &st)
        size = Int(st.st_size)
    }

    /// Starts the writer thread.
    public func start() {
        thread = try? startThread(name: "traffic-log") { self.writerLoop() }
    }

    private let droppedLines = Locked<Int>(0)
    /// Lines dropped because the buffer was full.
    public var dropped: Int { droppedLines.withLock { $0 } }

    /// Appends one line (without newline). Cheap: copies into the shared buffer.
    public func append(_ line: [UInt8]) {
        let full = buffer.withLock { b -> Bool in
            guard b.count + line.count < options.maxBuffer else { return true }
            b.append(contentsOf: line)
            b.append(0x0A)
            return false
        }
        if full { droppedLines.withLock { $0 += 1 } }
    }

    /// Reopens the file at its path (after logrotate moved it).
    public func reopen() { reopenRequested.withLock { $0 = true } }

    /// Writes everything buffered and stops the writer.
    public func close() {
        stopped.withLock { $0 = true }
        if let thread { pthread_join(thread, nil) } else { flush() }
        thread = nil
    }

    private func writerLoop() {
        while true {
            let stop = stopped.withLock { $0 }
            flush()
            if stop { break }
            usleep(20_000)
        }
        Glibc.close(fd)
    }

    private func flush() {
        if reopenRequested.withLock({ r in let v = r; r = false; return v }) {
            Glibc.close(fd)
            try? open()
        }
        // The loop keeps appending into the spare buffer, whose pages were written before:
        // swapping two buffers allocates nothing and faults in no fresh pages.
        var data: [UInt8] = []
        swap(&data, &spare)
        data.removeAll(keepingCapacity: true)
        buffer.withLock { swap(&$0, &data) }
        defer { spare = data.capacity > 4 << 20 ? [] : data }  // a burst's buffer is not kept
        guard !data.isEmpty else { return }
        if size + data.count > options.maxBytes && size > 0 { rotate() }
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n <= 0 { if errno == EINTR { continue }; break }
                off += n
            }
        }
        size += data.count
    }

    private func rotate() {
        Glibc.close(fd)
        if options.keep > 0 {
            for i in stride(from: options.keep - 1, through: 1, by: -1) {
                rename("\(options.path).\(i)", "\(options.path).\(i + 1)")
            }
            rename(options.path, "\(options.path).1")
        } else {
            unlink(options.path)
        }
        try? open()
    }

    // MARK: Formatting

    /// A `message` line. `message` is the JSON text: embedded as is when it is small, on one
    /// line and needs no redaction; otherwise written again on one line with long strings cut
    /// (and, when it needs redaction, re-written from its parsed tree with secrets redacted).
    /// Input that is not JSON (`json: false`) is written as an escaped string, cut like other
    /// strings — or withheld when it names a field that may hold user input — so every line
    /// stays one JSON object.
    public func message(session: String, direction: StaticString, type: StaticString, id: String?, seq: Int?, bytes: ArraySlice<UInt8>,
                        sensitive: Bool, json: Bool = true) {
        line(session: session, event: "message", extra: bytes.count) { w in
            w.raw(",\"direction\":\""); w.raw(direction)
            w.raw("\",\"type\":\""); w.raw(type); w.raw("\"")
            w.raw(",\"id\":"); if let id { w.write(string: id) } else { w.raw("null") }
            w.raw(",\"seq\":"); if let seq { w.int(seq) } else { w.raw("null") }
            w.raw(",\"bytes\":"); w.int(bytes.count)
            w.raw(",\"message\":")
            if !json {
                if options.redact && TrafficLog.mentionsSecret(bytes) {
                    w.write(string: "[redacted: not JSON, names a field that may hold user input]")
                } else {
                    w.write(TrafficLog.scrub(.string(String(decoding: bytes, as: UTF8.self)), maxString: options.maxString, redact: false))
                }
            } else if !(sensitive && options.redact) {
                let written = bytes.withUnsafeBufferPointer { b in
                    // A short message on one line goes in as it is; any other is written without
                    // its line breaks and with its long strings cut, in one scan.
                    if b.count <= options.maxString && !JSONWriter.hasControlByte(b) {
                        w.raw(UnsafeRawBufferPointer(b))
                        return true
                    }
                    return w.write(compacting: b, cuttingStringsOver: options.maxString)
                }
                if !written { w.write(string: "[unparsable: \(bytes.count) bytes]") }
            } else if let v = try? bytes.withUnsafeBytes({ try JSONParser.parse($0) }) {
                w.write(TrafficLog.scrub(v, maxString: options.maxString, redact: sensitive && options.redact))
            } else {
                w.write(string: "[unparsable: \(bytes.count) bytes]")
            }
        }
    }

    /// A `cdp` line: one CDP frame of a channel (docs/protocol.md section 16). With redaction,
    /// what may be user input or page data (typed text, evaluated values, cookies, headers,
    /// bodies, screenshots) is redacted; long strings are cut like in other lines.
    /// `frame` is the frame as already parsed by the relay, `bytes` its size on the wire.
    public func cdp(session: String, direction: StaticString, channel: Int, frame: JSON, bytes: Int) {
        line(session: session, event: "cdp", extra: bytes) { w in
            w.raw(",\"direction\":\""); w.raw(direction)
            w.raw("\",\"channel\":"); w.int(channel)
            w.raw(",\"method\":"); w.write(frame["method"]?.stringValue.map(JSON.string) ?? .null)
            w.raw(",\"bytes\":"); w.int(bytes)
            w.raw(",\"message\":"); w.write(TrafficLog.scrub(frame, maxString: options.maxString, redact: options.redact, keys: TrafficLog.cdpSecretKeys))
        }
    }

    /// Formats one line straight into the shared buffer (no intermediate copy; the writer
    /// thread only swaps the buffer out, so the lock is held briefly on its side):
    /// `{"ts":…,"session":…,"event":"EVENT"`, the members `body` writes, `}`. A line that
    /// would overflow the buffer is dropped and counted.
    private func line(session: String, event: StaticString, extra: Int, _ body: (inout JSONWriter) -> Void) {
        let full = buffer.withLock { shared -> Bool in
            guard shared.count + extra + 256 < options.maxBuffer else { return true }
            var w = JSONWriter()
            swap(&w.bytes, &shared)
            defer { w.bytes.append(0x0A); swap(&w.bytes, &shared) }
            w.raw("{\"ts\":\""); w.raw(Timestamps.iso(epochMillis()))
            w.raw("\",\"session\":"); w.write(string: session)
            w.raw(",\"event\":\""); w.raw(event); w.raw("\"")
            body(&w)
            w.raw("}")
            return false
        }
        if full { droppedLines.withLock { $0 += 1 } }
    }

    /// Keys of CDP frames that may hold user input or page data, wherever they appear.
    static let cdpSecretKeys: Set<String> = secretKeys.union(["text", "unmodifiedText", "key", "value", "expression", "arguments",
                                                              "cookies", "headers", "data"])

    /// Any other event line: `{"ts","session","event",...fields}`.
    public func event(session: String?, _ event: String, _ fields: JSONObject) {
        var o = JSONObject()
        o["ts"] = .string(ISO8601.format(epochMillis()))
        if let session { o["session"] = .string(session) }
        o["event"] = .string(event)
        for m in fields { o[m.key] = m.value }
        append(JSONWriter.serialize(.object(o)))
    }

    /// Keys whose values are user data wherever they appear (network bodies, body filters).
    static let secretKeys: Set<String> = ["body", "postData", "requestBody", "responseBody", "bodyContains"]
    /// Keys that are user input inside command params (`fill.value`, `type.text`).
    static let inputKeys: Set<String> = ["value", "text"]

    static func isSecret(_ path: [String]) -> Bool {
        guard let last = path.last else { return false }
        if secretKeys.contains(last) { return true }
        return inputKeys.contains(last) && (path.contains("params") || path.contains("command"))
    }

    /// Whether unparsable bytes name a key that may hold user input.
    static func mentionsSecret(_ bytes: ArraySlice<UInt8>) -> Bool {
        let needles = (secretKeys.union(inputKeys)).map { Array($0.utf8) }
        let b = Array(bytes)
        guard b.count > 0 else { return false }
        for n in needles where n.count <= b.count {
            for start in 0...(b.count - n.count) where b[start] == n[0] && b[start..<(start + n.count)].elementsEqual(n) { return true }
        }
        return false
    }

    /// Whether a telemetry payload carries a network body.
    static func carriesBody(_ payload: JSONObject?) -> Bool {
        guard let payload else { return false }
        return payload.members.contains { secretKeys.contains($0.key) }
    }

    /// Redacts user input (`fill.value`, `type.text`, network bodies) and cuts strings longer
    /// than `maxString` bytes. (Without redaction, `JSONWriter.write(compacting:…)` writes the
    /// same value from the text in one scan.)
    static func scrub(_ v: JSON, maxString: Int, redact: Bool, path: [String] = [], keys: Set<String>? = nil) -> JSON {
        if redact && (keys.map { k in path.last.map(k.contains) ?? false } ?? TrafficLog.isSecret(path)) {
            if case .string(let s) = v { return .string("[redacted: \(s.count) chars]") }
            return .string("[redacted: \(v.typeName)]")
        }
        switch v {
        case .string(let s):
            if s.utf8.count > maxString { return .string(JSONWriter.cut(s.utf8, max: maxString)) }
            return v
        case .array(let a): return .array(a.map { scrub($0, maxString: maxString, redact: redact, path: path, keys: keys) })
        case .object(let o):
            return .object(JSONObject(o.members.map { ($0.key, scrub($0.value, maxString: maxString, redact: redact, path: path + [$0.key], keys: keys)) }))
        default: return v
        }
    }
}
