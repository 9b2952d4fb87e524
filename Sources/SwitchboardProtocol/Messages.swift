/// The Switchboard wire protocol, version 1 (docs/protocol.md). These Codable types are the schema
/// shared by the server, SDKs, tools and tests.

public enum ProtocolVersion {
    public static let current = 1
    public static let min = 1
    public static let max = 1
}

public enum Role: String, Codable, Sendable, CaseIterable {
    case worker, client, debug
}

public enum Phase: String, Codable, Sendable, CaseIterable {
    case created, pending, active, complete, failed, expired
    public var isTerminal: Bool { self == .complete || self == .failed || self == .expired }
}

/// `server.error` codes (docs/protocol.md section 10).
public enum ErrorCode: String, Codable, Sendable, CaseIterable {
    case helloRequired = "hello_required"
    case unsupportedProtocolVersion = "unsupported_protocol_version"
    case unknownMessageType = "unknown_message_type"
    case invalidMessage = "invalid_message"
    case invalidCommand = "invalid_command"
    case commandPending = "command_pending"
    case duplicateCommandId = "duplicate_command_id"
    case unknownCommandId = "unknown_command_id"
    case invalidPhase = "invalid_phase"
    case sessionTerminal = "session_terminal"
    case readOnly = "read_only"
    case rateLimited = "rate_limited"
    case internalError = "internal_error"
}

/// Codes of errors inside command results.
public enum ResultErrorCode {
    public static let timeout = "timeout"
    public static let cancelled = "cancelled"
    public static let sessionTerminal = "session_terminal"
    public static let commandFailed = "command_failed"
}

/// Why a session reached its phase.
public enum EndReason: String, Codable, Sendable, CaseIterable {
    case workerCompleted = "worker_completed"
    case workerFailed = "worker_failed"
    case cancelled
    case internalError = "internal_error"
    case connectTimeout = "connect_timeout"
    case sessionTimeout = "session_timeout"
    case disconnectGrace = "disconnect_grace"
}

public struct SDKInfo: Codable, Sendable, Equatable {
    public var name: String?
    public var version: String?
    public init(name: String? = nil, version: String? = nil) { self.name = name; self.version = version }
}

public struct ValidationIssue: Codable, Sendable, Equatable {
    public var path: String
    public var message: String
    public init(path: String, message: String) { self.path = path; self.message = message }
}

public struct CommandError: Codable, Sendable, Equatable {
    public var code: String
    public var message: String?
    public init(code: String, message: String? = nil) { self.code = code; self.message = message }
}

// MARK: Peer → server

public struct WorkerHello: Codable, Sendable {
    public var type = "worker.hello"
    public var protocolVersion: Int?
    public var sdk: SDKInfo?
    public var lastSeq: Int?
    /// Event types to receive live as `server.event`.
    public var events: [String]?
    public init(protocolVersion: Int? = 1, sdk: SDKInfo? = nil, lastSeq: Int? = nil, events: [String]? = nil) {
        self.protocolVersion = protocolVersion; self.sdk = sdk; self.lastSeq = lastSeq; self.events = events
    }
}

public struct ClientHello: Codable, Sendable {
    public var type = "client.hello"
    public var protocolVersion: Int?
    public var sdk: SDKInfo?
    public var lastSeq: Int?
    public var capabilities: [String]?
    /// With the `cdp` capability: the browser as its DevTools `/json/version` names it.
    public var cdpVersion: [String: String]?
    public init(protocolVersion: Int? = 1, sdk: SDKInfo? = nil, lastSeq: Int? = nil, capabilities: [String]? = nil,
                cdpVersion: [String: String]? = nil) {
        self.protocolVersion = protocolVersion; self.sdk = sdk; self.lastSeq = lastSeq; self.capabilities = capabilities
        self.cdpVersion = cdpVersion
    }
}

