import SocketServer
import SwitchboardProtocol
import WebSocketCore

/// One journal entry: a message as debug viewers see it.
public struct JournalEntry: Sendable {
    public var n: Int
    public var direction: StaticString
    public var ts: Int64
    public var bytes: ArraySlice<UInt8>
}

/// The session's message journal (what debug viewers and `GET …/journal` see), bounded by
/// count and bytes. Entries are numbered from 1; references share the relayed buffers.
struct JournalLog {
    private(set) var list: [JournalEntry] = []
    private var head = 0
    private var bytes = 0
    private(set) var last = 0

    /// After a restart: continue numbering after `last` (older entries are read from the store).
    mutating func restore(last n: Int) { last = max(last, n) }

    mutating func append(direction: StaticString, ts: Int64, bytes b: ArraySlice<UInt8>, maxCount: Int, maxBytes: Int) -> JournalEntry {
        last += 1
        let e = JournalEntry(n: last, direction: direction, ts: ts, bytes: b)
        list.append(e)
        bytes += b.count
        while list.count - head > maxCount || (bytes > maxBytes && list.count - head > 1) {
            bytes -= list[head].bytes.count
            list[head].bytes = []
            head += 1
        }
        if head > 1024 && head * 2 > list.count { list.removeFirst(head); head = 0 }
        return e
    }

    mutating func release() { list = []; head = 0; bytes = 0 }

    /// Retained entries with `n >= from`.
    func entries(from: Int) -> ArraySlice<JournalEntry> {
        let live = list[head...]
        guard let first = live.first else { return [] }
        let start = max(0, from - first.n)
        return start >= live.count ? [] : live.dropFirst(start)
    }

    static func envelope(_ e: JournalEntry) -> OutboundMessage {
        var w = JSONWriter(bytes: FrameWriter.headerRoom(for: e.bytes.count + 64))
        w.raw("{\"direction\":\""); w.raw(e.direction)
        w.raw("\",\"ts\":\""); w.raw(Timestamps.iso(e.ts))
        w.raw("\",\"message\":"); w.raw(e.bytes); w.raw("}")
        return OutboundMessage(reserved: w.bytes)
    }

    static func restEntry(_ e: JournalEntry) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"n\":"); w.int(e.n)
        w.raw(",\"direction\":\""); w.raw(e.direction)
        w.raw("\",\"ts\":\""); w.raw(Timestamps.iso(e.ts)); w.raw("\"")
        w.raw(",\"message\":"); w.raw(e.bytes); w.raw("}")
        return w.bytes
    }
}

/// A stored telemetry event.
public struct StoredEvent: Sendable {
    public var eventSeq: Int
    public var type: String
    public var ts: Int64
    public var serverTs: Int64
    public var source: String
    public var payload: JSONObject

    /// Bytes of the event's JSON, approximately (what budgets count).
    var estimatedSize: Int { 96 + type.utf8.count + source.utf8.count + JSON.object(payload).estimatedSize }

    var json: JSON {
        .object(["eventSeq": .int(eventSeq), "type": .string(type), "ts": .int64(ts), "serverTs": .int64(serverTs),
                 "source": .string(source), "payload": .object(payload)])
    }
}

/// The session's telemetry events with their `eventSeq`, bounded in memory.
struct EventLog {
    private(set) var list: [StoredEvent] = []
    private var head = 0
    private(set) var total = 0

    mutating func restore(total n: Int) { total = max(total, n) }
    mutating func release() { list = []; sizes = []; head = 0; bytes = 0 }

    private var bytes = 0
    private var sizes: [Int] = []

    /// Numbers the event; keeps it (within `max` events and `maxBytes`) when `keep`.
    /// Returns the event and whether older events were dropped to make room.
    mutating func append(_ e: TelemetryEvent, serverTs: Int64, keep: Bool, max: Int, maxBytes: Int) -> (StoredEvent, dropped: Bool) {
        total += 1
        let stored = StoredEvent(eventSeq: total, type: e.type, ts: e.ts ?? serverTs, serverTs: serverTs,
                                 source: e.source ?? "client", payload: e.payload ?? [:])
        guard keep else { return (stored, false) }
        list.append(stored)
        let size = stored.estimatedSize
        sizes.append(size)
        bytes += size
        var dropped = false
        while list.count - head > 1 && (list.count - head > max || bytes > maxBytes) {
            bytes -= sizes[head]
            list[head] = StoredEvent(eventSeq: 0, type: "", ts: 0, serverTs: 0, source: "", payload: [:])
            head += 1
            dropped = true
        }
        if head > 1024 && head * 2 > list.count { list.removeFirst(head); sizes.removeFirst(head); head = 0 }
        return (stored, dropped)
    }

