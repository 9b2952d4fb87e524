#if FUZZ_SESSION
// The session fuzzer: one session driven by a fuzzed sequence of operations — peers attaching
// and leaving, worker/client/debug messages, timer firings, store commits and failures,
// restarts from what was committed, REST calls — against fake connections and a fake store
// on a loop driven by hand. Besides crashes and sanitizer reports it checks what a peer sees:
// every message is a JSON object with a type, seqs on a connection only increase, and a seq
// is never used for two different messages, across restarts included.
//
// Input: records [op: 1 byte][length: 2 bytes, little-endian][payload: length bytes].
import Glibc
@testable import SocketServer
@testable import SwitchboardProtocol
@testable import SwitchboardServer
import WebSocketCore

final class NullSelector: Selector, @unchecked Sendable {
    func register(fd: Int32, interest: Interest) throws(SystemError) {}
    func reregister(fd: Int32, interest: Interest) throws(SystemError) {}
    func deregister(fd: Int32) {}
    func wait(timeoutMs: Int32, into events: inout [ReadinessEvent]) throws(SystemError) {}
    func wakeup() {}
    func close() {}
}

/// What every peer of one role has been sent, across connections and restarts.
final class Ledger: @unchecked Sendable {
    var bySeq: [Int: JSON] = [:]
}

final class FakeConnection: PeerConnection, @unchecked Sendable {
    let remoteAddress = "127.0.0.1:9"
    let role: Role
    let ledger: Ledger?
    var closed: CloseCode?
    var lastSeq = 0
    var maxMessage = Int.max

    init(role: Role, ledger: Ledger?) { self.role = role; self.ledger = ledger }

    func send(_ message: OutboundMessage, opcode: Opcode) { record(message) }
    func sendSealed(_ message: OutboundMessage) { record(message) }
    func close(_ code: CloseCode, reason: String) { if closed == nil { closed = code } }
    func limitMessages(to bytes: Int) { maxMessage = min(maxMessage, bytes) }

    private func record(_ m: OutboundMessage) {
        guard closed == nil else { return }
        let payload = Array(m.storage[FrameWriter.maxHeaderSize...])
        guard let v = try? JSONParser.parse(payload), let o = v.objectValue else {
            fatalError("a \(role) was sent something that is not a JSON object: \(String(decoding: payload, as: UTF8.self))")
        }
        if role == .debug {
            precondition(o["type"]?.stringValue != nil || o["direction"]?.stringValue != nil, "debug message without type or direction")
            return
        }
        guard let type = o["type"]?.stringValue else { fatalError("message without a type") }
        if type == "server.replay" {
            var last = 0
            for inner in o["messages"]?.arrayValue ?? [] {
                guard let seq = inner["seq"]?.intValue else { fatalError("replayed message without a seq") }
                precondition(seq > last, "replay out of order")
                last = seq
                check(seq, inner)
                lastSeq = max(lastSeq, seq)
            }
        } else if let seq = o["seq"]?.intValue {
            precondition(seq > lastSeq, "\(type) with seq \(seq) after \(lastSeq) on one connection")
            lastSeq = seq
            check(seq, v)
        }
    }

    private func check(_ seq: Int, _ message: JSON) {
        guard let ledger else { return }
        if let earlier = ledger.bySeq[seq] {
            precondition(earlier == message, "seq \(seq) of the \(role) stream used for two messages:\n\(earlier)\n\(message)")
        } else {
            ledger.bySeq[seq] = message
        }
    }
}

/// A store on the loop: submissions queue until the fuzzer commits them; a restart loses
/// what was not committed, as a crash would.
final class FakeStore: SessionStore, @unchecked Sendable {
    let loop: EventLoop
    var queued: [StoreOp] = []
    var completions: [@Sendable () -> Void] = []
    var healthy = true
    var sessions: [String: SessionRecord] = [:]
    var order: [String] = []
    var messagesBy: [String: [(stream: Int, seq: Int, body: [UInt8], commandId: String?)]] = [:]
    var eventsBy: [String: [StoredEvent]] = [:]
    var journalBy: [String: [JournalEntry]] = [:]
    var ids: [String: Set<String>] = [:]

    init(loop: EventLoop) { self.loop = loop }

    func submit(_ ops: [StoreOp], completion: (@Sendable () -> Void)?) {
        queued.append(contentsOf: ops)
        if let completion { completions.append(completion) }
    }

    /// The writer commits what is queued (unless the store fails).
    func commit() {
        guard healthy else { return }
        for op in queued { apply(op) }
        queued.removeAll()
        let done = completions
        completions.removeAll()
        loop.execute { for d in done { d() } }
    }