/// `client.cdp`: one raw Chrome DevTools Protocol frame from the client's browser for the
/// CDP channel `channel` (docs/protocol.md section 16).
public struct ClientCDP: Codable, Sendable {
    public var type = "client.cdp"
    public var channel: Int
    public var data: String
    public init(channel: Int, data: String) { self.channel = channel; self.data = data }
}

/// `client.cdp_close`: the client's side of a CDP channel is gone (its browser connection
/// closed or could not open).
public struct ClientCDPClose: Codable, Sendable {
    public var type = "client.cdp_close"
    public var channel: Int
    public var reason: String?
    public init(channel: Int, reason: String? = nil) { self.channel = channel; self.reason = reason }
}

public struct WorkerCommand: Codable, Sendable {
    public var type = "worker.command"
    public var id: String?
    public var command: String
    public var params: JSONObject?
    public var timeoutMs: Int?
    public init(id: String? = nil, command: String, params: JSONObject? = nil, timeoutMs: Int? = nil) {
        self.id = id; self.command = command; self.params = params; self.timeoutMs = timeoutMs
    }
}

public struct WorkerCancel: Codable, Sendable {
    public var type = "worker.cancel"
    public var id: String
    public init(id: String) { self.id = id }
}

public struct WorkerComplete: Codable, Sendable {
    public var type = "worker.complete"
    public var result: JSON?
    public init(result: JSON? = nil) { self.result = result }
}

public struct WorkerFail: Codable, Sendable {
    public var type = "worker.fail"
    public var error: JSON?
    public init(error: JSON? = nil) { self.error = error }
}

public struct YieldCondition: Codable, Sendable, Equatable {
    public var type: String
    public var pattern: String?
    public var url: String?
    public var urlContains: String?
    public var method: String?
    public var successfulOnly: Bool?
    public var bodyContains: String?
    public var captureBody: Bool?
    public var selector: String?
    public var state: String?
    public var index: Int?
    public init(type: String, pattern: String? = nil, url: String? = nil, urlContains: String? = nil, method: String? = nil,
                successfulOnly: Bool? = nil, bodyContains: String? = nil, captureBody: Bool? = nil,
                selector: String? = nil, state: String? = nil, index: Int? = nil) {
        self.type = type; self.pattern = pattern; self.url = url; self.urlContains = urlContains; self.method = method
        self.successfulOnly = successfulOnly; self.bodyContains = bodyContains; self.captureBody = captureBody
        self.selector = selector; self.state = state; self.index = index
    }
}

public struct WorkerYieldToUser: Codable, Sendable {
    public var type = "worker.yield_to_user"
    public var id: String?
    public var conditions: [YieldCondition]
    public var optional: Bool?
    public var timeoutMs: Int?
    public var message: String?
    public init(id: String? = nil, conditions: [YieldCondition], optional: Bool? = nil, timeoutMs: Int? = nil, message: String? = nil) {
        self.id = id; self.conditions = conditions; self.optional = optional; self.timeoutMs = timeoutMs; self.message = message
    }
}

public struct ClientCommandResponse: Codable, Sendable {
    public var type = "client.command_response"
    public var id: String
    public var result: JSON?
    public var error: CommandError?
    public init(id: String, result: JSON? = nil, error: CommandError? = nil) { self.id = id; self.result = result; self.error = error }
}

public struct TelemetryEvent: Codable, Sendable, Equatable {
    public var type: String
    public var ts: Int64?
    public var source: String?
    public var payload: JSONObject?
    public var eventSeq: Int?
    public var serverTs: Int64?
    public init(type: String, ts: Int64? = nil, source: String? = nil, payload: JSONObject? = nil) {
        self.type = type; self.ts = ts; self.source = source; self.payload = payload
    }
}

public struct ClientEvents: Codable, Sendable {
    public var type = "client.events"
    public var clientSeq: Int?
    public var events: [TelemetryEvent]
    public init(clientSeq: Int? = nil, events: [TelemetryEvent]) { self.clientSeq = clientSeq; self.events = events }
}