    func page(after: Int, limit: Int, types: Set<String>?) -> (events: [StoredEvent], next: Int?) {
        var out: [StoredEvent] = []
        for e in list[head...] where e.eventSeq > after {
            if let types, !types.contains(e.type) { continue }
            if out.count == limit { return (out, out.last?.eventSeq) }
            out.append(e)
        }
        return (out, nil)
    }
}

/// A yield condition compiled once when the yield starts.
struct CompiledCondition {
    var index: Int
    var type: String
    var regex: Pattern?
    var urlContains: String?
    var method: String?
    var successfulOnly = false
    var bodyContains: String?
    var captureBody = false
    var selector: String?
    var state: String?

    init?(index: Int, _ o: JSONObject) {
        self.index = index
        guard let t = o["type"]?.stringValue else { return nil }
        type = t
        switch t {
        case "url":
            guard let p = o["pattern"]?.stringValue, let r = try? Pattern(p) else { return nil }
            regex = r
        case "networkRequest":
            if let p = o["url"]?.stringValue { guard let r = try? Pattern(p) else { return nil }; regex = r }
            urlContains = o["urlContains"]?.stringValue
            method = o["method"]?.stringValue?.uppercased()
            successfulOnly = o["successfulOnly"]?.boolValue ?? false
            bodyContains = o["bodyContains"]?.stringValue
            captureBody = o["captureBody"]?.boolValue ?? false
        case "selector":
            selector = o["selector"]?.stringValue
            state = o["state"]?.stringValue ?? "visible"
        default:
            return nil
        }
    }

    /// What the client receives for a condition it evaluates itself.
    var clientJSON: JSON? {
        guard type == "selector", let selector else { return nil }
        return .object(["index": .int(index), "type": .string("selector"), "selector": .string(selector), "state": .string(state ?? "visible")])
    }
}

extension Session {
    static let defaultYieldTimeoutMs = 300_000

    // MARK: Yield to user

    func handleYield(_ y: YieldRequest) {
        guard let worker else { return }
        if state.phase.isTerminal { sendError(worker, .sessionTerminal, "the session has ended", id: y.id); return }
        if let p = pending {
            sendError(worker, .commandPending, "\(p.kind.rawValue) \(p.id) is still pending", id: y.id, details: ["pendingId": .string(p.id)])
            return
        }
        // Patterns were validated by the decoder; compile them once for the life of the yield.
        var compiled: [CompiledCondition] = []
        for (i, c) in y.conditions.enumerated() {
            guard let o = c.objectValue, let cc = CompiledCondition(index: i, o) else {
                sendError(worker, .invalidCommand, "condition \(i) is not valid", id: y.id,
                          details: ["issues": .array([.object(["path": .string("conditions[\(i)]"), "message": .string("invalid")])])])
                return
            }
            compiled.append(cc)
        }
        guard let yid = claimId(y.id, worker: worker) else { return }
        let timeout = min(y.timeoutMs ?? Session.defaultYieldTimeoutMs, context.inboundLimits.maxYieldTimeoutMs)
        var p = Pending(id: yid, kind: .yield, command: "yield_to_user", startedAt: monotonicNanos())
        p.conditions = compiled
        p.optional = y.optional
        p.conditionsJSON = y.conditions
        p.message = y.message
        p.deadline = WireNumbers.adding(epochMillis(), Int64(timeout))
        p.timer = loop.schedule(afterMillis: timeout) { [self] in self.assumeIsolated { $0.yieldTimedOut(yid) } }
        pending = p
        persistState()
        let clientConditions = compiled.compactMap(\.clientJSON)
        emit(to: .client, type: "server.set_interactive", id: yid, durableFirst: true) { w in
            ServerSetInteractive.writeFields(&w, interactive: true, yieldId: yid, message: y.message, conditions: clientConditions)
        }
        // A url condition may already hold: check the current URL at once.
        if let nav = lastNavigation, let url = currentURL {
            for c in compiled where c.type == "url" {
                if let r = c.regex, r.matches(url) { resolveYield(p, conditionIndex: c.index, event: nav, body: nil); return }
            }
        }
    }

