import Foundation
import SwitchboardProtocol
import WebSocketClient

/// A Chrome DevTools Protocol client over one WebSocket (the browser endpoint): commands with
/// an `id`, `method`, `params` and, for a page, the flat-mode `sessionId`; answers matched by
/// `id`; events fanned out to every subscriber in order.
public actor CDPConnection {
    /// A CDP event (`Page.lifecycleEvent`, `Network.responseReceived`, …).
    public struct Event: Sendable {
        public var method: String
        public var params: JSONObject
        /// The target session it belongs to (nil: the browser's own).
        public var sessionId: String?
    }

    /// A command the browser refused or that did not answer in time.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        /// CDP's error code (-32000 …), 0 for a timeout or a closed connection.
        public var code: Int
        public var message: String
        public var description: String { "CDP error \(code): \(message)" }
    }

    private let socket: WebSocket
    private var nextId = 0
    private var waiting: [Int: (continuation: CheckedContinuation<JSONObject, any Error>, timer: Task<Void, Never>)] = [:]
    private var subscribers: [UUID: AsyncStream<Event>.Continuation] = [:]
    private var closed: Failure?

    /// Connects to a DevTools WebSocket URL (`ws://127.0.0.1:PORT/devtools/browser/…`).
    public static func connect(to url: String) async throws -> CDPConnection {
        let ws = try await WebSocket.connect(to: url, options: .devTools)
        let c = CDPConnection(socket: ws)
        await c.startReading()
        return c
    }

    private init(socket: WebSocket) { self.socket = socket }

    private func startReading() {
        let events = socket.events
        Task {
            for await e in events {
                switch e {
                case .text(let bytes): self.received(bytes)
                case .binary: break
                case .closed(let code, let reason): self.ended(Failure(code: 0, message: "the browser connection closed (\(code) \(reason))"))
                }
            }
        }
    }

    /// Sends a command and returns its `result`. Throws `Failure` for a CDP error, a timeout
    /// or a closed connection.
    @discardableResult
    public func send(_ method: String, _ params: JSONObject = [:], sessionId: String? = nil, timeoutMs: Int = 30_000) async throws -> JSONObject {
        if let closed { throw closed }
        nextId += 1
        let id = nextId
        var message: JSONObject = ["id": .int(id), "method": .string(method), "params": .object(params)]
        if let sessionId { message["sessionId"] = .string(sessionId) }
        let bytes = JSONWriter.serialize(.object(message))
        return try await withCheckedThrowingContinuation { c in
            // The timer is cancelled by the answer, so commands leave no sleeping tasks behind.
            let timer = Task {
                guard (try? await Task.sleep(nanoseconds: WireNumbers.sleepNanoseconds(millis: timeoutMs))) != nil else { return }
                self.fail(id, Failure(code: 0, message: "\(method) did not answer within \(timeoutMs) ms"))
            }
            waiting[id] = (c, timer)
            socket.send(text: bytes)
        }
    }

    /// A stream of every event from now on (until the connection closes or the stream is dropped).
    public func subscribe() -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self)
        let key = UUID()
        subscribers[key] = continuation
        continuation.onTermination = { _ in Task { await self.unsubscribe(key) } }
        if closed != nil { continuation.finish() }
        return stream
    }

    /// Closes the connection (pending commands fail).
    public func close() {
        socket.close()
        ended(Failure(code: 0, message: "closed"))
    }

    private func unsubscribe(_ key: UUID) { subscribers[key] = nil }

    private func fail(_ id: Int, _ failure: Failure) {
        waiting.removeValue(forKey: id)?.continuation.resume(throwing: failure)
    }

    private func ended(_ failure: Failure) {
        guard closed == nil else { return }
        closed = failure
        for w in waiting.values { w.timer.cancel(); w.continuation.resume(throwing: failure) }
        waiting.removeAll()
        for s in subscribers.values { s.finish() }
        subscribers.removeAll()
    }

    private func received(_ bytes: [UInt8]) {
        guard let message = (try? JSONParser.parse(bytes))?.objectValue else { return }
        if let id = message["id"]?.intValue {
            guard let (c, timer) = waiting.removeValue(forKey: id) else { return }
            timer.cancel()
            if let e = message["error"]?.objectValue {
                c.resume(throwing: Failure(code: e["code"]?.intValue ?? -1, message: e["message"]?.stringValue ?? "error"))
            } else {
                c.resume(returning: message["result"]?.objectValue ?? [:])
            }
            return
        }
        guard let method = message["method"]?.stringValue else { return }
        let event = Event(method: method, params: message["params"]?.objectValue ?? [:], sessionId: message["sessionId"]?.stringValue)
        for s in subscribers.values { s.yield(event) }
    }
}

extension WebSocket.Options {
    /// For a local browser's DevTools endpoint: no compression, messages up to 512 MiB
    /// (full-page screenshots), no keep-alive.
    public static var devTools: WebSocket.Options {
        var o = WebSocket.Options()
        o.compression = false
        o.maxMessageSize = 512 << 20
        o.pingIntervalMs = 3_600_000
        o.idleTimeoutMs = Int(Int32.max)
        return o
    }
}
