import Foundation
import SwitchboardProtocol

/// A command for the client to execute (`server.command`).
public struct ClientCommand: Sendable {
    /// The command id: the key of the response cache.
    public var id: String
    /// The canonical catalog name (`navigate`, `click`, …).
    public var name: String
    /// Canonical params (a legacy shape is already normalised by the server).
    public var params: JSONObject
    /// The server gives up on the command after this long (the executor should too).
    public var timeoutMs: Int
}

/// A command that failed in the browser, with the protocol's client code.
public struct CommandFailure: Error, Sendable, Equatable {
    /// A client code: `element_not_found`, `element_stale`, `navigation_failed`, `evaluation_failed`, `timeout`, `not_supported`, `command_failed`, `internal_error`.
    public var code: String
    /// What went wrong, for the worker.
    public var message: String
    public init(code: String, message: String) { self.code = code; self.message = message }

    /// No element matches the target.
    public static func elementNotFound(_ m: String) -> CommandFailure { .init(code: "element_not_found", message: m) }
    /// The element went away while the command ran.
    public static func elementStale(_ m: String) -> CommandFailure { .init(code: "element_stale", message: m) }
    /// The navigation failed (network error, bad status).
    public static func navigationFailed(_ m: String) -> CommandFailure { .init(code: "navigation_failed", message: m) }
    /// The script threw.
    public static func evaluationFailed(_ m: String) -> CommandFailure { .init(code: "evaluation_failed", message: m) }
    /// The command's own wait ran out.
    public static func timeout(_ m: String) -> CommandFailure { .init(code: "timeout", message: m) }
    /// This client does not do the command.
    public static func notSupported(_ m: String) -> CommandFailure { .init(code: "not_supported", message: m) }
}

/// `server.set_interactive`: show the browser to the user (or hide it again).
public struct InteractiveChange: Sendable {
    /// True: show the browser to the user; false: hide it again.
    public var interactive: Bool
    /// The yield this change belongs to.
    public var yieldId: String
    /// The worker's message for the user.
    public var message: String?
    /// The conditions the client evaluates (`selector`), each with its `index`.
    public var conditions: [YieldCondition]
}

/// What the server's hello tells the client to set up.
public struct ClientConfiguration: Sendable {
    /// An injection script: its name and JavaScript source.
    public struct Script: Sendable { public var name: String; public var source: String }
    /// The session joined.
    public var sessionId: String
    /// Scripts to install in every page (telemetry hooks), from the server's configuration.
    public var injectionScripts: [Script]
    /// `{"types":[…]}`: the event types the server keeps.
    public var eventFilter: JSON?
    /// Snapshot / screenshot capture settings (`docs/protocol.md` §7.4).
    public var capture: JSON?
    /// The worker asked for debug output.
    public var debug: Bool
}

/// What an app implements to execute commands: a webview on iOS / macOS, headless Chromium on
/// Linux. Every method is called from the client's actor; `execute` calls may overlap only
/// with `cancel` of the same command.
public protocol CommandExecutor: Sendable {
    /// Optional features to announce (`selectorConditions`, `uid`).
    var capabilities: [String] { get }
    /// Called once per connection, before any command: install the injection scripts, apply
    /// the filter; report telemetry through `telemetry`.
    func configure(_ configuration: ClientConfiguration, telemetry: TelemetrySink) async
    /// Runs one command and returns its result; throw `CommandFailure` for a failure with a
    /// protocol code (any other error is reported as `command_failed`).
    func execute(_ command: ClientCommand) async throws -> JSON
    /// Shows or hides the browser for the user.
    func setInteractive(_ change: InteractiveChange) async
    /// The server gave up on a command (timeout or the worker's cancel).
    func cancel(commandId: String) async
    /// The session ended; no more commands come.
    func sessionEnded(_ end: ServerSessionEnd) async

