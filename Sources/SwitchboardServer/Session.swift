import SocketServer
import SwitchboardProtocol
import WebSocketCore

/// One connected peer of a session. Confined to the session's loop.
final class Peer: @unchecked Sendable {
    // Confined to the session's loop.
    let role: Role
    let connection: any PeerConnection
    var helloDone = false
    var helloTimer: Timer?
    var capabilities: [String] = []
    /// A client's browser version for CDP discovery (from its hello).
    var cdpVersion: JSONObject?
    var bucket: RateBucket
    /// Drops in a row (the first of a run is answered `rate_limited`).
    var droppedInRow = 0
    /// Drops in the current window (docs/protocol.md §11: too many within it close with 4029).
    var dropsInWindow = 0
    var windowStart: UInt64
    var detached = false

    init(role: Role, connection: any PeerConnection, settings: RelaySettings) {
        self.role = role
        self.connection = connection
        bucket = RateBucket(settings: settings)
        windowStart = bucket.lastRefill
    }
}

/// Token buckets for the message and byte rate limits of one peer or CDP channel.
struct RateBucket {
    var tokens: Double
    var byteTokens: Double
    var lastRefill: UInt64

    init(settings: RelaySettings, now: UInt64 = monotonicNanos()) {
        tokens = Double(settings.rateBurst)
        byteTokens = Double(settings.rateBytesBurst)
        lastRefill = now
    }

    /// Refills for the time since the last call, then takes one message of `bytes` if both
    /// buckets hold enough. A message larger than the byte burst passes when the bucket is full.
    mutating func take(bytes: Int, now: UInt64, settings s: RelaySettings) -> (messagesOK: Bool, bytesOK: Bool) {
        let elapsed = Double(now &- lastRefill) / 1e9
        lastRefill = now
        tokens = min(Double(s.rateBurst), tokens + elapsed * Double(s.ratePerSecond))
        byteTokens = min(Double(s.rateBytesBurst), byteTokens + elapsed * Double(s.rateBytesPerSecond))
        let cost = Double(min(bytes, s.rateBytesBurst))
        let ok = (tokens >= 1, byteTokens >= cost)
        if ok.0 && ok.1 {
            tokens -= 1
            byteTokens -= cost
        }
        return ok
    }
}

/// The work occupying the session's single pending slot.
struct Pending {
    enum Kind: String { case command, yield }
    var id: String
    var kind: Kind
    var command: String
    var startedAt: UInt64
    var timer: Timer?
    var conditions: [CompiledCondition] = []
    var optional = false
    /// Wall-clock deadline and start (epoch ms), persisted so a restart keeps the timeout.
    var deadline: Int64 = 0
    var startedAtMs: Int64 = epochMillis()
    /// For yields: the conditions as sent and the message, to rebuild after a restart.
    var conditionsJSON: [JSON] = []
    var message: String?
}

