import Glibc
import SocketServer
import SwitchboardProtocol
import WebSocketCore

/// Server-wide settings of the relay: a configuration's values (`init(_:)`), with what `serve`
/// adds (keys, TLS, the injection scripts' text).
public struct RelaySettings: Sendable {
    public var apiKeys: [String]
    /// Base of `websocketUrl` in responses; derived from the listening address when nil.
    public var publicURL: String?
    /// The listener speaks TLS: `websocketUrl` defaults to wss://.
    public var tls: Bool
    public var defaults: SessionTimeouts
    public var maxima: SessionTimeouts
    public var helloTimeoutMs: Int
    public var maxDebugConnections: Int
    /// CDP channels open at once per session (docs/protocol.md section 16); 0 turns CDP off.
    public var maxCDPChannels: Int
    /// Largest CDP frame, in either direction; a larger one closes its channel with 1009.
    public var maxCDPFrameBytes: Int
    public var ratePerSecond: Int
    public var rateBurst: Int
    /// Bytes per second per peer (token bucket), next to the message rate.
    public var rateBytesPerSecond: Int
    public var rateBytesBurst: Int
    /// Dropped messages within `rateWindowMs` that close the peer with 4029 (docs/protocol.md §11).
    public var rateCloseAfterDrops: Int
    public var rateWindowMs: Int
    /// Largest message (after decompression) per role.
    public var maxWorkerMessageBytes: Int
    public var maxClientMessageBytes: Int
    public var maxDebugMessageBytes: Int
    /// Telemetry events kept per session (memory without a store; the store with one), by
    /// count and by bytes (the events' JSON size); the oldest go first.
    public var eventsMaxBytesPerSession: Int
    /// Bytes of journal kept per session in the store (next to `journalStoredEntries`).
    public var journalStoredBytes: Int
    public var replayMaxMessages: Int
    public var replayMaxBytes: Int
    /// Sessions that are not terminal, at most (ended ones do not count).
    public var maxSessions: Int
    /// How long a REST call waits for the store before it answers 503 `store_unavailable`.
    public var storeWaitMs: Int
    /// Largest `timeoutMs` a worker may give a yield.
    public var maxYieldTimeoutMs: Int
    public var injectionScripts: [JSON]
    /// Origins a client connection may come from; empty allows any. A connection without an
    /// Origin header (a native SDK) is not a browser page and is allowed.
    public var allowedOrigins: [String]
    public var journalMaxEntries: Int
    public var journalMaxBytes: Int
    public var eventsMaxPerSession: Int
    /// Journal entries kept per session in the store (the memory keeps `journalMaxEntries`).
    public var journalStoredEntries: Int
    /// Terminal sessions are deleted from the store this long after they ended.
    public var retentionMs: Int64
    /// The settings `c` gives (`ServeConfiguration()`'s defaults when none is given): no API key,
    /// no TLS and no injection script, which `serve` sets from the key file, the certificate
    /// and the scripts' files.
    public init(_ c: ServeConfiguration = ServeConfiguration()) {
        apiKeys = []
        publicURL = c.publicURL
        tls = false
        defaults = c.sessionDefaults
        maxima = c.sessionMaxima
        helloTimeoutMs = c.helloTimeoutMs
        maxDebugConnections = c.maxDebugConnections
        maxCDPChannels = c.maxCDPChannels
        maxCDPFrameBytes = c.maxCDPFrameBytes
        ratePerSecond = c.ratePerSecond
        rateBurst = c.rateBurst
        rateBytesPerSecond = c.rateBytesPerSecond
        rateBytesBurst = c.rateBytesBurst
        rateCloseAfterDrops = c.rateCloseAfterDrops
        rateWindowMs = c.rateWindowMs
        maxWorkerMessageBytes = c.maxWorkerMessageBytes
        maxClientMessageBytes = c.maxClientMessageBytes
        maxDebugMessageBytes = c.maxDebugMessageBytes
        eventsMaxPerSession = c.eventsMaxPerSession
        eventsMaxBytesPerSession = c.eventsMaxBytesPerSession
        journalMaxEntries = c.journalMaxEntries
        journalMaxBytes = c.journalMaxBytes
        journalStoredEntries = c.journalStoredEntries
        journalStoredBytes = c.journalStoredBytes
        replayMaxMessages = c.replayMaxMessages
        replayMaxBytes = c.replayMaxBytes
        maxSessions = c.maxSessions
        storeWaitMs = c.storeWaitMs
        maxYieldTimeoutMs = c.maxYieldTimeoutMs
        injectionScripts = []
        allowedOrigins = c.allowedOrigins
        retentionMs = Int64(c.retentionHours) * 3_600_000
    }
}

/// What a relay's sessions use on every message, in one object each session holds strongly:
/// reading these through a session's unowned `relay` would take the Swift runtime's slow path
/// for an unowned reference (the relay is also weakly referenced) each time. Nothing in it
/// refers back to sessions.
final class RelayContext {
    let settings: RelaySettings
    /// The limits the inbound decoder applies, from the settings.
    let inboundLimits: InboundLimits
    let log: TrafficLog
    let metrics = Metrics()
    /// Durable sessions; nil keeps everything in memory only.
    let store: SessionStore?