// MARK: Server → peer

public struct PendingInfo: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var command: String?
    public init(id: String, kind: String, command: String? = nil) { self.id = id; self.kind = kind; self.command = command }
}

public struct ServerHello: Codable, Sendable {
    public var type = "server.hello"
    public var currentSeq: Int
    public var sessionId: String
    public var role: Role
    public var protocolVersion: Int
    public var serverVersion: String
    public var phase: Phase
    public var workerConnected: Bool
    public var clientConnected: Bool
    public var interactive: Bool
    public var pending: PendingInfo?
    public var expiresAt: Int64
    public var metadata: JSONObject?
    public var lastClientSeq: Int?
    public var yieldId: String?
    public var eventFilter: JSON?
    public var capture: JSON?
    public var debug: Bool?
    public var injectionScripts: [JSON]?

    public init(currentSeq: Int, sessionId: String, role: Role, protocolVersion: Int = ProtocolVersion.current, serverVersion: String,
                phase: Phase, workerConnected: Bool, clientConnected: Bool, interactive: Bool, pending: PendingInfo? = nil,
                expiresAt: Int64, metadata: JSONObject? = nil, lastClientSeq: Int? = nil, yieldId: String? = nil, eventFilter: JSON? = nil,
                capture: JSON? = nil, debug: Bool? = nil, injectionScripts: [JSON]? = nil) {
        self.currentSeq = currentSeq; self.sessionId = sessionId; self.role = role; self.protocolVersion = protocolVersion
        self.serverVersion = serverVersion; self.phase = phase; self.workerConnected = workerConnected
        self.clientConnected = clientConnected; self.interactive = interactive; self.pending = pending; self.expiresAt = expiresAt
        self.metadata = metadata; self.lastClientSeq = lastClientSeq; self.yieldId = yieldId; self.eventFilter = eventFilter
        self.capture = capture; self.debug = debug; self.injectionScripts = injectionScripts
    }
}

public struct ServerCommand: Codable, Sendable {
    public var type = "server.command"
    public var seq: Int
    public var id: String
    public var command: String
    public var params: JSONObject
    public var timeoutMs: Int
}

public struct ServerCommandResult: Codable, Sendable {
    public var type = "server.command_result"
    public var seq: Int
    public var id: String
    public var command: String?
    public var result: JSON?
    public var error: CommandError?
    public var durationMs: Int?
}

public struct ServerError: Codable, Sendable {
    public var type = "server.error"
    public var seq: Int?
    public var code: ErrorCode
    public var message: String
    public var id: String?
    public var details: JSONObject?
}

public struct ServerCancel: Codable, Sendable {
    public var type = "server.cancel"
    public var seq: Int
    public var id: String
}

public struct ServerSessionEnd: Codable, Sendable {
    public var type = "server.session_end"
    public var seq: Int?
    public var phase: Phase
    public var reason: EndReason
    public var result: JSON?
    public var error: JSON?
}

public struct ServerSetInteractive: Codable, Sendable {
    public var type = "server.set_interactive"
    public var seq: Int
    public var interactive: Bool
    public var yieldId: String
    public var message: String?
    public var conditions: [YieldCondition]?
}

/// `server.cdp_open`: a worker opened CDP channel `channel`; the client connects it to its
/// browser's DevTools endpoint. Unsequenced: CDP traffic is not replayed.
public struct ServerCDPOpen: Codable, Sendable {
    public var type = "server.cdp_open"
    public var channel: Int
    public init(channel: Int) { self.channel = channel }
}

/// `server.cdp`: one raw CDP frame from the worker for channel `channel`.
public struct ServerCDPFrame: Codable, Sendable {
    public var type = "server.cdp"
    public var channel: Int
    public var data: String
    public init(channel: Int, data: String) { self.channel = channel; self.data = data }
}