    /// With the `cdp` capability (docs/protocol.md section 16): the browser as its DevTools
    /// `/json/version` names it (`Browser`, `User-Agent`, …), sent in the hello.
    var cdpVersion: [String: String]? { get }
    /// A worker opened CDP channel `channel`: connect it to the browser's DevTools endpoint and
    /// pass every frame from the browser to `outlet`, in order.
    func cdpOpen(channel: Int, outlet: CDPOutlet) async
    /// A frame from the worker for `channel`.
    func cdpFrame(channel: Int, data: String) async
    /// The worker's side of `channel` closed, or the connection to the server did.
    func cdpClose(channel: Int) async
}

/// Where a CDP channel's frames from the browser go (to the worker, through the server).
public struct CDPOutlet: Sendable {
    let sendFrame: @Sendable (String) async -> Void
    let closeChannel: @Sendable (String?) async -> Void
    public init(send: @escaping @Sendable (String) async -> Void, close: @escaping @Sendable (String?) async -> Void) {
        sendFrame = send
        closeChannel = close
    }
    /// Sends one frame to the worker (dropped when the server connection is down).
    public func send(_ frame: String) async { await sendFrame(frame) }
    /// The browser's side closed: the server closes the worker's socket with 4011.
    public func close(reason: String?) async { await closeChannel(reason) }
}

extension CommandExecutor {
    /// No optional capabilities by default.
    public var capabilities: [String] { [] }
    /// Does nothing by default.
    public func configure(_ configuration: ClientConfiguration, telemetry: TelemetrySink) async {}
    /// Does nothing by default.
    public func setInteractive(_ change: InteractiveChange) async {}
    /// Does nothing by default (the running `execute` task is cancelled anyway).
    public func cancel(commandId: String) async {}
    /// Does nothing by default.
    public func sessionEnded(_ end: ServerSessionEnd) async {}
    /// None by default (no `cdp` capability).
    public var cdpVersion: [String: String]? { nil }
    /// Refuses by default: the channel closes at once.
    public func cdpOpen(channel: Int, outlet: CDPOutlet) async { await outlet.close(reason: "this client does not relay CDP") }
    public func cdpFrame(channel: Int, data: String) async {}
    public func cdpClose(channel: Int) async {}
}

/// Where an executor (or the app) reports telemetry. Events keep their order; they are sent
/// in batches and kept until the server has stored them.
public struct TelemetrySink: Sendable {
    let input: AsyncStream<TelemetryEvent>.Continuation

    /// Records one event (`navigation`, `net.response`, `console`, …) with `payload`.
    public func record(_ type: String, payload: JSONObject, ts: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) {
        input.yield(TelemetryEvent(type: type, ts: ts, source: "client", payload: payload))
    }

    /// Records an event as it is.
    public func record(_ event: TelemetryEvent) { input.yield(event) }
}

/// Settings of a client connection.
public struct ClientOptions: Sendable {
    /// Transport, backoff and SDK name.
    public var connection: ConnectionOptions
    /// Events per `client.events` batch, and how long an open batch waits for more.
    public var batchSize: Int
    /// How long an open batch waits for more events before it is sent.
    public var batchDelayMs: Int
    /// Responses remembered for re-delivered commands (the protocol asks for at least 16).
    public var responseCacheSize: Int
    /// A file that keeps the client's position (the last `seq` as of its latest command, the response cache, the
    /// commands started and the telemetry numbering) across restarts of the process: a client
    /// started again with it resumes where it was and never runs a command twice (one that was
    /// running when the process died is answered with `command_failed`). Nil: memory only.
    public var stateFile: String?

    public init(connection: ConnectionOptions = ConnectionOptions(), batchSize: Int = 100, batchDelayMs: Int = 50,
                responseCacheSize: Int = ResponseCache.defaultCapacity) {
        self.connection = connection
        self.batchSize = batchSize
        self.batchDelayMs = batchDelayMs
        self.responseCacheSize = responseCacheSize
    }
}

