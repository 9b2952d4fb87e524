import Foundation
import SwitchboardProtocol

/// Settings of a worker connection.
public struct WorkerOptions: Sendable {
    /// Transport, backoff and SDK name.
    public var connection: ConnectionOptions
    /// Event types to receive live (`events`); empty: none.
    public var events: [String]
    /// How long to wait for a result that the server says it has (a resent command answered
    /// `duplicate_command_id`) before reporting it lost.
    public var resultWaitMs: Int

    public init(connection: ConnectionOptions = ConnectionOptions(), events: [String] = [], resultWaitMs: Int = 10_000) {
        self.connection = connection
        self.events = events
        self.resultWaitMs = resultWaitMs
    }
}

/// The worker's connection to a session: one command (or yield) at a time, relayed to the
/// client and answered with its result. Calls made while another is pending wait their turn.
/// Connection drops are reconnected with `lastSeq`; a command is sent again only when the
/// server does not already have it, so it never runs twice. Cancelling the calling `Task`
/// sends `worker.cancel`.
public actor WorkerConnection: LinkDelegate {
    private let link: PeerLink
    private let options: WorkerOptions
    private var inFlight: InFlight?
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var busy = false
    private var counter = 0
    private let idPrefix = "w" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
    private var endWaiters: [CheckedContinuation<ServerSessionEnd, any Error>] = []
    private var pendingFinal: [UInt8]?
    /// The last `server.hello` (phase, connection flags, pending work, metadata).
    public private(set) var hello: ServerHello?
    /// How the session ended, once it has.
    public private(set) var end: ServerSessionEnd?
    private var finished: SwitchboardError?

    /// Live events the worker subscribed to (`WorkerOptions.events`), in order.
    public nonisolated let events: AsyncStream<TelemetryEvent>
    private let eventContinuation: AsyncStream<TelemetryEvent>.Continuation
    /// The connection's state changes.
    public nonisolated var states: AsyncStream<ConnectionState> { link.states }

    private struct InFlight {
        var id: String
        var message: [UInt8]
        var continuation: CheckedContinuation<JSON, any Error>
        var cancelled = false
        var resent = false
    }

    /// Connects the worker role to a session (`websocketURL` as `POST /v1/sessions` returned
    /// it) and returns once the server's hello has arrived.
    public static func connect(websocketURL: String, token: String, options: WorkerOptions = WorkerOptions()) async throws -> WorkerConnection {
        let link = PeerLink(url: roleURL(websocketURL, role: .worker), headers: [("Authorization", "Bearer \(token)")],
                            options: options.connection)
        let (events, continuation) = AsyncStream.makeStream(of: TelemetryEvent.self, bufferingPolicy: .bufferingNewest(10_000))
        let w = WorkerConnection(link: link, options: options, events: events, continuation: continuation)
        let hello = try await link.start(delegate: w)
        await w.setHello(hello)
        return w
    }

    private init(link: PeerLink, options: WorkerOptions, events: AsyncStream<TelemetryEvent>,
                 continuation: AsyncStream<TelemetryEvent>.Continuation) {
        self.link = link
        self.options = options
        self.events = events
        self.eventContinuation = continuation
    }

    private func setHello(_ h: ServerHello) { if hello == nil { hello = h } }

    /// The session's id.
    public var sessionId: String { hello?.sessionId ?? "" }

    // MARK: Commands

    /// Sends any catalog command and returns its raw result. Throws `SwitchboardError.command`
    /// when the client reports an error (or the server a `timeout`), `.server` when the server
    /// refuses it (e.g. `invalid_command` with `details.issues`), `CancellationError` when the
    /// calling task is cancelled.
    public func command(_ name: String, _ params: JSONObject = [:], timeoutMs: Int? = nil) async throws -> JSON {
        try await perform { id in PeerMessageEncoder.encode(WorkerCommand(id: id, command: name, params: params, timeoutMs: timeoutMs)) }
    }

    /// Hands the browser to the user until one of `conditions` holds (any-of), the timeout
    /// passes, or the task is cancelled.
    public func yieldToUser(_ conditions: [YieldCondition], message: String? = nil, optional: Bool = false,
                            timeoutMs: Int? = nil) async throws -> YieldOutcome {
        let result = try await perform { id in
            PeerMessageEncoder.encode(WorkerYieldToUser(id: id, conditions: conditions, optional: optional, timeoutMs: timeoutMs, message: message))
        }
        return try decodeResult(result)
    }

    /// Ends the session as `complete` with `result`; returns the server's `session_end`.
    @discardableResult
    public func complete(result: JSON? = nil) async throws -> ServerSessionEnd {
        try await finish(PeerMessageEncoder.encode(WorkerComplete(result: result)))
    }

    /// Ends the session as `failed` with `error`.
    @discardableResult
    public func fail(error: JSON? = nil) async throws -> ServerSessionEnd {
        try await finish(PeerMessageEncoder.encode(WorkerFail(error: error)))
    }

    /// Closes the connection (the session goes on until its grace period passes).
    public func close() async { await link.stop() }

    private func finish(_ message: [UInt8]) async throws -> ServerSessionEnd {
        if let end { return end }
        if let finished { throw finished }
        return try await withCheckedThrowingContinuation { c in
            endWaiters.append(c)
            pendingFinal = message
            Task { await self.transmitFinal() }
        }
    }

    private func transmitFinal() async {
        if let m = pendingFinal, await link.send(m) { pendingFinal = nil }
    }

    private func nextId() -> String {
        counter += 1
        return "\(idPrefix)-\(counter)"
    }

    /// Runs one pending-slot operation: waits its turn, sends, and waits for the result.
    private func perform(_ message: (String) -> [UInt8]) async throws -> JSON {
        if let end { throw SwitchboardError.sessionEnded(phase: end.phase, reason: end.reason) }
        if let finished { throw finished }
        await acquire()
        defer { release() }
        try Task.checkCancellation()
        let id = nextId()
        let bytes = message(id)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<JSON, any Error>) in
                inFlight = InFlight(id: id, message: bytes, continuation: c)
                Task { await self.transmit(id) }
            }
        } onCancel: {
            Task { await self.cancel(id) }
        }
    }

    private func acquire() async {
        if !busy { busy = true; return }
        await withCheckedContinuation { waiters.append($0) }
    }

    private func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }

    private func transmit(_ id: String) async {
        guard let f = inFlight, f.id == id else { return }
        if f.cancelled { await link.send(PeerMessageEncoder.encode(WorkerCancel(id: id))); return }
        await link.sendOnce(f.message, key: id)
    }

    private func cancel(_ id: String) async {
        guard var f = inFlight, f.id == id, !f.cancelled else { return }
        f.cancelled = true
        inFlight = f
        await link.send(PeerMessageEncoder.encode(WorkerCancel(id: id)))
    }

    private func resolve(_ id: String, _ outcome: Result<JSON, any Error>) {
        guard let f = inFlight, f.id == id else { return }
        inFlight = nil
        if f.cancelled, case .failure = outcome { f.continuation.resume(throwing: CancellationError()); return }
        f.continuation.resume(with: outcome)
    }

    // MARK: LinkDelegate

    func helloMessage(lastSeq: Int?) -> [UInt8] {
        PeerMessageEncoder.encode(WorkerHello(sdk: SDKInfo(name: options.connection.sdkName, version: options.connection.sdkVersion),
                                              lastSeq: lastSeq, events: options.events.isEmpty ? nil : options.events))
    }

    func linkConnected(_ h: ServerHello) async {
        hello = h
        await transmitFinal()
        // Sent on this very connection (just after its hello): nothing to recover.
        guard let f = inFlight, await !link.sentOnThisConnection(f.id), inFlight?.id == f.id else { return }
        if h.pending?.id == f.id {
            // The server has it: its result comes live (or in the replay); a cancel asked for
            // while away goes now.
            if inFlight?.cancelled == true { await link.send(PeerMessageEncoder.encode(WorkerCancel(id: f.id))) }
            return
        }
        if inFlight?.cancelled == true {
            // Cancelled while away and not pending at the server: nothing left to stop.
            resolve(f.id, .failure(CancellationError()))
            return
        }
        // Not pending: never received (send it now) or finished while we were away (the
        // server answers `duplicate_command_id` and the replay carries the result).
        inFlight?.resent = true
        await link.sendOnce(f.message, key: f.id)
    }

    func linkReceived(_ message: ServerMessage) async {
        switch message {
        case .commandResult(let r):
            if let e = r.error {
                resolve(r.id, .failure(SwitchboardError.command(code: e.code, message: e.message)))
            } else {
                resolve(r.id, .success(r.result ?? .null))
            }
        case .error(let e):
            guard let id = e.id, let f = inFlight, f.id == id else { return }
            if e.code == .duplicateCommandId && f.resent {
                // The server had it before the drop: the result is in the replay, or lost.
                let wait = options.resultWaitMs
                Task {
                    try? await Task.sleep(nanoseconds: WireNumbers.sleepNanoseconds(millis: wait))
                    self.resolve(id, .failure(SwitchboardError.resultLost(id: id)))
                }
                return
            }
            if e.code == .unknownCommandId && f.cancelled { return } // the cancel crossed the result
            resolve(id, .failure(SwitchboardError.server(code: e.code, message: e.message, details: e.details)))
        case .event(let e):
            eventContinuation.yield(e.event)
        case .sessionEnd(let s):
            end = s
            for c in endWaiters { c.resume(returning: s) }
            endWaiters.removeAll()
        default:
            break
        }
    }

    func linkReplayed(complete: Bool) async {
        // A result that was not retained cannot come any more.
        if !complete, let f = inFlight, f.resent { resolve(f.id, .failure(SwitchboardError.resultLost(id: f.id))) }
    }

    func linkDisconnected() async {}

    func linkFinished(_ error: SwitchboardError?) async {
        let reason: SwitchboardError = end.map { .sessionEnded(phase: $0.phase, reason: $0.reason) } ?? error ?? .closed(code: 1000, reason: "closed")
        finished = reason
        if let f = inFlight { resolve(f.id, .failure(reason)) }
        for c in endWaiters { c.resume(throwing: reason) }
        endWaiters.removeAll()
        eventContinuation.finish()
    }
}

/// How a yield ended (`server.command_result` of a `worker.yield_to_user`).
public struct YieldOutcome: Codable, Sendable {
    /// False when an optional yield timed out.
    public var matched: Bool
    /// The index of the condition that held, in the array the worker sent.
    public var conditionIndex: Int?
    /// The event that satisfied it.
    public var event: TelemetryEvent?
    /// The response body, for a `networkRequest` condition with `captureBody`.
    public var body: String?
}

func decodeResult<T: Decodable>(_ value: JSON) throws -> T {
    do { return try JSONDecoder().decode(T.self, from: Data(JSONWriter.serialize(value))) } catch {
        throw SwitchboardError.invalidResponse("unexpected result \(JSONWriter.string(value).prefix(200)): \(error)")
    }
}
