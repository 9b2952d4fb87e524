import Foundation
import SwitchboardProtocol

/// Session settings at creation (docs/protocol.md section 12). Unset values take the server's
/// defaults; values above the server's maxima are refused with a `validation_error`.
public struct SessionConfig: Sendable {
    /// How long the session may live, from creation.
    public var sessionDurationMs: Int?
    /// How long to wait for both roles to connect.
    public var connectTimeoutMs: Int?
    /// How long a role may stay away before the session expires.
    public var disconnectGracePeriodMs: Int?
    /// The default timeout of a command.
    public var commandTimeoutMs: Int?
    /// Event types the server keeps (`{"types":[…]}`), sent to the client in its hello.
    public var eventTypes: [String]?
    /// Snapshot / screenshot capture settings for the client (`docs/protocol.md` §7.4).
    public var capture: JSON?
    /// Asks the client for debug output.
    public var debug: Bool?

    public init(sessionDurationMs: Int? = nil, connectTimeoutMs: Int? = nil, disconnectGracePeriodMs: Int? = nil,
                commandTimeoutMs: Int? = nil, eventTypes: [String]? = nil, capture: JSON? = nil, debug: Bool? = nil) {
        self.sessionDurationMs = sessionDurationMs
        self.connectTimeoutMs = connectTimeoutMs
        self.disconnectGracePeriodMs = disconnectGracePeriodMs
        self.commandTimeoutMs = commandTimeoutMs
        self.eventTypes = eventTypes
        self.capture = capture
        self.debug = debug
    }

    var request: SessionConfigRequest {
        var r = SessionConfigRequest()
        r.sessionDurationMs = sessionDurationMs
        r.connectTimeoutMs = connectTimeoutMs
        r.disconnectGracePeriodMs = disconnectGracePeriodMs
        r.commandTimeoutMs = commandTimeoutMs
        r.eventFilter = eventTypes.map { .object(["types": .array($0.map { .string($0) })]) }
        r.capture = capture
        r.debug = debug
        return r
    }
}

/// The REST API of a Switchboard server for one API key (one tenant): create, read, list and
/// cancel sessions, and read their events and journal.
///
/// ```swift
/// let api = SwitchboardAPI(baseURL: "https://relay.example.com", apiKey: key)
/// let session = try await api.createSession(metadata: ["user": "u_1"])
/// let worker = try await api.connectWorker(session)
/// ```
public struct SwitchboardAPI: Sendable {
    /// The server's base URL, without a trailing `/`.
    public let baseURL: String
    private let apiKey: String
    /// TLS trust, timeouts and compression for every call and connection.
    public var options: TransportOptions

    /// `baseURL` is the server's `http://` or `https://` address (a trailing `/` is ignored).
    public init(baseURL: String, apiKey: String, options: TransportOptions = TransportOptions()) {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.apiKey = apiKey
        self.options = options
    }

    /// `POST /v1/sessions`: a new session in phase `created`, with its tokens (shown once).
    public func createSession(metadata: JSONObject? = nil, config: SessionConfig? = nil) async throws -> CreateSessionResponse {
        let body = PeerMessageEncoder.encode(CreateSessionRequest(metadata: metadata, config: config?.request))
        return try await call("POST", "/v1/sessions", body: body)
    }

    /// `GET /v1/sessions/{id}`.
    public func session(_ id: String) async throws -> SessionInfo {
        try await call("GET", "/v1/sessions/\(escape(id))")
    }

    /// `GET /v1/sessions`: one page, newest first. Pass `next` back as `cursor`.
    public func sessions(phase: Phase? = nil, limit: Int? = nil, cursor: String? = nil) async throws -> SessionList {
        try await call("GET", "/v1/sessions" + query(["phase": phase?.rawValue, "limit": limit.map(String.init), "cursor": cursor]))
    }

    /// Every session of this key, newest first, page by page.
    public func allSessions(phase: Phase? = nil, pageSize: Int = 100) -> AsyncThrowingStream<SessionInfo, any Error> {
        AsyncThrowingStream { c in
            let task = Task {
                var cursor: String? = nil
                do {
                    repeat {
                        let page = try await sessions(phase: phase, limit: pageSize, cursor: cursor)
                        for s in page.sessions { c.yield(s) }
                        cursor = page.next
                    } while cursor != nil && !Task.isCancelled
                    c.finish()
                } catch {
                    c.finish(throwing: error)
                }
            }
            c.onTermination = { _ in task.cancel() }
        }
    }

    /// `DELETE /v1/sessions/{id}`: ends the session as `failed` / `cancelled` (idempotent).
    @discardableResult
    public func cancelSession(_ id: String) async throws -> SessionInfo {
        try await call("DELETE", "/v1/sessions/\(escape(id))")
    }

    /// `GET /v1/sessions/{id}/events`: stored telemetry after `eventSeq` `after`.
    public func events(of id: String, after: Int? = nil, limit: Int? = nil, types: [String]? = nil) async throws -> EventPage {
        try await call("GET", "/v1/sessions/\(escape(id))/events" + query(["after": after.map(String.init), "limit": limit.map(String.init),
                                                                           "types": types?.joined(separator: ",")]))
    }

    /// `GET /v1/sessions/{id}/journal`: the session's messages in both directions.
    public func journal(of id: String, after: Int? = nil, limit: Int? = nil) async throws -> JournalPage {
        try await call("GET", "/v1/sessions/\(escape(id))/journal" + query(["after": after.map(String.init), "limit": limit.map(String.init)]))
    }

    /// Connects the worker of a session just created.
    public func connectWorker(_ session: CreateSessionResponse, options: WorkerOptions = WorkerOptions()) async throws -> WorkerConnection {
        var o = options
        o.connection.transport = self.options
        return try await WorkerConnection.connect(websocketURL: session.websocketUrl, token: session.workerToken, options: o)
    }

    // MARK: Plumbing

    private func call<T: Decodable>(_ method: String, _ path: String, body: [UInt8]? = nil) async throws -> T {
        var headers = [("Authorization", "Bearer \(apiKey)"), ("Accept", "application/json")]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        let r = try await Transport.request(method, baseURL + path, headers: headers, body: body, options: options)
        guard (200..<300).contains(r.status) else { throw SwitchboardAPI.httpError(status: r.status, body: r.body) }
        do { return try JSONDecoder().decode(T.self, from: Data(r.body)) } catch {
            throw SwitchboardError.invalidResponse("\(method) \(path): \(error)")
        }
    }

    /// The error of a non-2xx answer, from the API's envelope `{"error":{code,message,issues}}`.
    static func httpError(status: Int, body: [UInt8]) -> SwitchboardError {
        if let e = try? JSONDecoder().decode(APIError.self, from: Data(body)) {
            return .http(status: status, code: e.error.code, message: e.error.message, issues: e.error.issues ?? [])
        }
        return .http(status: status, code: "http_\(status)", message: String(decoding: body.prefix(200), as: UTF8.self), issues: [])
    }

    private func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? s
    }

    private func query(_ items: KeyValuePairs<String, String?>) -> String {
        let parts = items.compactMap { k, v in
            v.map { "\(k)=\($0.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+"))) ?? $0)" }
        }
        return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
    }
}

/// Appends `role` to a session's `websocketUrl`.
func roleURL(_ websocketURL: String, role: Role) -> String {
    websocketURL + (websocketURL.contains("?") ? "&" : "?") + "role=\(role.rawValue)"
}