/// The client role: receives commands and runs them through a `CommandExecutor`, answers
/// re-delivered commands from its response cache, follows `set_interactive`, and streams the
/// executor's telemetry with `clientSeq`, re-sending unacknowledged batches after a reconnect.
public actor ClientConnection: LinkDelegate {
    private let link: PeerLink
    private let executor: any CommandExecutor
    private let options: ClientOptions
    private var cache: ResponseCache
    private var running: [String: Task<Void, Never>] = [:]
    private var telemetry: TelemetryBuffer
    private var numbered = false
    /// Batches through this `clientSeq` went out on the current connection.
    private var sentThrough = 0
    /// The current connection has resent what the server lacked: new batches may follow.
    private var batchesReady = false
    private var flushScheduled = false
    private var configured = false
    private let sink: TelemetrySink
    private var endWaiters: [CheckedContinuation<ServerSessionEnd?, Never>] = []
    /// How the session ended, once it has.
    public private(set) var end: ServerSessionEnd?
    private var done = false
    /// The last `server.hello`.
    public private(set) var hello: ServerHello?
    /// Commands executed (not counting answers from the cache).
    public private(set) var executedCount = 0

    /// The connection's state changes.
    public nonisolated var states: AsyncStream<ConnectionState> { link.states }
    /// Where the app records telemetry.
    public nonisolated var telemetrySink: TelemetrySink { sink }

    /// Connects the client role (`websocketURL` and the client token from session creation)
    /// and returns once the server's hello has arrived.
    public static func connect(websocketURL: String, token: String, executor: any CommandExecutor,
                               options: ClientOptions = ClientOptions()) async throws -> ClientConnection {
        let saved = options.stateFile.flatMap(ClientStateFile.load)
        let link = PeerLink(url: roleURL(websocketURL, role: .client), headers: [("Authorization", "Bearer \(token)")],
                            options: options.connection, lastSeq: saved?.lastSeq)
        let (stream, input) = AsyncStream.makeStream(of: TelemetryEvent.self)
        let c = ClientConnection(link: link, executor: executor, options: options, sink: TelemetrySink(input: input), saved: saved)
        await c.consume(stream)
        _ = try await link.start(delegate: c)
        return c
    }

    private init(link: PeerLink, executor: any CommandExecutor, options: ClientOptions, sink: TelemetrySink, saved: ClientStateFile?) {
        self.link = link
        self.executor = executor
        self.options = options
        self.sink = sink
        cache = ResponseCache(capacity: options.responseCacheSize)
        telemetry = TelemetryBuffer(maxBatch: options.batchSize)
        if let saved {
            for r in saved.responses { cache.store(r.id, Array(r.response.utf8)) }
            interrupted = Set(saved.started)
            telemetry.resume(lastClientSeq: saved.nextClientSeq - 1)
        }
    }

    /// Commands that were running when an earlier process with the same state file died.
    private var interrupted: Set<String> = []
    /// CDP channels the executor holds open.
    private var cdpChannels: Set<Int> = []

    private func sendCDP(_ channel: Int, _ data: String) async {
        guard cdpChannels.contains(channel) else { return }
        _ = await link.send(ClientCDP.message(channel: channel, data: data))
    }

    private func closeCDP(_ channel: Int, reason: String?) async {
        guard cdpChannels.remove(channel) != nil else { return }
        _ = await link.send(PeerMessageEncoder.encode(ClientCDPClose(channel: channel, reason: reason)))
    }

    /// Writes the state file (when configured).
    private func save() async {
        guard let path = options.stateFile else { return }
        let state = ClientStateFile(lastSeq: await link.lastSeq, responses: cache.entries.map { .init(id: $0.id, response: String(decoding: $0.response, as: UTF8.self)) },
                                    started: Array(running.keys) + Array(interrupted), nextClientSeq: telemetry.nextClientSeq)
        state.write(to: path)
    }

    private func consume(_ stream: AsyncStream<TelemetryEvent>) {
        Task { for await e in stream { self.add(e) } }
    }

    /// Waits until the session ends (nil when the connection stopped for another reason).
    public func waitForEnd() async -> ServerSessionEnd? {
        if done { return end }
        return await withCheckedContinuation { endWaiters.append($0) }
    }

    /// Sends any open telemetry batch now.
    public func flush() async {
        guard numbered, telemetry.seal() != nil else { return }
        await sendBatches()
    }

    /// Sends, in `clientSeq` order, every sealed batch this connection has not carried yet.
    /// Order matters: the server takes a `clientSeq` at or below the last one it stored for a
    /// retransmission, so a batch overtaken by a later one would be dropped.
    private func sendBatches() async {
        guard batchesReady else { return }
        while let next = telemetry.unacked.first(where: { $0.clientSeq > sentThrough }) {
            sentThrough = next.clientSeq
            guard await link.send(PeerMessageEncoder.encode(ClientEvents(clientSeq: next.clientSeq, events: next.events))) else {
                return
            }
        }
    }

    /// Batches not yet acknowledged by the server (sent or not).
    public var unacknowledgedBatches: Int { telemetry.unacked.count }

    /// Closes the connection (the session goes on until its grace period passes).
    public func close() async { await link.stop() }

    // MARK: Telemetry

    private func add(_ event: TelemetryEvent) {
        if telemetry.add(event) {
            Task { await self.flush() }
        } else if !flushScheduled {
            flushScheduled = true
            let delay = WireNumbers.sleepNanoseconds(millis: options.batchDelayMs)
            Task {
                try? await Task.sleep(nanoseconds: delay)
                await self.scheduledFlush()
            }
        }
    }

    private func scheduledFlush() async {
        flushScheduled = false
        await flush()
    }

    // MARK: Commands

    private func received(_ c: ServerCommand) async {
        if let cached = cache[c.id] {
            await link.sendOnce(cached, key: "response:" + c.id)
            return
        }
        guard running[c.id] == nil else { return }
        if interrupted.contains(c.id) {
            await answerInterrupted(c.id)
            return
        }
        let command = ClientCommand(id: c.id, name: c.command, params: c.params, timeoutMs: c.timeoutMs)
        let executor = self.executor
        running[c.id] = Task {
            let response: ClientCommandResponse
            do {
                response = ClientCommandResponse(id: command.id, result: try await executor.execute(command))
            } catch let f as CommandFailure {
                response = ClientCommandResponse(id: command.id, error: CommandError(code: f.code, message: f.message))
            } catch is CancellationError {
                await self.finished(command.id, nil)
                return
            } catch {
                response = ClientCommandResponse(id: command.id, error: CommandError(code: "command_failed", message: "\(error)"))
            }
            await self.finished(command.id, PeerMessageEncoder.encode(response))
        }
        await save()
    }

    /// A command that was running when the previous process died: whether it finished is
    /// unknown, and running it again could do it twice, so it is answered `command_failed`.
    private func answerInterrupted(_ id: String) async {
        interrupted.remove(id)
        let response = PeerMessageEncoder.encode(ClientCommandResponse(id: id, error: CommandError(
            code: ResultErrorCode.commandFailed, message: "the client restarted while running this command; it was not run again")))
        cache.store(id, response)
        await save()
        await link.sendOnce(response, key: "response:" + id)
    }

    private func finished(_ id: String, _ response: [UInt8]?) async {
        running[id] = nil
        guard let response else { return }
        executedCount += 1
        cache.store(id, response)
        await save()
        // Sent now if connected; otherwise the cache answers once the server asks again.
        await link.sendOnce(response, key: "response:" + id)
    }

    // MARK: LinkDelegate

    func helloMessage(lastSeq: Int?) -> [UInt8] {
        PeerMessageEncoder.encode(ClientHello(sdk: SDKInfo(name: options.connection.sdkName, version: options.connection.sdkVersion),
                                              lastSeq: lastSeq, capabilities: executor.capabilities, cdpVersion: executor.cdpVersion))
    }

    func linkConnected(_ h: ServerHello) async {
        hello = h
        if !configured {
            configured = true
            let scripts = (h.injectionScripts ?? []).compactMap { s -> ClientConfiguration.Script? in
                guard let name = s["name"]?.stringValue, let source = s["source"]?.stringValue else { return nil }
                return .init(name: name, source: source)
            }
            await executor.configure(ClientConfiguration(sessionId: h.sessionId, injectionScripts: scripts, eventFilter: h.eventFilter,
                                                         capture: h.capture, debug: h.debug ?? false), telemetry: sink)
        }
        // The server names the batches it stored: resend the rest, number on after them.
        numbered = true
        telemetry.resume(lastClientSeq: h.lastClientSeq)
        sentThrough = h.lastClientSeq ?? 0
        batchesReady = true
        await sendBatches()
        // A command the server still waits on: answered from the cache when it ran (the answer
        // was lost with the connection), refused when an earlier process died running it.
        if let p = h.pending, p.kind == "command" {
            if let cached = cache[p.id] {
                await link.sendOnce(cached, key: "response:" + p.id)
            } else if interrupted.contains(p.id) {
                await answerInterrupted(p.id)
            }
        }
        if h.interactive, let y = h.yieldId {
            await executor.setInteractive(InteractiveChange(interactive: true, yieldId: y, message: nil, conditions: []))
        }
    }

    func linkReceived(_ message: ServerMessage) async {
        switch message {
        case .command(let c): await received(c)
        case .cancel(let c):
            running[c.id]?.cancel()
            running[c.id] = nil
            await executor.cancel(commandId: c.id)
        case .setInteractive(let s):
            let conditions = (s.conditions ?? [])
            await executor.setInteractive(InteractiveChange(interactive: s.interactive, yieldId: s.yieldId, message: s.message,
                                                            conditions: conditions))
        case .ack(let a): telemetry.ack(a.clientSeq)
        case .sessionEnd(let e):
            end = e
            for t in running.values { t.cancel() }
            running.removeAll()
            await executor.sessionEnded(e)
        case .cdpOpen(let o):
            cdpChannels.insert(o.channel)
            let channel = o.channel
            await executor.cdpOpen(channel: channel, outlet: CDPOutlet(send: { [weak self] data in await self?.sendCDP(channel, data) },
                                                                      close: { [weak self] reason in await self?.closeCDP(channel, reason: reason) }))
        case .cdp(let f):
            if cdpChannels.contains(f.channel) { await executor.cdpFrame(channel: f.channel, data: f.data) }
        case .cdpClose(let c):
            if cdpChannels.remove(c.channel) != nil { await executor.cdpClose(channel: c.channel) }
        default: break
        }
    }

    func linkReplayed(complete: Bool) async {}
    func linkDisconnected() async {
        batchesReady = false
        // The server closed the worker's side of every channel with 4010.
        let open = cdpChannels
        cdpChannels.removeAll()
        for c in open.sorted() { await executor.cdpClose(channel: c) }
    }

    func linkFinished(_ error: SwitchboardError?) async {
        done = true
        for c in endWaiters { c.resume(returning: end) }
        endWaiters.removeAll()
    }
}

/// What `ClientOptions.stateFile` holds.
struct ClientStateFile: Codable {
    struct Response: Codable { var id: String; var response: String }
    var lastSeq: Int?
    var responses: [Response]
    var started: [String]
    var nextClientSeq: Int

    static func load(_ path: String) -> ClientStateFile? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(ClientStateFile.self, from: data)
    }

    /// Written to a temporary file and renamed over the old one (never half written).
    func write(to path: String) {
        guard let data = try? JSONEncoder().encode(self) else { return }
        let tmp = path + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: data) else { return }
        _ = rename(tmp, path)
    }
}