    init(settings: RelaySettings, log: TrafficLog, store: SessionStore?) {
        self.settings = settings
        inboundLimits = InboundLimits(maxCommandTimeoutMs: settings.maxima.commandTimeoutMs, maxYieldTimeoutMs: settings.maxYieldTimeoutMs)
        self.log = log
        self.store = store
    }
}

/// The application: registry of sessions, REST API and the WebSocket endpoint, all on one
/// event loop.
public final class Relay: ServerDelegate, @unchecked Sendable {
    public static let version = "0.1.0"

    public let loop: EventLoop
    let context: RelayContext
    public var settings: RelaySettings { context.settings }
    public var log: TrafficLog { context.log }
    public var metrics: Metrics { context.metrics }
    /// Durable sessions; nil keeps everything in memory only.
    public var store: SessionStore? { context.store }
    public weak var server: Server?
    private var apiKeyHashes: [[UInt8]]
    var sessions: [String: Session] = [:]
    var order: [Session] = []
    var ordinal = 0
    /// Several nodes on PostgreSQL: which sessions this node serves (nil for one node).
    public let cluster: PostgresStore?
    /// Sessions this node stopped serving whose queued writes are not all committed yet: a
    /// peer for one is told to come back (it is served again only from what is committed).
    var leaving: Set<String> = []
    public private(set) var draining = false

    public init(loop: EventLoop, settings: RelaySettings, log: TrafficLog, store: SessionStore? = nil) {
        self.loop = loop
        context = RelayContext(settings: settings, log: log, store: store)
        cluster = store as? PostgresStore
        apiKeyHashes = settings.apiKeys.map { Crypto.sha256($0) }
    }

    /// Brings back every session the store holds (on the loop, before accepting): rows and
    /// deadlines now, replay tails, events and journals on first use. Then schedules retention.
    public func restore() throws {
        guard let store else { scheduleRetention(); return }
        defer { scheduleRetention() }
        if let cluster { try startCluster(cluster); return }
        let records = try store.loadSessions()
        try install(records)
        if !records.isEmpty {
            log.event(session: nil, "restored", ["sessions": .int(records.count),
                                                 "live": .int(records.filter { !$0.phase.isTerminal }.count)])
        }
    }

    /// Serves stored sessions here (at start, or when this node takes them over): rows and
    /// deadlines now, replay tails, events and journals on first use.
    func install(_ records: [SessionRecord]) throws {
        guard let store, !records.isEmpty else { return }
        for r in records {
            let session = Session(id: r.id, ordinal: r.ordinal, relay: self, workerTokenHash: r.workerTokenHash,
                                  clientTokenHash: r.clientTokenHash, createdAt: r.createdAt, timeouts: r.timeouts,
                                  metadata: r.metadata, clientConfig: r.clientConfig, tenant: r.tenant)
            sessions[r.id] = session
            order.append(session)
            ordinal = max(ordinal, r.ordinal)
            metrics.phaseChanged(from: nil, to: r.phase)
            session.assumeIsolated { $0.restore(r) }
        }
        // The new seq reservations are durable before any peer is served: a crash right after
        // this resumes beyond every seq this run can hand out.
        try store.commitNow(records.compactMap { r in sessions[r.id].map { s in .updateState(id: r.id, state: s.assumeIsolated { $0.stateSnapshot() }) } })
    }

    func scheduleRetention() {
        loop.schedule(afterMillis: 3_600_000) { [weak self] in
            self?.purge()
            self?.scheduleRetention()
        }
        purge()
    }

    /// Runs `body` on the loop once `ops` and everything submitted before are committed.
    func afterCommit(_ ops: [StoreOp] = [], _ body: @escaping () -> Void) {
        let bound = LoopBound(body)
        store?.submit(ops) { bound.value() }
    }

    /// Whether the store takes writes now (always, without a store).
    var storeHealthy: Bool { store?.isHealthy ?? true }

    static func storeUnavailable() -> HTTPResponse {
        error(503, "store_unavailable", "the session store is failing; retry later")
    }

    /// For a REST call that answers once `ops` are committed: `respond` gets `committed()` then,
    /// or 503 `store_unavailable` (and `gaveUp` runs) if that takes longer than `storeWaitMs`.
    func respondAfterCommit(_ ops: [StoreOp] = [], respond: @escaping (HTTPResponse) -> Void,
                            gaveUp: @escaping () -> Void = {}, _ committed: @escaping () -> HTTPResponse) {
        var answered = false
        let timer = loop.schedule(afterMillis: settings.storeWaitMs) {
            guard !answered else { return }
            answered = true
            gaveUp()
            respond(Relay.storeUnavailable())
        }
        afterCommit(ops) {
            guard !answered else { return }
            answered = true
            timer.cancel()
            respond(committed())
        }
    }

