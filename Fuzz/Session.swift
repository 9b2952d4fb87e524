#if FUZZ_SESSION
// The session fuzzer: one session driven by a fuzzed sequence of operations — peers attaching
// and leaving, worker/client/debug messages, timer firings, store commits and failures,
// restarts from what was committed, REST calls — against fake connections and a fake store
// on a loop driven by hand. Besides crashes and sanitizer reports it checks what a peer sees:
// every message is a JSON object with a type, seqs on a connection only increase, and a seq
// is never used for two different messages, across restarts included.
//
// Input: records [op: 1 byte][length: 2 bytes, little-endian][payload: length bytes].
// The fakes (connection, store, selector) are shared with the unit tests:
// Tests/SwitchboardServerTests/Fakes.swift.
import Glibc
@testable import SocketServer
@testable import SwitchboardProtocol
@testable import SwitchboardServer
import WebSocketCore

struct Run {
    let loop: EventLoop
    let store: FakeStore
    let log: TrafficLog
    var relay: Relay
    var sessionId = ""
    var peers: [Role: (Peer, FakeConnection)] = [:]
    var debug: (Peer, FakeConnection)?
    var cdp: [(CDPChannel, FakeConnection)] = []
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

    /// CDP channels: open one, send a worker frame on the newest, close the oldest, discovery.
    mutating func cdpOp(_ payload: [UInt8]) {
        guard let s = session, let sub = payload.first else { return }
        switch sub % 4 {
        case 0:
            let c = FakeConnection(role: .worker, ledger: nil)
            c.cdp = true
            if let ch = s.assumeIsolated({ $0.openCDP(c) }) { cdp.append((ch, c)) }
        case 1:
            guard let (ch, c) = cdp.last else { return }
            let frame = Array(payload.dropFirst())
            guard c.closed == nil, frame.count <= c.maxMessage, UTF8Validator.isValid(frame) else { return }
            s.assumeIsolated { $0.cdpFromWorker(ch, ReceivedMessage(payload: frame)) }
        case 2:
            guard !cdp.isEmpty else { return }
            let (ch, c) = cdp.removeFirst()
            s.assumeIsolated { $0.cdpSocketClosed(ch, code: c.closed ?? .normal) }
        default:
            rest("GET", "/v1/sessions/\(sessionId)/cdp/json/version")
        }
    }

    mutating func restart() {
        // The process dies: what was not committed is lost; the loop's timers go with it.
        store.crash()
        loop.cancelAllTimers()
        loop.runPending()
        peers = [:]
        debug = nil
        cdp = []
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
        let op = bytes[i] % 17
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
        case 15: run.cdpOp(payload)
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