/// `server.cdp_close`: the worker's side of channel `channel` closed.
public struct ServerCDPClose: Codable, Sendable {
    public var type = "server.cdp_close"
    public var channel: Int
    public var reason: String?
    public init(channel: Int, reason: String? = nil) { self.channel = channel; self.reason = reason }
}

public struct ServerAck: Codable, Sendable {
    public var type = "server.ack"
    public var seq: Int
    public var clientSeq: Int
}

public struct ServerEvent: Codable, Sendable {
    public var type = "server.event"
    public var seq: Int
    public var event: TelemetryEvent
}

public struct ServerReplay: Codable, Sendable {
    public var type = "server.replay"
    public var fromSeq: Int
    public var toSeq: Int
    public var complete: Bool
    public var messages: [JSON]
}

// MARK: REST

public struct SessionConfigRequest: Codable, Sendable {
    public var sessionDurationMs: Int?
    public var connectTimeoutMs: Int?
    public var disconnectGracePeriodMs: Int?
    public var commandTimeoutMs: Int?
    public var eventFilter: JSON?
    public var capture: JSON?
    public var debug: Bool?
    public init() {}
}

public struct CreateSessionRequest: Codable, Sendable {
    public var metadata: JSONObject?
    public var config: SessionConfigRequest?
    /// Legacy: session duration in seconds.
    public var timeout: Int?
    public init(metadata: JSONObject? = nil, config: SessionConfigRequest? = nil) { self.metadata = metadata; self.config = config }
}

public struct CreateSessionResponse: Codable, Sendable {
    public var sessionId: String
    public var workerToken: String
    public var clientToken: String
    public var websocketUrl: String
    public var expiresAt: Int64
    public var phase: Phase
}

public struct SessionCounts: Codable, Sendable, Equatable {
    public var commands: Int
    public var events: Int
    public init(commands: Int, events: Int) { self.commands = commands; self.events = events }
}

public struct SessionInfo: Codable, Sendable {
    public var sessionId: String
    public var phase: Phase
    public var reason: EndReason?
    public var createdAt: Int64
    public var expiresAt: Int64
    public var workerConnected: Bool
    public var clientConnected: Bool
    public var interactive: Bool
    public var pending: PendingInfo?
    public var metadata: JSONObject?
    public var result: JSON?
    public var error: JSON?
    public var counts: SessionCounts

    public init(sessionId: String, phase: Phase, reason: EndReason?, createdAt: Int64, expiresAt: Int64, workerConnected: Bool,
                clientConnected: Bool, interactive: Bool, pending: PendingInfo?, metadata: JSONObject?, result: JSON?, error: JSON?,
                counts: SessionCounts) {
        self.sessionId = sessionId; self.phase = phase; self.reason = reason; self.createdAt = createdAt; self.expiresAt = expiresAt
        self.workerConnected = workerConnected; self.clientConnected = clientConnected; self.interactive = interactive
        self.pending = pending; self.metadata = metadata; self.result = result; self.error = error; self.counts = counts
    }
}

public struct SessionList: Codable, Sendable {
    public var sessions: [SessionInfo]
    /// The cursor of the next page; nil on the last page.
    public var next: String?
}

/// `GET /v1/sessions/{id}/events`.
public struct EventPage: Codable, Sendable {
    public var events: [TelemetryEvent]
    /// The `after` of the next page; nil when there is nothing more now.
    public var next: Int?
}

/// One entry of a session's message journal.
public struct JournalRecord: Codable, Sendable {
    public var n: Int
    public var direction: String
    public var ts: String
    public var message: JSON
}

/// `GET /v1/sessions/{id}/journal`.
public struct JournalPage: Codable, Sendable {
    public var entries: [JournalRecord]
    public var next: Int?
}

public struct APIError: Codable, Sendable {
    public struct Body: Codable, Sendable {
        public var code: String
        public var message: String
        public var issues: [ValidationIssue]?
    }
    public var error: Body
}
