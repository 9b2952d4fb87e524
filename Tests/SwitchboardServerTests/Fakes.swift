// Fakes for driving a session without sockets: a connection that records and checks what a
// peer is sent, a store on the loop whose commits the test decides (a restart loses what was
// not committed), and a selector that never reports anything. Used by the unit tests and by
// the session fuzzer (scripts/fuzz.sh compiles this file into it).
@testable import SocketServer
@testable import SwitchboardProtocol
@testable import SwitchboardServer
import WebSocketCore

final class NullSelector: Selector, @unchecked Sendable {
    /// Called when another thread queues work for the loop (a test waits on it instead of polling).
    let onWakeup: (@Sendable () -> Void)?
    init(onWakeup: (@Sendable () -> Void)? = nil) { self.onWakeup = onWakeup }
    func register(fd: Int32, interest: Interest) throws(SystemError) {}
    func reregister(fd: Int32, interest: Interest) throws(SystemError) {}
    func deregister(fd: Int32) {}
    func wait(timeoutMs: Int32, into events: inout [ReadinessEvent]) throws(SystemError) {}
    func wakeup() { onWakeup?() }
    func close() {}
}

/// What every peer of one role has been sent, across connections and restarts.
final class Ledger: @unchecked Sendable {
    var bySeq: [Int: JSON] = [:]
}

/// Records what a peer is sent and checks it: every message is a JSON object with a type, seqs
/// on a connection only increase, and no seq is used for two different messages (`Ledger`
/// spans connections and restarts).
final class FakeConnection: PeerConnection, @unchecked Sendable {
    let remoteAddress = "127.0.0.1:9"
    let role: Role
    let ledger: Ledger?
    var closed: CloseCode?
    var lastSeq = 0
    /// Every message sent, in order.
    var received: [JSON] = []
    var maxMessage = Int.max
    /// A CDP socket: sent JSON objects without the protocol's envelope.
    var cdp = false

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
        received.append(v)
        if cdp { return }
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
    var eventsBy: [String: [StoredEvent]] = [:]
    var journalBy: [String: [(entry: JournalEntry, message: StreamPosition?, journaled: Bool)]] = [:]
    var ids: [String: Set<String>] = [:]

    init(loop: EventLoop) { self.loop = loop }

    func submit(_ op: StoreOp) { submit([op], completion: nil) }
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

    func commitNow(_ ops: [StoreOp]) throws { for op in ops { apply(op) } }

    private func apply(_ op: StoreOp) {
        switch op {
        case .insertSession(let r): if sessions[r.id] == nil { order.append(r.id) }; sessions[r.id] = r
        case .updateLifecycle(let id, let phase, let reason, let result, let error):
            sessions[id]?.phase = phase; sessions[id]?.reason = reason; sessions[id]?.result = result; sessions[id]?.error = error
        case .updateState(let id, let state): sessions[id]?.state = (try? JSONParser.parse(state))?.objectValue ?? [:]
        case .trimMessages(let s, let stream, let through):
            removeJournalRows(s) { !$0.journaled && $0.message.map { $0.stream == stream && $0.seq <= through } ?? false }
        case .event(let s, let n, let type, let ts, let serverTs, let source, let payload):
            if !(eventsBy[s]?.contains { $0.eventSeq == n } ?? false) {
                eventsBy[s, default: []].append(StoredEvent(eventSeq: n, type: type, ts: ts, serverTs: serverTs, source: source, payload: payload))
            }
        case .trimEvents(let s, let through): eventsBy[s]?.removeAll { $0.eventSeq <= through }
        case .journal(let e):
            precondition(!(journalBy[e.session]?.contains { $0.entry.n == e.n } ?? false), "journal entry \(e.n) written twice")
            journalBy[e.session, default: []].append((JournalEntry(n: e.n, direction: e.direction, ts: e.ts, bytes: ArraySlice(Array(e.body))), e.message, e.journaled))
        case .trimJournal(let s, let through, let keep):
            removeJournalRows(s) { r in
                r.entry.n <= through && r.message.map { $0.seq < ($0.stream == 0 ? keep.worker : keep.client) } ?? true
            }
            for i in journalBy[s]?.indices ?? 0..<0 where journalBy[s]![i].entry.n <= through { journalBy[s]![i].journaled = false }
        case .usedId(let s, let id): ids[s, default: []].insert(id)
        case .delete(let s): sessions[s] = nil; order.removeAll { $0 == s }
        case .release: break
        }
    }

    /// Removes journal rows; the command ids they carried stay used (as the SQLite store does).
    private func removeJournalRows(_ s: String, where gone: ((entry: JournalEntry, message: StreamPosition?, journaled: Bool)) -> Bool) {
        for r in journalBy[s] ?? [] where gone(r) { if let cid = r.message?.commandId { ids[s, default: []].insert(cid) } }
        journalBy[s]?.removeAll(where: gone)
    }

    func loadSessions() throws -> [SessionRecord] { order.compactMap { sessions[$0] } }
    func messages(session: String, limit: Int) throws -> [(stream: Int, seq: Int, body: [UInt8], commandId: String?)] {
        let rows = (journalBy[session] ?? []).compactMap { r in r.message.map { (stream: $0.stream, seq: $0.seq, body: Array(r.entry.bytes), commandId: $0.commandId) } }
        return [0, 1].flatMap { s in rows.filter { $0.stream == s }.sorted { $0.seq < $1.seq }.suffix(limit) }
    }
    func events(session: String, after: Int, limit: Int, types: Set<String>?) throws -> [StoredEvent] {
        Array((eventsBy[session] ?? []).filter { $0.eventSeq > after && (types?.contains($0.type) ?? true) }.prefix(limit + 1))
    }
    func lastEvent(session: String, type: String) throws -> StoredEvent? { eventsBy[session]?.last { $0.type == type } }
    func eventCount(session: String) throws -> Int { eventsBy[session]?.last?.eventSeq ?? 0 }
    func journal(session: String, after: Int, limit: Int) throws -> [JournalEntry] {
        Array((journalBy[session] ?? []).filter { $0.journaled && $0.entry.n > after }.map(\.entry).prefix(limit))
    }
    func usedIds(session: String) throws -> Set<String> {
        (ids[session] ?? []).union((journalBy[session] ?? []).compactMap { $0.message?.commandId })
    }
    func lastJournalEntry(session: String) throws -> Int { journalBy[session]?.last?.entry.n ?? 0 }
    func purgeTerminal(endedBefore: Int64) throws -> [String] { [] }
    var commitStats: CommitStats { CommitStats() }
    var isHealthy: Bool { healthy }
    var failedCommits: Int { 0 }
    func close() {}
}