    func yieldTimedOut(_ yid: String) {
        guard let p = pending, p.id == yid else { return }
        if p.optional {
            p.timer?.cancel()
            pending = nil
            persistState()
            sendYieldResult(p, result: .object(["matched": .bool(false)]))
            setInteractiveOff(yid)
        } else {
            finishPending(p, errorCode: ResultErrorCode.timeout, message: "the user did not finish in time", cancelClient: false)
        }
    }

    private func resolveYield(_ p: Pending, conditionIndex: Int, event: StoredEvent, body: String?) {
        p.timer?.cancel()
        pending = nil
        persistState()
        var result: JSONObject = ["matched": .bool(true), "conditionIndex": .int(conditionIndex), "event": event.json]
        if let body { result["body"] = .string(body) }
        sendYieldResult(p, result: .object(result))
        setInteractiveOff(p.id)
    }

    private func sendYieldResult(_ p: Pending, result: JSON) {
        let durationMs = Int((monotonicNanos() &- p.startedAt) / 1_000_000)
        metrics.observeYield(seconds: durationMs / 1000)
        emit(to: .worker, type: "server.command_result", id: p.id, sensitive: true) { w in
            ServerCommandResult.writeFields(&w, id: p.id, command: "yield_to_user", result: result, durationMs: durationMs)
        }
    }

    func setInteractiveOff(_ yid: String) {
        emit(to: .client, type: "server.set_interactive", id: yid) { w in
            ServerSetInteractive.writeFields(&w, interactive: false, yieldId: yid)
        }
    }

    /// Checks a new event against the pending yield's conditions (first match wins).
    private func evaluateYield(_ e: StoredEvent) {
        guard let p = pending, p.kind == .yield else { return }
        for c in p.conditions {
            switch c.type {
            case "url":
                guard e.type == "navigation", e.payload["isMainFrame"]?.boolValue != false,
                      let url = e.payload["url"]?.stringValue, let r = c.regex, r.matches(url) else { continue }
                resolveYield(p, conditionIndex: c.index, event: e, body: nil)
                return
            case "networkRequest":
                guard e.type == "net.response", let url = e.payload["url"]?.stringValue else { continue }
                if let r = c.regex, !r.matches(url) { continue }
                if let s = c.urlContains, !url.contains(s) { continue }
                if let m = c.method, (e.payload["method"]?.stringValue ?? "").uppercased() != m { continue }
                if c.successfulOnly { guard let st = e.payload["status"]?.intValue, (200...299).contains(st) else { continue } }
                let body = e.payload["body"]?.stringValue
                if let s = c.bodyContains { guard let body, body.contains(s) else { continue } }
                resolveYield(p, conditionIndex: c.index, event: e, body: c.captureBody ? body : nil)
                return
            case "selector":
                guard e.type == "condition.matched", e.payload["yieldId"]?.stringValue == p.id,
                      e.payload["index"]?.intValue == c.index else { continue }
                resolveYield(p, conditionIndex: c.index, event: e, body: nil)
                return
            default:
                continue
            }
        }
    }

    // MARK: Telemetry