    func crash() { queued.removeAll(); completions.removeAll() }

    private func apply(_ op: StoreOp) {
        switch op {
        case .insertSession(let r): if sessions[r.id] == nil { order.append(r.id) }; sessions[r.id] = r
        case .updateLifecycle(let id, let phase, let reason, let result, let error):
            sessions[id]?.phase = phase; sessions[id]?.reason = reason; sessions[id]?.result = result; sessions[id]?.error = error
        case .updateState(let id, let state): sessions[id]?.state = state
        case .message(let s, let stream, let seq, let body, let cid):
            messagesBy[s, default: []].removeAll { $0.stream == stream && $0.seq == seq }
            messagesBy[s, default: []].append((stream, seq, Array(body), cid))
        case .trimMessages(let s, let stream, let through): messagesBy[s]?.removeAll { $0.stream == stream && $0.seq <= through }
        case .event(let s, let n, let type, let ts, let serverTs, let source, let payload):
            if !(eventsBy[s]?.contains { $0.eventSeq == n } ?? false) {
                eventsBy[s, default: []].append(StoredEvent(eventSeq: n, type: type, ts: ts, serverTs: serverTs, source: source, payload: payload))
            }
        case .trimEvents(let s, let through): eventsBy[s]?.removeAll { $0.eventSeq <= through }
        case .journal(let s, let n, let direction, let ts, let body):
            precondition(!(journalBy[s]?.contains { $0.n == n } ?? false), "journal entry \(n) written twice")
            journalBy[s, default: []].append(JournalEntry(n: n, direction: direction, ts: ts, bytes: ArraySlice(Array(body))))
        case .trimJournal(let s, let through): journalBy[s]?.removeAll { $0.n <= through }
        case .usedId(let s, let id): ids[s, default: []].insert(id)
        case .delete(let s): sessions[s] = nil; order.removeAll { $0 == s }
        }
    }

    func loadSessions() throws -> [SessionRecord] { order.compactMap { sessions[$0] } }
    func messages(session: String) throws -> [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] {
        (messagesBy[session] ?? []).sorted { ($0.stream, $0.seq) < ($1.stream, $1.seq) }
    }
    func events(session: String, after: Int, limit: Int, types: Set<String>?) throws -> [StoredEvent] {
        Array((eventsBy[session] ?? []).filter { $0.eventSeq > after && (types?.contains($0.type) ?? true) }.prefix(limit + 1))
    }
    func lastEvent(session: String, type: String) throws -> StoredEvent? { eventsBy[session]?.last { $0.type == type } }
    func eventCount(session: String) throws -> Int { eventsBy[session]?.last?.eventSeq ?? 0 }
    func journal(session: String, after: Int, limit: Int) throws -> [JournalEntry] {
        Array((journalBy[session] ?? []).filter { $0.n > after }.prefix(limit))
    }
    func usedIds(session: String) throws -> Set<String> { ids[session] ?? [] }
    func lastJournalEntry(session: String) throws -> Int { journalBy[session]?.last?.n ?? 0 }
    func purgeTerminal(endedBefore: Int64) throws -> [String] { [] }
    var commitLatencies: [Double] { [] }
    var isHealthy: Bool { healthy }
    var failedCommits: Int { 0 }
    func close() {}
}

struct Run {
    let loop: EventLoop
    let store: FakeStore
    let log: TrafficLog
    var relay: Relay
    var sessionId = ""
    var peers: [Role: (Peer, FakeConnection)] = [:]
    var debug: (Peer, FakeConnection)?
    let ledgers: [Role: Ledger] = [.worker: Ledger(), .client: Ledger()]

    static func settings() -> RelaySettings {
        var s = RelaySettings()
        s.apiKeys = ["k"]
        s.replayMaxMessages = 8
        s.replayMaxBytes = 4096
        s.journalMaxEntries = 16
        s.eventsMaxPerSession = 16
        s.eventsMaxBytesPerSession = 8192
        s.journalStoredEntries = 32
        s.rateBurst = 50
        s.rateCloseAfterDrops = 20
        return s
    }