    /// Sessions in a phase that is not terminal.
    var liveSessions: Int { (metrics.phases[.created] ?? 0) + (metrics.phases[.pending] ?? 0) + (metrics.phases[.active] ?? 0) }

    /// Deletes terminal sessions that ended more than the retention period ago (from the
    /// store, or from memory when there is none).
    public func purge() {
        let cutoff = epochMillis() - settings.retentionMs
        let ids: [String]
        if let store {
            guard var purged = try? store.purgeTerminal(endedBefore: cutoff) else { return }
            // Another node may have deleted the rows of sessions this one still holds.
            if cluster != nil { purged += order.filter { s in s.assumeIsolated { $0.endedAt.map { $0 <= cutoff } ?? false } }.map(\.id) }
            ids = purged
        } else {
            ids = order.filter { s in s.assumeIsolated { $0.endedAt.map { $0 <= cutoff } ?? false } }.map(\.id)
        }
        guard !ids.isEmpty else { return }
        let gone = Set(ids)
        order.removeAll { gone.contains($0.id) }
        for id in ids { sessions[id] = nil }
        log.event(session: nil, "purged", ["sessions": .int(ids.count)])
    }

    public func startDraining() {
        draining = true
        // Several nodes: every session moves to another node, after what is queued is committed.
        if cluster != nil { handOff(Array(sessions.keys)) }
    }

    // MARK: HTTP

    public func handle(_ request: HTTPRequest, on connection: Connection) {
        let headOnly = request.method == "HEAD"
        route(request) { response in connection.respond(response, headOnly: headOnly) }
    }

    static func error(_ status: Int, _ code: String, _ message: String, issues: [ValidationIssue]? = nil) -> HTTPResponse {
        var body: JSONObject = ["code": .string(code), "message": .string(message)]
        if let issues { body["issues"] = .array(issues.map { .object(["path": .string($0.path), "message": .string($0.message)]) }) }
        return HTTPResponse(status: status, json: JSONWriter.string(.object(["error": .object(body)])))
    }

    static func json(_ status: Int, _ value: JSON) -> HTTPResponse {
        HTTPResponse(status: status, json: JSONWriter.string(value))
    }

    /// The tenant of the request's API key (a digest of the key), or nil when the key is
    /// missing or unknown. Each key is a tenant (docs/protocol.md §12).
    private func tenant(of request: HTTPRequest) -> String? {
        guard let auth = request.headers["Authorization"], auth.hasPrefix("Bearer ") else { return nil }
        let h = Crypto.sha256(String(auth.dropFirst(7)).trimmingCharacters())
        var found: [UInt8]? = nil
        for k in apiKeyHashes where Crypto.constantTimeEqual(k, h) { found = k }
        return found.map { Crypto.hex(Array($0.prefix(16))) }
    }

    /// The session with `id`, whoever owns it.
    func session(_ id: String) -> Session? { sessions[id] }

    /// The session with `id` served here: held already, or taken over now (several nodes).
    func lookup(_ id: String) -> Lookup {
        if let s = sessions[id] { return .found(s) }
        guard let cluster else { return .notFound }
        // A draining node takes nothing on; what it is giving up comes back only once committed.
        if draining || leaving.contains(id) { return .moved(nil) }
        // The database failing (a lock held by a node that lost its link, a timeout) is a
        // "retry", never a refusal.
        guard let answer = try? cluster.takeOver(id) else { return .moved(nil) }
        switch answer {
        case .notFound: return .notFound
        case .heldElsewhere(let credentials): return .moved(credentials)
        case .taken(let record):
            do { try install([record]) } catch {
                evict([id], reason: "the session could not be taken over")
                return .moved(nil)
            }
            log.event(session: id, "taken_over", ["node": .string(cluster.nodeId)])
            return sessions[id].map { .found($0) } ?? .moved(nil)
        }
    }

    /// `moved`: served by another node, or on its way; with what authorises a caller to ask
    /// for a hand-over (nil: do not ask).
    enum Lookup { case found(Session), moved(SessionCredentials?), notFound }

    static func moved() -> HTTPResponse {
        var r = error(503, "session_moved", "the session is being moved to another node; retry in a second")
        r.headers.append(("Retry-After", "1"))
        return r
    }

    /// A session the tenant may see: its own, or one stored before tenants were recorded.
    private func session(_ id: String, for tenant: String) -> Found {
        switch lookup(id) {
        case .found(let s) where s.tenant == nil || s.tenant == tenant: return .success(s)
        case .moved(let c) where c == nil || c?.tenant == nil || c?.tenant == tenant:
            if c != nil { cluster?.want(id) }
            return .failure(Relay.moved())
        default: return .failure(Relay.error(404, "not_found", "no session \(id)"))
        }
    }

    enum Found { case success(Session), failure(HTTPResponse) }