    func handleTelemetry(clientSeq: Int?, events incoming: [TelemetryEvent], from peer: Peer) {
        ensureLoaded()
        if let cs = clientSeq {
            // A retransmission of a batch already accepted: drop it, ack it again (after
            // whatever is still being committed, so an ack never precedes the data).
            if cs <= acceptedClientSeq { ackWhenCommitted(cs); return }
        }
        // While the store fails, new batches are refused unacknowledged: the client keeps
        // them and sends them again (nothing is acknowledged that is not stored).
        guard relay.storeHealthy else {
            sendError(peer, .internalError, "the session store is failing; keep the batch and send it again later")
            return
        }
        var ops: [StoreOp] = []
        let filter = (clientConfig["eventFilter"]?["types"]?.arrayValue).map { Set($0.compactMap(\.stringValue)) }
        let now = epochMillis()
        for e in incoming {
            if e.type == "navigation", e.payload?["isMainFrame"]?.boolValue != false, let url = e.payload?["url"]?.stringValue {
                currentURL = url
            }
            // Protocol events are always kept; others only when the filter wants them.
            if let filter, !filter.contains(e.type), e.type != "condition.matched" {
                if e.type == "navigation" { lastNavigation = StoredEvent(eventSeq: 0, type: e.type, ts: e.ts ?? now, serverTs: now, source: e.source ?? "client", payload: e.payload ?? [:]) }
                continue
            }
            // With a store, events are read back from it: memory keeps none.
            let s = settings
            let (stored, dropped) = events.append(e, serverTs: now, keep: store == nil, max: s.eventsMaxPerSession, maxBytes: s.eventsMaxBytesPerSession)
            if dropped { metrics.hit("events_max_bytes_per_session") }
            if store != nil {
                ops.append(.event(session: id, eventSeq: stored.eventSeq, type: stored.type, ts: stored.ts, serverTs: stored.serverTs,
                                  source: stored.source, payload: stored.payload))
                if let through = storedEvents.add(stored.eventSeq, bytes: stored.estimatedSize, maxCount: s.eventsMaxPerSession, maxBytes: s.eventsMaxBytesPerSession) {
                    metrics.hit("events_max_bytes_per_session")
                    ops.append(.trimEvents(session: id, throughSeq: through))
                }
            }
            if stored.type == "navigation" && stored.payload["isMainFrame"]?.boolValue != false { lastNavigation = stored }
            evaluateYield(stored)
            if let sub = workerSubscription, sub.contains(stored.type) {
                emit(to: .worker, type: "server.event", id: nil, sensitive: TrafficLog.carriesBody(stored.payload)) { wr in
                    ServerEvent.writeFields(&wr, event: stored.json)
                }
            }
        }
        // The batch counts as accepted only now: a snapshot persisted while its events were
        // handled (a yield resolved, a reservation) may be committed before them, and must not
        // claim the batch (a client told lastClientSeq ≥ cs after a crash would drop it).
        if let cs = clientSeq {
            acceptedClientSeq = cs
            ops.append(.updateState(id: id, state: stateSnapshot()))
        }
        persist(ops)
        if let cs = clientSeq { ackWhenCommitted(cs) }
    }

    /// Sends `server.ack` once everything submitted so far is committed.
    private func ackWhenCommitted(_ cs: Int) {
        guard let store = store else { lastClientSeq = max(lastClientSeq, cs); sendAck(cs); return }
        store.submit([]) { [self] in self.assumeIsolated { s in
            s.lastClientSeq = max(s.lastClientSeq, cs)
            s.sendAck(cs)
        } }
    }

    func sendAck(_ cs: Int) {
        emit(to: .client, type: "server.ack", id: nil) { w in ServerAck.writeFields(&w, clientSeq: cs) }
    }

    // MARK: REST reads

    func eventsPage(after: Int, limit: Int, types: Set<String>?) -> [UInt8] {
        if let store = store, let rows = try? store.events(session: id, after: after, limit: limit, types: types) {
            let more = rows.count > limit
            let list = Array(rows.prefix(limit))
            return JSONWriter.serialize(.object(["events": .array(list.map(\.json)), "next": more ? .int(list.last!.eventSeq) : .null]))
        }
        let page = events.page(after: after, limit: limit, types: types)
        return JSONWriter.serialize(.object(["events": .array(page.events.map(\.json)), "next": page.next.map { .int($0) } ?? .null]))
    }

    func journalPage(after: Int, limit: Int) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"entries\":[")
        var count = 0
        var next: Int? = nil
        let source: [JournalEntry]
        if let store = store, let rows = try? store.journal(session: id, after: after, limit: limit + 1) {
            source = rows
        } else {
            source = Array(journalLog.entries(from: after + 1))
        }
        for e in source {
            if count == limit { next = e.n - 1; break }
            if count > 0 { w.raw(",") }
            w.raw(JournalLog.restEntry(e))
            count += 1
        }
        w.raw("],\"next\":")
        if let next { w.int(next) } else { w.raw("null") }
        w.raw("}")
        return w.bytes
    }
}