    init(loop: EventLoop, log: TrafficLog) {
        self.loop = loop
        self.log = log
        store = FakeStore(loop: loop)
        relay = Relay(loop: loop, settings: Run.settings(), log: log, store: store)
        try? relay.restore()
        var answer: HTTPResponse?
        let body = Array(#"{"config":{"disconnectGracePeriodMs":1000,"commandTimeoutMs":1000}}"#.utf8)
        relay.route(HTTPRequest(method: "POST", target: "/v1/sessions", version: "HTTP/1.1",
                                headers: HTTPHeaders([("Authorization", "Bearer k"), ("Host", "x")]), body: body)) { answer = $0 }
        store.commit()
        loop.runPending()
        guard let a = answer, a.status == 201, let o = try? JSONParser.parse(a.body), let id = o["sessionId"]?.stringValue else {
            fatalError("could not create the session")
        }
        sessionId = id
    }

    var session: Session? { relay.session(sessionId) }

    mutating func attach(_ role: Role) {
        guard let s = session else { return }
        let c = FakeConnection(role: role, ledger: ledgers[role])
        let peer = s.assumeIsolated { $0.attach(c, role: role, since: role == .debug ? 0 : nil) }
        if role == .debug { debug = (peer, c) } else { peers[role] = (peer, c) }
    }

    mutating func detach(_ role: Role) {
        guard let s = session else { return }
        if role == .debug, let (p, _) = debug { s.assumeIsolated { $0.connectionClosed(p, code: .normal) }; debug = nil; return }
        guard let (p, _) = peers[role] else { return }
        s.assumeIsolated { $0.connectionClosed(p, code: .goingAway) }
        peers[role] = nil
    }

    mutating func send(_ role: Role, _ payload: [UInt8]) {
        guard let s = session else { return }
        let pair = role == .debug ? debug : peers[role]
        guard let (p, c) = pair else { return }
        // A connection the session closed delivers nothing more; the socket goes away.
        if c.closed != nil { detach(role); return }
        // The frame layer closes a connection that sends an oversized or invalid text message.
        guard payload.count <= c.maxMessage, UTF8Validator.isValid(payload) else { detach(role); return }
        s.assumeIsolated { $0.receive(ReceivedMessage(payload: payload), from: p) }
    }

    mutating func restart() {
        // The process dies: what was not committed is lost; the loop's timers go with it.
        store.crash()
        loop.cancelAllTimers()
        loop.runPending()
        peers = [:]
        debug = nil
        relay = Relay(loop: loop, settings: Run.settings(), log: log, store: store)
        do { try relay.restore() } catch { fatalError("restore failed: \(error)") }
    }

    func rest(_ method: String, _ path: String) {
        relay.route(HTTPRequest(method: method, target: path, version: "HTTP/1.1",
                                headers: HTTPHeaders([("Authorization", "Bearer k"), ("Host", "x")]), body: [])) { r in
            precondition((try? JSONParser.parse(r.body)) != nil || r.body.isEmpty || method == "GET", "REST body is not JSON")
        }
    }
}

nonisolated(unsafe) var sharedLog: TrafficLog? = nil

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    let loop = try! EventLoop(selector: NullSelector(), readBufferSize: 4096)
    loop.adoptCurrentThread()
    if sharedLog == nil {
        var o = TrafficLog.Options(path: "/dev/null")
        o.maxBuffer = 1 << 20
        sharedLog = try! TrafficLog(options: o)
    }
    var run = Run(loop: loop, log: sharedLog!)
    var i = 0
    var steps = 0
    while i + 3 <= bytes.count && steps < 200 {
        steps += 1
        let op = bytes[i] % 16
        let len = Int(bytes[i + 1]) | Int(bytes[i + 2]) << 8
        let payload = Array(bytes[(i + 3)..<min(bytes.count, i + 3 + len)])
        i += 3 + len
        switch op {
        case 0: run.attach(.worker)
        case 1: run.attach(.client)
        case 2: run.attach(.debug)
        case 3, 4: run.send(.worker, payload)
        case 5, 6: run.send(.client, payload)
        case 7: run.send(.debug, payload)
        case 8: run.detach(.worker)
        case 9: run.detach(.client)
        case 10: _ = loop.fireNextTimer()
        case 11: run.store.commit(); loop.runPending()
        case 12: run.store.healthy.toggle()
        case 13: run.restart()
        case 14: run.rest(["GET", "DELETE", "GET", "GET"][Int(payload.first ?? 0) % 4],
                          ["/v1/sessions/\(run.sessionId)", "/v1/sessions/\(run.sessionId)", "/v1/sessions/\(run.sessionId)/events",
                           "/v1/sessions/\(run.sessionId)/journal"][Int(payload.first ?? 0) % 4])
        default: loop.runPending()
        }
        // Accumulated log lines are dropped (the writer thread does not run here).
        _ = sharedLog
    }
    run.store.healthy = true
    run.store.commit()
    loop.runPending()
    loop.cancelAllTimers()
    loop.runPending()
    return 0
}
#endif