    /// Answers now or, for what must be durable or read after pending writes, once the store
    /// has committed.
    func route(_ request: HTTPRequest, respond: @escaping (HTTPResponse) -> Void) {
        if let r = routeNow(request, respond: respond) { respond(r) }
    }

    func routeNow(_ request: HTTPRequest, respond: @escaping (HTTPResponse) -> Void) -> HTTPResponse? {
        let path = request.path
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let method = request.method == "HEAD" ? "GET" : request.method
        switch (method, parts) {
        case ("GET", ["healthz"]): return Relay.json(200, .object(["status": .string("ok")]))
        case ("GET", ["readyz"]):
            if draining { return Relay.error(503, "draining", "the server is shutting down") }
            if !storeHealthy { return Relay.storeUnavailable() }
            return Relay.json(200, .object(["status": .string("ready")]))
        case ("GET", ["version"]):
            return Relay.json(200, .object(["version": .string(Relay.version), "protocolVersion": .int(ProtocolVersion.current)]))
        case ("GET", ["metrics"]):
            // Bounds counted below the relay, reported with the relay's own.
            if let server {
                metrics.limitHits["max_connections"] = server.refusedGlobal
                metrics.limitHits["max_connections_per_ip"] = server.refusedPerIP
                metrics.limitHits["accept_retry_ms"] = server.acceptPauses
            }
            metrics.limitHits["log_buffer_bytes"] = log.dropped
            var text = metrics.render(connections: server?.connectionCount ?? 0, bytesIn: server?.bytesIn ?? 0,
                                      bytesOut: server?.bytesOut ?? 0, extra: processGauges())
            if let store {
                let stats = store.commitStats
                let l = stats.recent.sorted()
                func q(_ p: Double) -> Double { l.isEmpty ? 0 : l[min(l.count - 1, Int(Double(l.count) * p))] }
                text += "# HELP switchboard_store_commit_ms Store commit latency (group commits): quantiles over the latest commits, count and sum since start.\n"
                text += "# TYPE switchboard_store_commit_ms summary\n"
                text += "switchboard_store_commit_ms{quantile=\"0.5\"} \(q(0.5))\n"
                text += "switchboard_store_commit_ms{quantile=\"0.99\"} \(q(0.99))\n"
                text += "switchboard_store_commit_ms_sum \(stats.sumMs)\n"
                text += "switchboard_store_commit_ms_count \(stats.count)\n"
                text += "# HELP switchboard_store_failed_commits_total Store commits that failed (each is retried until it succeeds).\n"
                text += "# TYPE switchboard_store_failed_commits_total counter\n"
                text += "switchboard_store_failed_commits_total \(store.failedCommits)\n"
                text += "# HELP switchboard_store_healthy 1 while store commits succeed, 0 from a failure until the next success.\n"
                text += "# TYPE switchboard_store_healthy gauge\n"
                text += "switchboard_store_healthy \(store.isHealthy ? 1 : 0)\n"
            }
            return HTTPResponse(status: 200, text: text, contentType: "text/plain; version=0.0.4; charset=utf-8")
        default: break
        }
        guard parts.first == "v1", parts.count >= 2, parts[1] == "sessions" else {
            return Relay.error(404, "not_found", "no route for \(request.method) \(path) (the routes are in docs/openapi.yaml)")
        }
        // CDP discovery is authorised by the session's worker token, not an API key.
        if parts.count >= 4, parts[3] == "cdp" { return cdpDiscovery(request, method: method, parts: parts) }
        guard let tenant = tenant(of: request) else { return Relay.error(401, "unauthorized", "missing or wrong API key (Authorization: Bearer …)") }
        switch (method, parts.count) {
        case ("POST", 2): return createSession(request, tenant: tenant, respond: respond)
        case ("GET", 2): return listSessions(request, tenant: tenant)
        case ("GET", 3), ("DELETE", 3), ("GET", 4):
            if parts.count == 4 && parts[3] != "events" && parts[3] != "journal" {
                return Relay.error(405, "method_not_allowed", "\(request.method) is not allowed on \(path)")
            }
            switch session(parts[2], for: tenant) {
            case .failure(let r): return r
            case .success(let s): return sessionRoute(request, method: method, parts: parts, s, respond: respond)
            }
        case (_, 2), (_, 3), (_, 4):
            return Relay.error(405, "method_not_allowed", "\(request.method) is not allowed on \(path)")
        default:
            return Relay.error(404, "not_found", "no route for \(request.method) \(path) (the routes are in docs/openapi.yaml)")
        }
    }

