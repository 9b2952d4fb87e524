import Foundation
import SwitchboardProtocol

/// The state of a worker's or client's connection, as an `AsyncSequence` on each role.
public enum ConnectionState: Sendable, Equatable {
    /// Connecting (attempt 1 is the first; later ones follow a lost connection).
    case connecting(attempt: Int)
    /// The server's hello arrived: messages flow.
    case connected
    /// The connection was lost; the next attempt starts after `retryInMs`.
    case disconnected(code: UInt16, reason: String, retryInMs: Int)
    /// For good: the session ended, or the server closed with a code after which reconnecting
    /// cannot help (docs/protocol.md section 10). Always the last state.
    case closed(code: UInt16, reason: String)
}

/// Settings of a role's connection.
public struct ConnectionOptions: Sendable {
    /// TLS trust, timeouts and compression.
    public var transport: TransportOptions
    /// Delays between reconnection attempts.
    public var backoff: Backoff
    /// Names the SDK in the hello (`sdk`).
    public var sdkName: String
    /// The SDK version sent in the hello.
    public var sdkVersion: String

    public init(transport: TransportOptions = TransportOptions(), backoff: Backoff = Backoff(),
                sdkName: String = "switchboard-swift", sdkVersion: String = SwitchboardSDK.version) {
        self.transport = transport
        self.backoff = backoff
        self.sdkName = sdkName
        self.sdkVersion = sdkVersion
    }
}

/// Facts about this SDK.
public enum SwitchboardSDK {
    /// The SDK's version, sent in hellos.
    public static let version = "0.4.0"
}

/// What a role does with its connection. Calls arrive in message order.
protocol LinkDelegate: Actor {
    func helloMessage(lastSeq: Int?) -> [UInt8]
    func linkConnected(_ hello: ServerHello) async
    func linkReceived(_ message: ServerMessage) async
    func linkReplayed(complete: Bool) async
    func linkDisconnected() async
    func linkFinished(_ error: SwitchboardError?) async
}