/// One session: the actor that relays commands between its worker and its client. Its
/// executor is the event loop that owns its connections, so socket callbacks reach it
/// synchronously with `assumeIsolated` — no hop and no Task per message.
public actor Session {
    public nonisolated let id: String
    public nonisolated let loop: EventLoop
    nonisolated let workerTokenHash: [UInt8]
    nonisolated let clientTokenHash: [UInt8]
    public nonisolated let createdAt: Int64
    public nonisolated let ordinal: Int
    /// Digest of the API key that created the session (nil: stored before tenants existed).
    public nonisolated let tenant: String?
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    unowned let relay: Relay
    /// The relay's settings, log, metrics and store (`RelayContext`: held strongly, read on every message).
    let context: RelayContext
    var settings: RelaySettings { context.settings }
    var log: TrafficLog { context.log }
    var metrics: Metrics { context.metrics }
    var store: SessionStore? { context.store }
    public internal(set) var state = SessionState()
    let timeouts: SessionTimeouts
    let metadata: JSONObject?
    let clientConfig: JSONObject

    var worker: Peer?
    var client: Peer?
    var debugs: [Peer] = []
    var workerStream = OutboundStream()
    var clientStream = OutboundStream()
    var pending: Pending?
    var usedIds: Set<String> = []
    /// Commands that ended without their response (timed out, cancelled): a late response to
    /// one is dropped silently; any other response that is not for the pending command gets
    /// `unknown_command_id` (a second response to an answered command included). The last
    /// 1 024 are kept.
    var endedWithoutResponse: Set<String> = []
    var endedWithoutResponseOrder: [String] = []
    var commandCounter = 0
    var commandCount = 0
    /// When the session reached a terminal phase (for retention without a store).
    var endedAt: Int64?
    /// What the store keeps of this session's events and journal, within their budgets.
    var storedEvents = RetentionWindow()
    var storedJournal = RetentionWindow()
    /// Peers whose hello came while their stream's commit gate was closed: their replay is
    /// sent when it opens.
    var deferredReplays: [Role: (peer: Peer, lastSeq: Int?)] = [:]
    /// Highest telemetry batch stored (what the client's hello is told).
    var lastClientSeq = 0
    /// Highest telemetry batch accepted: stored, or queued for the next commit.
    var acceptedClientSeq = 0
    var timers: [Timer] = []
    var journalLog = JournalLog()
    var events = EventLog()
    var currentURL: String?
    var workerSubscription: Set<String>?
    var lastNavigation: StoredEvent?
    var graceTimers: [Role: Timer] = [:]
    var graceDeadlines: [Role: Int64] = [:]
    /// Set when a restart restored a pending command (see `redeliverPendingIfNeeded`).
    var redeliverAfterRestore = false
    /// False for a restored session until its tails, events and journal are read back.
    var loaded = true
    /// Set when this node stopped serving the session (another node serves it now): nothing
    /// more is written, no timer fires, no peer is attached.
    var evicted = false
    /// Open CDP channels by id (docs/protocol.md section 16), and the last id given.
    var cdpChannels: [Int: CDPChannel] = [:]
    var lastCDPChannel = 0

    init(id: String, ordinal: Int, relay: Relay, workerTokenHash: [UInt8], clientTokenHash: [UInt8],
         createdAt: Int64, timeouts: SessionTimeouts, metadata: JSONObject?, clientConfig: JSONObject, tenant: String?) {
        self.id = id
        self.tenant = tenant
        self.ordinal = ordinal
        self.relay = relay
        self.loop = relay.loop
        context = relay.context
        self.workerTokenHash = workerTokenHash
        self.clientTokenHash = clientTokenHash
        self.createdAt = createdAt
        self.timeouts = timeouts
        self.metadata = metadata
        self.clientConfig = clientConfig
    }

    public nonisolated var expiresAt: Int64 { WireNumbers.adding(createdAt, Int64(timeouts.sessionDurationMs)) }

    /// Arms the connect and duration deadlines (measured from creation).
    func startTimers() {
        let now = epochMillis()
        let connectIn = Int(WireNumbers.subtracting(WireNumbers.adding(createdAt, Int64(timeouts.connectTimeoutMs)), now))
        let durationIn = Int(WireNumbers.subtracting(expiresAt, now))
        timers.append(loop.schedule(afterMillis: connectIn) { [self] in self.assumeIsolated { $0.lifecycle(.connectTimeout) } })
        timers.append(loop.schedule(afterMillis: durationIn) { [self] in self.assumeIsolated { $0.lifecycle(.sessionTimeout) } })
    }

    // MARK: Snapshot for REST

    var pendingInfo: PendingInfo? { pending.map { PendingInfo(id: $0.id, kind: $0.kind.rawValue, command: $0.kind == .command ? $0.command : nil) } }

    func info() -> SessionInfo {
        SessionInfo(sessionId: id, phase: state.phase, reason: state.reason, createdAt: createdAt, expiresAt: expiresAt,
                    workerConnected: state.workerConnected, clientConnected: state.clientConnected,
                    interactive: pending?.kind == .yield, pending: pendingInfo, metadata: metadata,
                    result: state.result, error: state.error, counts: SessionCounts(commands: commandCount, events: events.total))
    }

    // MARK: Connections

    func tokenMatches(_ token: String, role: Role) -> Bool {
        let h = Crypto.sha256(token)
        return Crypto.constantTimeEqual(h, role == .client ? clientTokenHash : workerTokenHash)
    }

    /// A new WebSocket for `role`. Replaces an earlier worker or client connection (4001).
    func attach(_ connection: any PeerConnection, role: Role, since: Int? = nil) -> Peer {
        let peer = Peer(role: role, connection: connection, settings: settings)
        metrics.peers[role, default: 0] += 1
        log.event(session: id, "connect", ["role": .string(role.rawValue), "remote": .string(connection.remoteAddress)])
        switch role {
        case .debug:
            peer.helloDone = true
            sendUnsequenced(peer, helloMessage(for: .debug))
            if let since {
                for entry in journalLog.entries(from: since) { peer.connection.send(JournalLog.envelope(entry), opcode: .text) }
            }
            debugs.append(peer)
        case .worker, .client:
            if let old = role == .worker ? worker : client {
                detachPeer(old, reason: "replaced")
                old.connection.close(.replaced, reason: "replaced by a newer connection")
            }
            if role == .worker { worker = peer } else { client = peer }
            peer.helloTimer = loop.schedule(afterMillis: settings.helloTimeoutMs) { [weak peer] in
                guard let peer, !peer.helloDone else { return }
                peer.connection.close(.helloTimeout, reason: "no hello within \(self.relay.settings.helloTimeoutMs) ms")
            }
        }
        return peer
    }

    /// The socket of `peer` is gone.
    func connectionClosed(_ peer: Peer, code: CloseCode) {
        log.event(session: id, "disconnect", ["role": .string(peer.role.rawValue), "code": .int(Int(code.rawValue))])
        detachPeer(peer, reason: "closed")
    }

    /// The peer no longer counts as connected (once, however it leaves).
    private func release(_ peer: Peer) {
        peer.helloTimer?.cancel()
        guard !peer.detached else { return }
        peer.detached = true
        metrics.peers[peer.role, default: 1] -= 1
    }

    private func detachPeer(_ peer: Peer, reason: String) {
        release(peer)
        switch peer.role {
        case .debug:
            debugs.removeAll { $0 === peer }
        case .worker, .client:
            let current = peer.role == .worker ? worker : client
            guard current === peer else { return }
            if peer.role == .worker { worker = nil } else {
                client = nil
                closeCDPChannels(.clientDisconnected, reason: "the session's client disconnected")
            }
            if peer.helloDone { lifecycle(.disconnected(peer.role)) }
        }
    }

    // MARK: Inbound

    func receive(_ message: ReceivedMessage, from peer: Peer) {
        // A peer of a session served elsewhere now: its socket is closing.
        guard !evicted else { return }
        // Every role is rate limited, debug viewers included.
        guard allowRate(peer, bytes: message.bytes.count) else { return }
        if peer.role == .debug {
            sendError(peer, .readOnly, "debug connections are read-only")
            return
        }
        let now = epochMillis()
        let decoded = message.storage.withUnsafeBytes { raw in
            InboundDecoder.decode(UnsafeRawBufferPointer(rebasing: raw[FrameWriter.maxHeaderSize...]),
                                  base: message.bytes, role: peer.role, receivedAt: now, limits: context.inboundLimits)
        }
        let direction: StaticString = peer.role == .worker ? "worker_to_server" : "client_to_server"
        switch decoded {
        case .failure(.invalidEnvelope(let why)):
            logInbound(direction, type: "invalid", id: nil, message.bytes, sensitive: true, json: false)
            peer.connection.close(.invalidJSON, reason: String(why.prefix(100)))
        case .failure(let error):
            // Not valid: what it holds is unknown, so it is redacted like user input.
            logInbound(direction, type: "unknown", id: nil, message.bytes, sensitive: true)
            if !peer.helloDone { sendError(peer, .helloRequired, "send your hello first (docs/protocol.md section 3)"); return }
            switch error {
            case .unknownType(let t): sendError(peer, .unknownMessageType, "'\(t)' is not a message a \(peer.role.rawValue) may send (docs/asyncapi.yaml lists them)")
            case .invalidMessage(let m, let id): sendError(peer, .invalidMessage, m, id: id)
            case .invalidCommand(let id, let issues):
                sendError(peer, .invalidCommand, "the command is not valid (the catalog: docs/protocol.md section 5.3)", id: id,
                          details: ["issues": .array(issues.map { .object(["path": .string($0.path), "message": .string($0.message)]) })])
            case .invalidEnvelope: break
            }
        case .success(let msg):
            handle(msg, from: peer, bytes: message.bytes, direction: direction)
        }
    }

    /// Token buckets for messages and bytes. A message over either rate is dropped; the first
    /// of a run is answered `rate_limited`; more than `rateCloseAfterDrops` drops within
    /// `rateWindowMs` close the peer with 4029, even when some messages get through between.
    private func allowRate(_ peer: Peer, bytes: Int) -> Bool {
        let now = loop.now
        let (messagesOK, bytesOK) = peer.bucket.take(bytes: bytes, now: now, settings: settings)
        if messagesOK && bytesOK {
            peer.droppedInRow = 0
            return true
        }
        let s = settings
        // A CDP stream with a gap is broken: the channels close rather than hang (section 16).
        if peer.role == .client { closeCDPChannels(.rateLimited, reason: "the client's messages were dropped by the rate limit") }
        metrics.hit(messagesOK ? "rate_bytes_per_second" : "rate_per_second")
        if now &- peer.windowStart > UInt64(s.rateWindowMs) * 1_000_000 {
            peer.windowStart = now
            peer.dropsInWindow = 0
        }
        peer.dropsInWindow += 1
        peer.droppedInRow += 1
        if peer.droppedInRow == 1 {
            sendError(peer, .rateLimited, messagesOK ? "more than \(s.rateBytesPerSecond) bytes per second"
                                                     : "more than \(s.ratePerSecond) messages per second")
        }
        if peer.dropsInWindow > s.rateCloseAfterDrops {
            peer.connection.close(.rateLimited, reason: "rate limited")
        }
        return false
    }

    /// `relayed`: the part of `bytes` (params, a result) that the message the server sends
    /// next carries on, stored once for both.
    private func logInbound(_ direction: StaticString, type: StaticString, id: String?, _ bytes: ArraySlice<UInt8>, sensitive: Bool,
                            json: Bool = true, relayed: ArraySlice<UInt8>? = nil) {
        metrics.countIn(type)
        log.message(session: self.id, direction: direction, type: type, id: id, seq: nil, bytes: bytes, sensitive: sensitive, json: json)
        // The journal holds JSON values: input that is not JSON is kept as a string.
        guard json else { return journal(direction, JSONWriter.serialize(.string(String(decoding: bytes, as: UTF8.self)))[...]) }
        let shared = relayed.flatMap { r in
            r.count >= JSONWriter.markedRawMinimum && r.startIndex >= bytes.startIndex && r.endIndex <= bytes.endIndex
                ? (r.startIndex - bytes.startIndex)..<(r.endIndex - bytes.startIndex) : nil
        }
        journal(direction, bytes, repeatedByNext: shared)
    }

    private func handle(_ msg: PeerMessage, from peer: Peer, bytes: ArraySlice<UInt8>, direction: StaticString) {
        switch msg {
        case .hello(let hello):
            logInbound(direction, type: peer.role == .worker ? "worker.hello" : "client.hello", id: nil, bytes, sensitive: false)
            handleHello(hello, from: peer)
            return
        default:
            break
        }
        guard peer.helloDone else {
            logInbound(direction, type: "before_hello", id: nil, bytes, sensitive: true)
            sendError(peer, .helloRequired, "send your hello first (docs/protocol.md section 3)")
            return
        }
        switch msg {
        case .hello: break
        case .command(let c):
            logInbound(direction, type: "worker.command", id: c.id, bytes, sensitive: c.command == "fill" || c.command == "type", relayed: c.rawParams)
            handleCommand(c)
        case .cancel(let cid):
            logInbound(direction, type: "worker.cancel", id: cid, bytes, sensitive: false)
            handleCancel(cid)
        case .yield(let y):
            logInbound(direction, type: "worker.yield_to_user", id: y.id, bytes, sensitive: true)
            handleYield(y)
        case .complete(let result):
            logInbound(direction, type: "worker.complete", id: nil, bytes, sensitive: false)
            lifecycle(.complete(result: result), from: peer)
        case .fail(let error):
            logInbound(direction, type: "worker.fail", id: nil, bytes, sensitive: false)
            lifecycle(.fail(error: error), from: peer)
        case .commandResponse(let r):
            logInbound(direction, type: "client.command_response", id: r.id, bytes, sensitive: false, relayed: r.rawResult)
            handleResponse(r)
        case .telemetry(let clientSeq, let events):
            logInbound(direction, type: "client.events", id: nil, bytes, sensitive: events.contains { TrafficLog.carriesBody($0.payload) })
            handleTelemetry(clientSeq: clientSeq, events: events, from: peer)
        case .cdp(let channel, let data, let frame):
            // Not journaled (CDP is not replayed); logged under its own event.
            metrics.countIn("client.cdp")
            cdpFromClient(channel: channel, data: data, frame: frame, peer: peer)
        case .cdpClose(let channel, let reason):
            metrics.countIn("client.cdp_close")
            cdpClosedByClient(channel: channel, reason: reason, peer: peer)
        }
    }

    // MARK: Hello and replay

    private func handleHello(_ hello: HelloMessage, from peer: Peer) {
        ensureLoaded()
        if peer.helloDone { sendError(peer, .invalidMessage, "hello was already received on this connection"); return }
        guard (ProtocolVersion.min...ProtocolVersion.max).contains(hello.protocolVersion) else {
            sendError(peer, .unsupportedProtocolVersion, "protocol version \(hello.protocolVersion) is not supported",
                      details: ["min": .int(ProtocolVersion.min), "max": .int(ProtocolVersion.max)], sequenced: false)
            peer.connection.close(.unsupportedProtocolVersion, reason: "unsupported protocol version")
            return
        }
        peer.helloDone = true
        peer.helloTimer?.cancel()
        peer.capabilities = hello.capabilities
        peer.cdpVersion = hello.cdpVersion
        // The worker's subscription outlives its connection, so events produced while it is
        // away are in its replay; a later hello with `events` replaces it.
        if peer.role == .worker, let events = hello.events {
            workerSubscription = Set(events)
            persistState()
        }
        if state.phase.isTerminal {
            sendHello(peer)
            sendSessionEnd(to: peer)
            peer.connection.close(.normal, reason: "session ended")
            return
        }
        lifecycle(.connected(peer.role))
        sendHello(peer)
        // A message of this stream still awaits its commit (a command just accepted): the
        // replay waits for it, so that it carries everything the peer missed (see `released`).
        if withStream(peer.role, { $0.gate != nil }) {
            deferredReplays[peer.role] = (peer, hello.lastSeq)
            return
        }
        replay(to: peer, lastSeq: hello.lastSeq)
        if peer.role == .client { redeliverPendingIfNeeded(lastSeq: hello.lastSeq) }
    }

    /// The hello goes out whole; the journal and the log get it with each injection script's
    /// source replaced by its size (static configuration, ~10 KB, not session traffic).
    private func sendHello(_ peer: Peer) {
        let wire = helloMessage(for: peer.role)
        let scripts = settings.injectionScripts
        guard peer.role == .client, !scripts.isEmpty else {
            sendUnsequenced(peer, wire)
            return
        }
        let summary = scripts.map { s -> JSON in
            .object(["name": s["name"] ?? .null, "bytes": .int(s["source"]?.stringValue?.utf8.count ?? 0)])
        }
        sendUnsequenced(peer, wire, record: helloMessage(for: .client, scripts: .array(summary)))
    }

    private func helloMessage(for role: Role, scripts: JSON? = nil) -> [UInt8] {
        let stream = role == .client ? clientStream : workerStream
        let yieldId = pending?.kind == .yield ? pending?.id : nil
        var hello = ServerHello(currentSeq: role == .debug ? 0 : stream.seq, sessionId: id, role: role, serverVersion: Relay.version,
                                phase: state.phase, workerConnected: state.workerConnected, clientConnected: state.clientConnected,
                                interactive: yieldId != nil, pending: pendingInfo, expiresAt: expiresAt,
                                metadata: role == .client ? nil : metadata, yieldId: yieldId)
        if role == .client {
            hello.lastClientSeq = lastClientSeq > 0 ? lastClientSeq : nil
            hello.eventFilter = clientConfig["eventFilter"]
            hello.capture = clientConfig["capture"]
            hello.debug = clientConfig["debug"]?.boolValue
            // Scripts come from the server configuration (not stored per session).
            hello.injectionScripts = (scripts ?? .array(settings.injectionScripts)).arrayValue
        }
        var w = JSONWriter()
        hello.write(&w)
        return w.bytes
    }

    /// Mutates the outbound stream of `role` (worker or client).
    func withStream<R>(_ role: Role, _ body: (inout OutboundStream) -> R) -> R {
        role == .worker ? body(&workerStream) : body(&clientStream)
    }

    /// Sends `server.replay` with every released retained message after `lastSeq` (or,
    /// without it, the messages produced while the role had no connection). Messages still
    /// behind the commit gate follow when they are committed.
    private func replay(to peer: Peer, lastSeq: Int?) {
        let pendingCommand = pending?.kind == .command ? pending?.id : nil
        guard let (r, messages) = withStream(peer.role, { $0.replay(after: lastSeq, pendingCommand: pendingCommand) }) else { return }
        var w = JSONWriter(bytes: FrameWriter.headerRoom(for: messages.reduce(64) { $0 + $1.storage.count }))
        ServerReplay.write(&w, fromSeq: r.from, toSeq: r.to, complete: r.complete,
                           messages: messages.lazy.map { $0.storage[FrameWriter.maxHeaderSize...] })
        metrics.replays += 1
        if !r.complete { metrics.incompleteReplays += 1 }
        peer.connection.send(OutboundMessage(reserved: w.take()), opcode: .text)
    }

    // MARK: Commands

    func handleCommand(_ c: CommandRequest) {
        guard let worker else { return }
        if state.phase.isTerminal { sendError(worker, .sessionTerminal, "the session has ended", id: c.id); return }
        if let p = pending {
            sendError(worker, .commandPending, "\(p.kind.rawValue) \(p.id) is still pending", id: c.id, details: ["pendingId": .string(p.id)])
            return
        }
        guard relay.storeHealthy else {
            sendError(worker, .internalError, "the session store is failing; the command was not sent (retry later)", id: c.id)
            return
        }
        guard let cid = claimId(c.id, worker: worker, storedWithCommand: true) else { return }
        commandCount += 1
        metrics.commands += 1
        let timeout = CommandCatalog.effectiveTimeout(command: c.command, params: c.params, timeoutMs: c.timeoutMs,
                                                      sessionDefault: timeouts.commandTimeoutMs, limit: context.inboundLimits.maxCommandTimeoutMs)
        var p = Pending(id: cid, kind: .command, command: c.command, startedAt: monotonicNanos())
        p.deadline = WireNumbers.adding(epochMillis(), Int64(timeout))
        p.timer = loop.schedule(afterMillis: timeout) { [self] in self.assumeIsolated { $0.commandTimedOut(cid) } }
        pending = p
        persistState()
        emit(to: .client, type: "server.command", id: cid, commandId: cid, sensitive: c.command == "fill" || c.command == "type",
             durableFirst: true) { w in
            ServerCommand.writeFields(&w, id: cid, command: c.command, params: c.params, rawParams: c.rawParams, timeoutMs: timeout)
        }
    }

    /// Takes the worker's id (unless already used in this session) or assigns `cmd_{n}`.
    /// `storedWithCommand`: the id is stored with the `server.command` that follows at once
    /// (its journal row carries the command id), not on its own.
    func claimId(_ given: String?, worker: Peer, storedWithCommand: Bool = false) -> String? {
        let cid: String
        if let given {
            guard !usedIds.contains(given) else {
                sendError(worker, .duplicateCommandId, "id \(given) was already used in this session", id: given)
                return nil
            }
            cid = given
        } else {
            repeat { commandCounter += 1 } while usedIds.contains("cmd_\(commandCounter)")
            cid = "cmd_\(commandCounter)"
        }
        usedIds.insert(cid)
        if !storedWithCommand { persist(.usedId(session: id, id: cid)) }
        return cid
    }

    private func handleResponse(_ r: CommandResponse) {
        guard let p = pending, p.id == r.id, p.kind == .command else {
            if endedWithoutResponse.contains(r.id) {
                log.event(session: id, "late_response", ["id": .string(r.id)])
            } else if let client {
                sendError(client, .unknownCommandId, "no pending command has id \(r.id)", id: r.id)
            }
            return
        }
        p.timer?.cancel()
        pending = nil
        persistState()
        let durationMs = Int((monotonicNanos() &- p.startedAt) / 1_000_000)
        metrics.observeRoundTrip(ms: durationMs)
        emit(to: .worker, type: "server.command_result", id: r.id) { w in
            ServerCommandResult.writeFields(&w, id: r.id, command: p.command, rawResult: r.rawResult, error: r.error, durationMs: durationMs)
        }
    }

    func commandTimedOut(_ cid: String) {
        guard let p = pending, p.id == cid else { return }
        finishPending(p, errorCode: ResultErrorCode.timeout, message: "no response within the timeout", cancelClient: true)
    }

    private func handleCancel(_ cid: String) {
        guard let worker else { return }
        guard let p = pending, p.id == cid else {
            sendError(worker, .unknownCommandId, "no pending command or yield has id \(cid)", id: cid)
            return
        }
        finishPending(p, errorCode: ResultErrorCode.cancelled, message: "cancelled by the worker", cancelClient: true)
    }

    /// Ends the pending work with an error result for the worker (and `server.cancel` for the client).
    func finishPending(_ p: Pending, errorCode: String, message: String, cancelClient: Bool) {
        p.timer?.cancel()
        pending = nil
        if p.kind == .command {
            endedWithoutResponse.insert(p.id)
            endedWithoutResponseOrder.append(p.id)
            if endedWithoutResponseOrder.count > 1024 { endedWithoutResponse.remove(endedWithoutResponseOrder.removeFirst()) }
        }
        persistState()
        let durationMs = Int((monotonicNanos() &- p.startedAt) / 1_000_000)
        emit(to: .worker, type: "server.command_result", id: p.id) { w in
            ServerCommandResult.writeFields(&w, id: p.id, command: p.command, error: CommandError(code: errorCode, message: message),
                                            durationMs: durationMs)
        }
        if p.kind == .yield {
            setInteractiveOff(p.id)
        } else if cancelClient {
            emit(to: .client, type: "server.cancel", id: p.id) { w in ServerCancel.writeFields(&w, id: p.id) }
        }
    }

    // MARK: Lifecycle

    func armGrace(_ role: Role, deadline: Int64) {
        graceTimers[role]?.cancel()
        graceDeadlines[role] = deadline
        graceTimers[role] = loop.schedule(afterMillis: Int(WireNumbers.subtracting(deadline, epochMillis()))) { [self] in
            self.assumeIsolated { $0.lifecycle(.graceExpired(role)) }
        }
    }

    func lifecycle(_ event: LifecycleEvent, from peer: Peer? = nil) {
        let previous = state.phase
        let effects = state.apply(event)
        if state.phase != previous {
            persist(.updateLifecycle(id: id, phase: state.phase, reason: state.reason, result: state.result, error: state.error))
        }
        for effect in effects {
            switch effect {
            case .phaseChanged(let from, let to):
                log.event(session: id, "phase", ["from": .string(from.rawValue), "to": .string(to.rawValue)])
                metrics.phaseChanged(from: from, to: to)
                journal("server", JSONWriter.serialize(.object(["type": .string("server.phase"), "phase": .string(to.rawValue)]))[...])
            case .ended:
                endedAt = epochMillis()
                ended()
            case .armGrace(let role):
                armGrace(role, deadline: epochMillis() + Int64(timeouts.disconnectGracePeriodMs))
                persistState()
            case .disarmGrace(let role):
                graceTimers[role]?.cancel()
                graceTimers[role] = nil
                graceDeadlines[role] = nil
                persistState()
            case .rejected(let code):
                if let peer { sendError(peer, code, code == .invalidPhase ? "not allowed in phase \(previous.rawValue)" : "the session has ended") }
            }
        }
    }

    /// The session reached a terminal phase. Peers are told only once that phase is durable:
    /// a worker that saw `session_end` never finds the session alive again after a crash.
    private func ended() {
        stopDeadlines()
        if store != nil {
            relay.afterCommit { [self] in self.assumeIsolated { $0.announceEnd() } }
        } else {
            announceEnd()
        }
    }

    /// Cancels the connect, duration and grace deadlines.
    private func stopDeadlines() {
        for t in timers { t.cancel() }
        for t in graceTimers.values { t.cancel() }
        timers = []
        graceTimers = [:]
    }

    /// This node stops serving the session (several nodes, docs/scaling.md): its timers stop,
    /// its peers are closed with `code` (4012: reconnect, the session is served elsewhere) and
    /// nothing it does afterwards is written. What was queued before is committed (or refused
    /// by the store, when another node took the session meanwhile).
    func evict(_ code: CloseCode, reason: String) {
        guard !evicted else { return }
        evicted = true
        stopDeadlines()
        pending?.timer?.cancel()
        closeCDPChannels(.goingAway, reason: reason)
        let peers = [worker, client].compactMap { $0 } + debugs
        worker = nil
        client = nil
        debugs = []
        for peer in peers {
            release(peer)
            peer.connection.close(code, reason: reason)
        }
        workerStream.release()
        clientStream.release()
    }

    /// Sends `server.session_end` to every peer, resolves pending work, closes with 1000.
    private func announceEnd() {
        for peer in [worker, client].compactMap({ $0 }) + debugs where peer.helloDone {
            sendSessionEnd(to: peer)
        }
        if let p = pending {
            finishPending(p, errorCode: ResultErrorCode.sessionTerminal, message: "the session has ended", cancelClient: false)
        }
        closeCDPChannels(.normal, reason: "session ended")
        for peer in [worker, client].compactMap({ $0 }) + debugs {
            peer.connection.close(.normal, reason: "session ended")
        }
        // A terminal session replays nothing: its buffers go now, not at retention. With a
        // store, REST reads of events and the journal come from the store.
        workerStream.release()
        clientStream.release()
        if store != nil {
            events.release()
            journalLog.release()
        }
    }

    private func sendSessionEnd(to peer: Peer) {
        let s = state
        func fields(_ w: inout JSONWriter) { ServerSessionEnd.writeFields(&w, phase: s.phase, reason: s.reason, result: s.result, error: s.error) }
        if peer.role == .debug {
            sendUnsequenced(peer, JSONWriter.message(type: "server.session_end", fields), type: "server.session_end")
            return
        }
        emit(to: peer.role, type: "server.session_end", id: nil) { fields(&$0) }
    }

    // MARK: Outbound

    /// Builds a sequenced message for `role`'s stream, retains it for replay, logs it and sends
    /// it if that role is connected. `fields` writes `,"key":value` pairs after type and seq.
    /// With `durableFirst`, the message reaches the peer only once the store has committed it
    /// (and everything before it); later messages of the same stream wait behind it, so a peer
    /// always sees its stream in `seq` order.
    func emit(to role: Role, type: StaticString, id: String?, commandId: String? = nil, sensitive: Bool = false,
              durableFirst: Bool = false, _ fields: (inout JSONWriter) -> Void) {
        ensureLoaded()
        var w = JSONWriter(bytes: FrameWriter.headerRoom(for: 256))
        let (seq, reservation) = withStream(role) { $0.next() }
        w.open(type: type, seq: seq)
        fields(&w)
        w.raw("}")
        let repeated = w.lastLargeRaw.map { ($0.lowerBound - FrameWriter.maxHeaderSize)..<($0.upperBound - FrameWriter.maxHeaderSize) }
        // The bytes move into the message: sealing writes the header in place, no copy.
        var message = OutboundMessage(reserved: w.take())
        message.seal(.text)
        let retained = Retained(seq: seq, storage: message.storage, commandId: commandId)
        let (maxCount, maxBytes) = (settings.replayMaxMessages, settings.replayMaxBytes)
        withStream(role) { $0.retain(retained, maxCount: maxCount, maxBytes: maxBytes) }
        // A new seq reservation is stored before the first message that uses it.
        if reservation != nil { persistState() }
        let direction: StaticString = role == .worker ? "server_to_worker" : "server_to_client"
        log.message(session: self.id, direction: direction, type: type, id: id, seq: seq,
                          bytes: message.storage[FrameWriter.maxHeaderSize...], sensitive: sensitive)
        journal(direction, retained.payload, message: StreamPosition(stream: StreamPosition.stream(of: role), seq: seq, commandId: commandId),
                repeatsPrevious: repeated)
        metrics.countOut(type)
        let gated = durableFirst && store != nil
        guard withStream(role, { $0.admit(seq: seq, message, durableFirst: gated) }) else {
            if gated { relay.afterCommit { [self] in self.assumeIsolated { $0.released(role, through: seq) } } }
            return
        }
        deliver(role, seq: seq, message)
    }

    /// Hands a released message to the role's connected peer, if any (otherwise it waits in
    /// the tail for a replay).
    private func deliver(_ role: Role, seq: Int, _ message: OutboundMessage) {
        guard let peer = role == .worker ? worker : client, peer.helloDone else { return }
        withStream(role) { $0.markDelivered(seq) }
        peer.connection.sendSealed(message)
    }

    /// The store committed `role`'s stream through `seq`: send what the gate releases — or,
    /// to a peer whose hello came while the gate was closed, the replay it waited for.
    func released(_ role: Role, through seq: Int) {
        let messages = withStream(role, { $0.committed(through: seq) })
        if let (peer, lastSeq) = deferredReplays[role] {
            guard peer === (role == .worker ? worker : client), !peer.detached else { deferredReplays[role] = nil; return }
            guard withStream(role, { $0.gate == nil }) else { return }
            deferredReplays[role] = nil
            replay(to: peer, lastSeq: lastSeq)
            if role == .client { redeliverPendingIfNeeded(lastSeq: lastSeq) }
            return
        }
        for m in messages { deliver(role, seq: m.seq, m.message) }
    }

    /// Sends a message outside the peer's stream. `record` is what the log and journal keep
    /// when it differs from what is sent.
    private func sendUnsequenced(_ peer: Peer, _ bytes: [UInt8], type: StaticString = "server.hello", record: [UInt8]? = nil) {
        let storage = FrameWriter.withHeaderRoom(bytes)
        let direction: StaticString = peer.role == .worker ? "server_to_worker" : "server_to_client"
        if peer.role != .debug {
            let kept = record ?? bytes
            log.message(session: id, direction: direction, type: type, id: nil, seq: nil, bytes: kept[...], sensitive: false)
            journal(direction, kept[...])
        }
        peer.connection.send(OutboundMessage(reserved: storage), opcode: .text)
    }

    /// `server.error`: sequenced once the peer's hello was accepted, unsequenced before.
    func sendError(_ peer: Peer, _ code: ErrorCode, _ message: String, id: String? = nil, details: JSONObject? = nil, sequenced: Bool = true) {
        metrics.countError(code.rawValue)
        func fields(_ w: inout JSONWriter) { ServerError.writeFields(&w, code: code, message: message, id: id, details: details) }
        if sequenced && peer.helloDone && peer.role != .debug && (peer === worker || peer === client) {
            emit(to: peer.role, type: "server.error", id: id) { fields(&$0) }
        } else {
            sendUnsequenced(peer, JSONWriter.message(type: "server.error", fields), type: "server.error")
        }
    }

    // MARK: Journal and debug viewers

    /// Records a message in the journal and sends its envelope to every debug viewer.
    /// `repeatedByNext` and `repeatsPrevious` (offsets in `bytes`) let the store keep bytes a
    /// message and the next one share once (`EntryWrite`).
    func journal(_ direction: StaticString, _ bytes: ArraySlice<UInt8>, message: StreamPosition? = nil,
                 repeatedByNext: Range<Int>? = nil, repeatsPrevious: Range<Int>? = nil) {
        let entry = journalLog.append(direction: direction, ts: epochMillis(), bytes: bytes,
                                      maxCount: settings.journalMaxEntries, maxBytes: settings.journalMaxBytes)
        persistJournal(entry, message: message, repeatedByNext: repeatedByNext, repeatsPrevious: repeatsPrevious)
        guard !debugs.isEmpty else { return }
        let m = JournalLog.envelope(entry)
        for d in debugs { d.connection.send(m, opcode: .text) }
    }
}