    /// GET and DELETE of a session, and its events and journal.
    private func sessionRoute(_ request: HTTPRequest, method: String, parts: [String], _ s: Session,
                              respond: @escaping (HTTPResponse) -> Void) -> HTTPResponse? {
        switch (method, parts.count) {
        case ("GET", 3):
            return Relay.json(200, infoJSON(s))
        case ("DELETE", 3):
            s.assumeIsolated { $0.lifecycle(.cancel) }
            guard store != nil else { return Relay.json(200, infoJSON(s)) }
            respondAfterCommit(respond: respond) { Relay.json(200, self.infoJSON(s)) }
            return nil
        default:
            let q = request.query
            var after = 0, limit = 100
            if let a = q["after"] {
                guard let v = Int(a), v >= 0, v <= WireNumbers.maxSafeInteger else {
                    return Relay.error(400, "validation_error", "after must be an integer from 0 to \(WireNumbers.maxSafeInteger)",
                                       issues: [ValidationIssue(path: "after", message: "must be an integer from 0 to \(WireNumbers.maxSafeInteger)")])
                }
                after = v
            }
            if let l = q["limit"] {
                guard let v = Int(l), (1...1000).contains(v) else { return Relay.error(400, "validation_error", "limit must be 1 to 1000", issues: [ValidationIssue(path: "limit", message: "must be an integer from 1 to 1000")]) }
                limit = v
            }
            let types = q["types"].map { Set($0.split(separator: ",").map(String.init)) }
            let events = parts[3] == "events"
            let read = { () -> HTTPResponse in
                let body = events ? s.assumeIsolated { $0.eventsPage(after: after, limit: limit, types: types) }
                                  : s.assumeIsolated { $0.journalPage(after: after, limit: limit) }
                return HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: body)
            }
            // With a store, read after everything written so far is committed.
            guard store != nil else { return read() }
            respondAfterCommit(respond: respond, read)
            return nil
        }
    }

    func infoJSON(_ s: Session) -> JSON { Relay.infoJSON(s.assumeIsolated { $0.info() }) }

    static func infoJSON(_ info: SessionInfo) -> JSON {
        var o: JSONObject = [:]
        o["sessionId"] = .string(info.sessionId)
        o["phase"] = .string(info.phase.rawValue)
        o["reason"] = info.reason.map { .string($0.rawValue) } ?? .null
        o["createdAt"] = .int64(info.createdAt)
        o["expiresAt"] = .int64(info.expiresAt)
        o["workerConnected"] = .bool(info.workerConnected)
        o["clientConnected"] = .bool(info.clientConnected)
        o["interactive"] = .bool(info.interactive)
        if let p = info.pending {
            var po: JSONObject = ["id": .string(p.id), "kind": .string(p.kind)]
            if let c = p.command { po["command"] = .string(c) }
            o["pending"] = .object(po)
        } else { o["pending"] = .null }
        o["metadata"] = info.metadata.map { .object($0) } ?? .null
        o["result"] = info.result ?? .null
        o["error"] = info.error ?? .null
        o["counts"] = .object(["commands": .int(info.counts.commands), "events": .int(info.counts.events)])
        return .object(o)
    }

    private func createSession(_ request: HTTPRequest, tenant: String, respond: @escaping (HTTPResponse) -> Void) -> HTTPResponse? {
        if draining { return Relay.error(503, "draining", "the server is shutting down") }
        if !storeHealthy { return Relay.storeUnavailable() }
        var body = JSONObject()
        if !request.body.isEmpty {
            guard let parsed = try? JSONParser.parse(request.body), let o = parsed.objectValue else {
                return Relay.error(400, "validation_error", "the body must be a JSON object", issues: [ValidationIssue(path: "", message: "must be a JSON object")])
            }
            body = o
        }
        var issues: [ValidationIssue] = []
        var timeouts = settings.defaults
        var metadata: JSONObject? = nil
        if let m = body["metadata"], !m.isNull {
            if let mo = m.objectValue { metadata = mo } else { issues.append(ValidationIssue(path: "metadata", message: "must be an object")) }
        }
        var clientConfig: JSONObject = [:]
        clientConfig["eventFilter"] = .null
        clientConfig["capture"] = .object(["snapshots": .object(["enabled": .bool(false), "delayMs": .int(500)]),
                                           "screenshots": .object(["enabled": .bool(false), "intervalMs": .int(5000)])])
        clientConfig["debug"] = .bool(false)
        func positive(_ v: JSON, _ path: String, max: Int) -> Int? {
            guard let i = v.intValue, i > 0, v.doubleValue.map({ $0 == $0.rounded() }) == true else {
                issues.append(ValidationIssue(path: path, message: "must be a positive integer")); return nil
            }
            guard i <= max else { issues.append(ValidationIssue(path: path, message: "must be at most \(max)")); return nil }
            return i
        }
        if let t = body["timeout"], !t.isNull {
            if let secs = positive(t, "timeout", max: settings.maxima.sessionDurationMs / 1000) { timeouts.sessionDurationMs = secs * 1000 }
        }
        if let c = body["config"], !c.isNull {
            guard let co = c.objectValue else {
                return Relay.error(400, "validation_error", "config must be an object", issues: [ValidationIssue(path: "config", message: "must be an object")])
            }
            if let v = co["sessionDurationMs"] { if let i = positive(v, "config.sessionDurationMs", max: settings.maxima.sessionDurationMs) { timeouts.sessionDurationMs = i } }
            if let v = co["connectTimeoutMs"] { if let i = positive(v, "config.connectTimeoutMs", max: settings.maxima.connectTimeoutMs) { timeouts.connectTimeoutMs = i } }
            if let v = co["disconnectGracePeriodMs"] { if let i = positive(v, "config.disconnectGracePeriodMs", max: settings.maxima.disconnectGracePeriodMs) { timeouts.disconnectGracePeriodMs = i } }
            if let v = co["commandTimeoutMs"] { if let i = positive(v, "config.commandTimeoutMs", max: settings.maxima.commandTimeoutMs) { timeouts.commandTimeoutMs = i } }
            if let v = co["eventFilter"], !v.isNull {
                if let types = v["types"]?.arrayValue, types.allSatisfy({ $0.stringValue != nil }) { clientConfig["eventFilter"] = v }
                else { issues.append(ValidationIssue(path: "config.eventFilter", message: "must be {\"types\": [string]}")) }
            }
            if let v = co["capture"], !v.isNull {
                if v.objectValue != nil { clientConfig["capture"] = v } else { issues.append(ValidationIssue(path: "config.capture", message: "must be an object")) }
            }
            if let v = co["debug"], !v.isNull {
                if v.boolValue != nil { clientConfig["debug"] = v } else { issues.append(ValidationIssue(path: "config.debug", message: "must be a boolean")) }
            }
        }
        guard issues.isEmpty else { return Relay.error(400, "validation_error", "the request is not valid", issues: issues) }
        guard liveSessions < settings.maxSessions else {
            metrics.hit("max_sessions")
            return Relay.error(429, "rate_limited", "at most \(settings.maxSessions) live sessions")
        }
        let sid = "sess_" + Crypto.hex(Crypto.randomBytes(12))
        let workerToken = Crypto.token(prefix: "wt_")
        let clientToken = Crypto.token(prefix: "ct_")
        if cluster != nil {
            return createClusterSession(request, id: sid, workerToken: workerToken, clientToken: clientToken, timeouts: timeouts,
                                        metadata: metadata, clientConfig: clientConfig, tenant: tenant, respond: respond)
        }
        ordinal += 1
        let session = Session(id: sid, ordinal: ordinal, relay: self, workerTokenHash: Crypto.sha256(workerToken),
                              clientTokenHash: Crypto.sha256(clientToken), createdAt: epochMillis(), timeouts: timeouts,
                              metadata: metadata, clientConfig: clientConfig, tenant: tenant)
        sessions[sid] = session
        order.append(session)
        metrics.sessionsCreated += 1
        metrics.phaseChanged(from: nil, to: .created)
        session.assumeIsolated { $0.startTimers() }
        log.event(session: sid, "created", ["expiresAt": .int64(session.expiresAt)])
        let record = SessionRecord(id: sid, ordinal: ordinal, createdAt: session.createdAt, timeouts: timeouts, metadata: metadata,
                                   clientConfig: clientConfig, workerTokenHash: session.workerTokenHash, clientTokenHash: session.clientTokenHash,
                                   phase: .created, reason: nil, result: nil, error: nil, state: [:], tenant: tenant)
        let wsBase = webSocketBase(request)
        let response = Relay.json(201, .object([
            "sessionId": .string(sid), "workerToken": .string(workerToken), "clientToken": .string(clientToken),
            "websocketUrl": .string("\(wsBase)/sessions/\(sid)/ws"), "expiresAt": .int64(session.expiresAt), "phase": .string("created"),
        ]))
        // The tokens are shown once: answer only when the session is durable.
        guard store != nil else { return response }
        // If the store cannot take it in time, the caller never sees the tokens: end the
        // session so it does not wait for peers that cannot come.
        respondAfterCommit([.insertSession(record)], respond: respond, gaveUp: { session.assumeIsolated { $0.lifecycle(.cancel) } }) { response }
        return nil
    }

    /// `ws://host:port` (or the configured public URL, as ws:// or wss://) for URLs in answers.
    func webSocketBase(_ request: HTTPRequest) -> String {
        let base = settings.publicURL ?? "\(settings.tls ? "wss" : "ws")://\(request.headers["Host"] ?? "127.0.0.1:\(server?.port ?? 0)")"
        if base.hasPrefix("http://") { return "ws://" + base.dropFirst(7) }
        if base.hasPrefix("https://") { return "wss://" + base.dropFirst(8) }
        return base
    }

    enum Authorised { case session(Session), refused(HTTPResponse) }

    /// A session token from `?token=` or `Authorization: Bearer` (nil when there is none).
    private static func sessionToken(_ request: HTTPRequest) -> String? {
        var token = request.query["token"]
        if token == nil, let auth = request.headers["Authorization"], auth.hasPrefix("Bearer ") { token = String(auth.dropFirst(7)).trimmingCharacters() }
        return token?.isEmpty == false ? token : nil
    }

    /// The session `id` when `token` is its token for `role`. The token is hashed and compared
    /// even for an unknown session, so the two refusals (404, 401) take the same time.
    private func authorise(_ token: String, session id: String, role: Role) -> Authorised {
        var session: Session? = nil
        switch lookup(id) {
        case .found(let s): session = s
        case .moved(nil): return .refused(Relay.moved())
        case .moved(let c?):
            // Only a caller with the session's token may have it moved here.
            let h = Crypto.sha256(token)
            guard Crypto.constantTimeEqual(h, role == .client ? c.clientTokenHash : c.workerTokenHash) else {
                return .refused(Relay.error(401, "unauthorized", "wrong token for this session and role"))
            }
            cluster?.want(id)
            return .refused(Relay.moved())
        case .notFound: break
        }
        let ok = session?.assumeIsolated { $0.tokenMatches(token, role: role) } ?? Crypto.constantTimeEqual(Crypto.sha256(token), Relay.dummyHash)
        guard let session else { return .refused(Relay.error(404, "not_found", "no such session")) }
        guard ok else { return .refused(Relay.error(401, "unauthorized", "wrong token for this session and role")) }
        return .session(session)
    }

    /// Checks the worker token of a CDP request (discovery or the channel's upgrade).
    private func cdpSession(_ request: HTTPRequest, id: String) -> Authorised {
        guard let token = Relay.sessionToken(request) else {
            return .refused(Relay.error(401, "unauthorized", "the session's worker token is required (Authorization: Bearer WORKER_TOKEN)"))
        }
        return authorise(token, session: id, role: .worker)
    }

    /// `GET /v1/sessions/{id}/cdp/json/version` (and `json/list`, `json`): what Chromium's
    /// DevTools HTTP endpoint answers, pointing at the session's CDP WebSocket.
    private func cdpDiscovery(_ request: HTTPRequest, method: String, parts: [String]) -> HTTPResponse {
        let rest = Array(parts.dropFirst(4))
        guard rest == ["json", "version"] || rest == ["json", "list"] || rest == ["json"] else {
            return Relay.error(404, "not_found", "CDP discovery is GET /v1/sessions/{id}/cdp/json/version (or json/list)")
        }
        guard method == "GET" else { return Relay.error(405, "method_not_allowed", "\(request.method) is not allowed on \(request.path)") }
        let session: Session
        switch cdpSession(request, id: parts[2]) {
        case .refused(let r): return r
        case .session(let s): session = s
        }
        guard rest == ["json", "version"] else {
            // Page endpoints are not relayed: the browser endpoint and Target.* reach every page.
            return Relay.json(200, .array([]))
        }
        if let refusal = session.assumeIsolated({ $0.cdpRefusal() }), refusal.code != "rate_limited" {
            return Relay.error(refusal.status, refusal.code, refusal.message)
        }
        var o = session.assumeIsolated { $0.client?.cdpVersion } ?? JSONObject()
        if o["Browser"] == nil { o["Browser"] = .string("Switchboard/\(Relay.version)") }
        if o["Protocol-Version"] == nil { o["Protocol-Version"] = .string("1.3") }
        o["webSocketDebuggerUrl"] = .string("\(webSocketBase(request))/sessions/\(session.id)/cdp")
        return Relay.json(200, .object(o))
    }

    private func listSessions(_ request: HTTPRequest, tenant: String) -> HTTPResponse {
        let q = request.query
        var limit = 50
        if let l = q["limit"] {
            guard let v = Int(l), v > 0, v <= 1000 else { return Relay.error(400, "validation_error", "limit must be 1 to 1000", issues: [ValidationIssue(path: "limit", message: "must be an integer from 1 to 1000")]) }
            limit = v
        }
        var phase: Phase? = nil
        if let p = q["phase"] {
            guard let ph = Phase(rawValue: p) else { return Relay.error(400, "validation_error", "unknown phase \(p)", issues: [ValidationIssue(path: "phase", message: "unknown phase")]) }
            phase = ph
        }
        var before = Int.max
        if let c = q["cursor"] {
            guard let v = Int(c) else { return Relay.error(400, "validation_error", "invalid cursor", issues: [ValidationIssue(path: "cursor", message: "invalid")]) }
            before = v
        }
        if let cluster { return listClusterSessions(cluster, tenant: tenant, phase: phase, before: before, limit: limit) }
        var items: [JSON] = []
        var next: JSON = .null
        var lastOrdinal = 0
        for s in order.reversed() where s.ordinal < before && (s.tenant == nil || s.tenant == tenant) {
            if let phase, s.assumeIsolated({ $0.state.phase }) != phase { continue }
            // The cursor is the ordinal of the last session returned: the next page starts below it.
            if items.count == limit { next = .string(String(lastOrdinal)); break }
            items.append(infoJSON(s))
            lastOrdinal = s.ordinal
        }
        return Relay.json(200, .object(["sessions": .array(items), "next": next]))
    }

    private func processGauges() -> [(String, String, Int)] {
        var rss = 0
        if let f = fopen("/proc/self/statm", "r") {
            var size = 0, resident = 0
            withUnsafeMutablePointer(to: &size) { sp in withUnsafeMutablePointer(to: &resident) { rp in
                _ = withVaList([sp, rp]) { vfscanf(f, "%ld %ld", $0) }
            } }
            fclose(f)
            rss = resident * Int(sysconf(Int32(_SC_PAGESIZE)))
        }
        var fds = 0
        if let d = opendir("/proc/self/fd") {
            while readdir(d) != nil { fds += 1 }
            closedir(d)
            fds -= 2
        }
        return [("process_resident_memory_bytes", "gauge", rss), ("process_open_fds", "gauge", fds)]
    }

    // MARK: WebSocket endpoint

    public func upgrade(_ request: HTTPRequest, on connection: Connection) -> UpgradeDecision {
        var parts = request.path.split(separator: "/").map(String.init)
        if parts.first == "v1" { parts.removeFirst() }
        if parts.count == 3, parts[0] == "sessions", parts[2] == "cdp" {
            if draining { return .refuse(Relay.error(503, "draining", "the server is shutting down")) }
            switch cdpSession(request, id: parts[1]) {
            case .refused(let r): return .refuse(r)
            case .session(let session):
                if let refusal = session.assumeIsolated({ $0.cdpRefusal() }) { return .refuse(Relay.error(refusal.status, refusal.code, refusal.message)) }
                return .accept(CDPHandler(session: session))
            }
        }
        guard parts.count == 3, parts[0] == "sessions", parts[2] == "ws" else {
            return .refuse(Relay.error(404, "not_found", "WebSocket endpoints are /sessions/{id}/ws and /sessions/{id}/cdp"))
        }
        if draining { return .refuse(Relay.error(503, "draining", "the server is shutting down")) }
        let q = request.query
        guard let roleName = q["role"], !roleName.isEmpty else { return .refuse(Relay.error(400, "bad_request", "query parameter role is required")) }
        guard let role = Role(rawValue: roleName) else { return .refuse(Relay.error(400, "bad_request", "unknown role \(roleName)")) }
        guard let token = Relay.sessionToken(request) else { return .refuse(Relay.error(400, "bad_request", "token is required (query or Authorization: Bearer)")) }
        let session: Session
        switch authorise(token, session: parts[1], role: role) {
        case .refused(let r): return .refuse(r)
        case .session(let s): session = s
        }
        if role == .client, !settings.allowedOrigins.isEmpty, let origin = request.headers["Origin"], !settings.allowedOrigins.contains(origin) {
            return .refuse(Relay.error(403, "forbidden", "origin \(origin) is not allowed"))
        }
        if role == .debug && session.assumeIsolated({ $0.debugs.count }) >= settings.maxDebugConnections {
            return .refuse(Relay.error(429, "rate_limited", "at most \(settings.maxDebugConnections) debug connections per session"))
        }
        var since: Int? = nil
        if role == .debug, let sv = q["since"] {
            guard let v = Int(sv), v >= 0, v <= WireNumbers.maxSafeInteger else { return .refuse(Relay.error(400, "bad_request", "since must be a non-negative integer")) }
            since = v
        }
        return .accept(PeerHandler(session: session, role: role, since: since))
    }

    static let dummyHash = Crypto.sha256("switchboard-unknown-session")
}