/// One role's connection to its session, kept up across drops: connect, hello with `lastSeq`,
/// replay unwrapped and de-duplicated by `seq`, reconnection with jittered backoff, and no
/// reconnection after a terminal close.
actor PeerLink {
    let url: String
    let headers: [(String, String)]
    let options: ConnectionOptions
    weak var delegate: (any LinkDelegate)?

    private var socket: (any MessageSocket)?
    /// Keys of the messages `sendOnce` put on the current connection.
    private var sentKeys: Set<String> = []
    private var helloDone = false
    private var seqs = SeqTracker()
    private var sessionEnded = false
    private var stopped = false
    private var firstHello: CheckedContinuation<ServerHello, any Error>?
    private var task: Task<Void, Never>?
    nonisolated let states: AsyncStream<ConnectionState>
    private let stateContinuation: AsyncStream<ConnectionState>.Continuation

    init(url: String, headers: [(String, String)], options: ConnectionOptions, lastSeq: Int? = nil) {
        seqs = SeqTracker(lastSeq: lastSeq)
        self.url = url
        self.headers = headers
        self.options = options
        (states, stateContinuation) = AsyncStream.makeStream(of: ConnectionState.self, bufferingPolicy: .bufferingNewest(64))
    }

    /// The highest server `seq` processed.
    var lastSeq: Int? { seqs.lastSeq }

    /// Connects and returns the first `server.hello`. Throws when the first attempt fails
    /// (unreachable server, refused token, unknown session); later drops are reconnected.
    func start(delegate: any LinkDelegate) async throws -> ServerHello {
        self.delegate = delegate
        return try await withCheckedThrowingContinuation { c in
            firstHello = c
            task = Task { await self.run() }
        }
    }

    /// Sends a message now; false when not connected (the caller keeps it for later).
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        guard helloDone, let socket else { return false }
        socket.send(bytes)
        return true
    }

    /// Sends a message unless one with the same `key` already went out on this connection;
    /// false when not connected.
    @discardableResult
    func sendOnce(_ bytes: [UInt8], key: String) -> Bool {
        guard helloDone, let socket else { return false }
        if sentKeys.insert(key).inserted { socket.send(bytes) }
        return true
    }

    /// Whether `sendOnce` put `key` on the current connection.
    func sentOnThisConnection(_ key: String) -> Bool { helloDone && sentKeys.contains(key) }

    /// Closes with 1000 and stops reconnecting.
    func stop() {
        stopped = true
        socket?.close(code: 1000)
        if socket == nil { task?.cancel() }
    }

    private func emit(_ s: ConnectionState) { stateContinuation.yield(s) }

    private func run() async {
        var attempt = 0
        var failure: SwitchboardError? = nil
        loop: while !stopped && !Task.isCancelled {
            attempt += 1
            emit(.connecting(attempt: attempt))
            let s: any MessageSocket
            do {
                s = try await Transport.connect(url, headers: headers, options: options.transport)
            } catch let refused as Transport.Refused {
                let error = SwitchboardAPI.httpError(status: refused.status, body: refused.body)
                // Overload and draining pass; a wrong token or an unknown session does not.
                guard refused.status == 429 || refused.status >= 500, firstHello == nil else { failure = error; break loop }
                if await wait(attempt: attempt, code: 1006, reason: error.description) { continue } else { break loop }
            } catch {
                let e = error as? SwitchboardError ?? .transport("\(error)")
                if firstHello != nil { failure = e; break loop }
                if await wait(attempt: attempt, code: 1006, reason: e.description) { continue } else { break loop }
            }
            socket = s
            sentKeys = []
            if stopped { s.close(code: 1000) }
            if let hello = await delegate?.helloMessage(lastSeq: seqs.lastSeq) { s.send(hello) }
            var code: UInt16 = 1006
            var reason = "the connection broke"
            for await event in s.incoming {
                switch event {
                case .text(let bytes):
                    if await handle(bytes) { attempt = 0 }
                case .closed(let c, let r):
                    code = c
                    reason = r
                }
            }
            socket = nil
            let wasConnected = helloDone
            helloDone = false
            if wasConnected { await delegate?.linkDisconnected() }
            if sessionEnded || stopped { break loop }
            if CloseDecision.after(code: code) == .stop || firstHello != nil {
                failure = .closed(code: code, reason: reason)
                break loop
            }
            if await wait(attempt: attempt, code: code, reason: reason) { continue } else { break loop }
        }
        if let c = firstHello {
            firstHello = nil
            c.resume(throwing: failure ?? .closed(code: 1000, reason: "stopped"))
        }
        switch (sessionEnded, failure) {
        case (true, _): emit(.closed(code: 1000, reason: "session ended"))
        case (false, .closed(let code, let reason)?): emit(.closed(code: code, reason: reason))
        case (false, let f?): emit(.closed(code: 1006, reason: f.description))
        case (false, nil): emit(.closed(code: 1000, reason: "closed by this peer"))
        }
        stateContinuation.finish()
        await delegate?.linkFinished(sessionEnded ? nil : failure)
    }

    /// Sleeps for the backoff of `attempt`; false when stopped meanwhile.
    private func wait(attempt: Int, code: UInt16, reason: String) async -> Bool {
        let delay = options.backoff.delayMs(attempt: attempt, random: Double.random(in: 0...1))
        emit(.disconnected(code: code, reason: reason, retryInMs: delay))
        try? await Task.sleep(nanoseconds: WireNumbers.sleepNanoseconds(millis: delay))
        return !stopped && !Task.isCancelled
    }

    /// Handles one received message; true when it was the server's hello.
    private func handle(_ bytes: [UInt8]) async -> Bool {
        guard let message = try? ServerMessage.decode(bytes) else { return false }
        switch message {
        case .hello(let hello):
            helloDone = true
            emit(.connected)
            if let c = firstHello { firstHello = nil; c.resume(returning: hello) }
            await delegate?.linkConnected(hello)
            return true
        case .replay(let replay):
            for value in replay.messages {
                if let m = try? ServerMessage.decode(value) { await deliver(m) }
            }
            await delegate?.linkReplayed(complete: replay.complete)
        default:
            await deliver(message)
        }
        return false
    }

    private func deliver(_ message: ServerMessage) async {
        guard seqs.accept(message.seq) else { return }
        if case .sessionEnd = message { sessionEnded = true }
        await delegate?.linkReceived(message)
    }
}