/// Bridges one WebSocket to its session, synchronously on the loop.
final class PeerHandler: WebSocketHandler {
    let session: Session
    let role: Role
    let since: Int?
    var peer: Peer?

    init(session: Session, role: Role, since: Int?) { self.session = session; self.role = role; self.since = since }

    func webSocketDidOpen(_ connection: Connection) {
        if session.assumeIsolated({ $0.evicted }) { connection.close(.moved, reason: "the session moved to another node"); return }
        let role = self.role, since = self.since
        let s = session.relay.settings
        connection.limitMessages(to: role == .worker ? s.maxWorkerMessageBytes : role == .client ? s.maxClientMessageBytes : s.maxDebugMessageBytes)
        peer = session.assumeIsolated { $0.attach(connection, role: role, since: since) }
    }

    func webSocket(_ connection: Connection, didReceiveText message: ReceivedMessage) {
        guard let peer else { return }
        session.assumeIsolated { $0.receive(message, from: peer) }
    }

    func webSocket(_ connection: Connection, didReceiveBinary message: ReceivedMessage) {
        connection.fail(.unsupportedData, reason: "binary messages are not accepted")
    }

    func webSocketDidClose(_ connection: Connection, code: CloseCode) {
        session.relay.metrics.closed(code.rawValue)
        if code == .messageTooBig { session.relay.metrics.hit(role == .worker ? "max_worker_message_bytes" : role == .client ? "max_client_message_bytes" : "max_debug_message_bytes") }
        guard let peer else { return }
        self.peer = nil
        session.assumeIsolated { $0.connectionClosed(peer, code: code) }
    }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " { s.removeFirst() }
        while let l = s.last, l == " " { s.removeLast() }
        return String(s)
    }
}
