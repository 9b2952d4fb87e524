import SwitchboardProtocol

/// Every failure the SDK reports. Protocol errors carry the protocol's own codes
/// (docs/protocol.md sections 5.3 and 10).
public enum SwitchboardError: Error, Sendable, CustomStringConvertible {
    /// The server answered a message with `server.error` (e.g. `invalid_command`,
    /// `command_pending`, `invalid_phase`). `details` holds e.g. the validation `issues`.
    case server(code: ErrorCode, message: String, details: JSONObject?)
    /// The command ran and failed: a client code (`element_not_found`, `navigation_failed`,
    /// `evaluation_failed`, …) or a server one (`timeout`, `session_terminal`).
    case command(code: String, message: String?)
    /// A REST call failed: the HTTP status and the API's error envelope.
    case http(status: Int, code: String, message: String, issues: [ValidationIssue])
    /// The session has ended; no more work is possible.
    case sessionEnded(phase: Phase, reason: EndReason?)
    /// The server closed the connection for good (4001 replaced, 4002 unsupported version,
    /// 1008 policy, …): the SDK does not reconnect after these.
    case closed(code: UInt16, reason: String)
    /// The server took the command but its result is no longer retained (a replay that was
    /// not complete): whether it ran is unknown.
    case resultLost(id: String)
    /// The network or TLS failed, or the server could not be reached.
    case transport(String)
    /// The server sent something this SDK cannot read.
    case invalidResponse(String)

    /// A readable account of the error.
    public var description: String {
        switch self {
        case .server(let code, let message, _): return "server error \(code.rawValue): \(message)"
        case .command(let code, let message): return "command failed (\(code))" + (message.map { ": \($0)" } ?? "")
        case .http(let status, let code, let message, _): return "HTTP \(status) \(code): \(message)"
        case .sessionEnded(let phase, let reason): return "the session has ended (\(phase.rawValue)\(reason.map { ", \($0.rawValue)" } ?? ""))"
        case .closed(let code, let reason): return "the server closed the connection (\(code)\(reason.isEmpty ? "" : ": \(reason)"))"
        case .resultLost(let id): return "the result of \(id) is no longer retained by the server"
        case .transport(let why): return "transport: \(why)"
        case .invalidResponse(let why): return "invalid response: \(why)"
        }
    }

    /// The protocol's code, when the error has one.
    public var code: String? {
        switch self {
        case .server(let code, _, _): return code.rawValue
        case .command(let code, _): return code
        case .http(_, let code, _, _): return code
        default: return nil
        }
    }
}

/// What a peer does after the server closes its connection (docs/protocol.md section 10).
public enum CloseDecision: Equatable, Sendable {
    case reconnect
    /// Do not reconnect: the session ended (1000) or reconnecting cannot help.
    case stop

    /// What to do after the server closed with `code`.
    public static func after(code: UInt16) -> CloseDecision {
        switch code {
        case 1000, 1002, 1003, 1007, 1008, 1009, 4000, 4001, 4002: return .stop
        default: return .reconnect // 1001, 1006, 1011, 4003, 4008, 4012 (moved), 4029 and unknown codes
        }
    }
}

/// Jittered exponential backoff between reconnection attempts ("full jitter"): attempt n
/// waits a uniformly random time in [base·2^(n−1) / 2, base·2^(n−1)], capped at `maxMs`.
public struct Backoff: Sendable, Equatable {
    /// The ceiling of the first retry.
    public var baseMs: Int
    /// The largest ceiling.
    public var maxMs: Int
    public init(baseMs: Int = 250, maxMs: Int = 30_000) { self.baseMs = max(1, baseMs); self.maxMs = max(self.baseMs, maxMs) }

    /// The delay before attempt `attempt` (1 = the first retry), using `random` in [0, 1].
    public func delayMs(attempt: Int, random: Double) -> Int {
        let exponent = min(max(attempt, 1) - 1, 20)
        let (grown, overflow) = baseMs.multipliedReportingOverflow(by: 1 << exponent)
        let ceiling = overflow ? maxMs : min(maxMs, grown)
        let r = random.isNaN ? 1 : min(max(random, 0), 1)
        return ceiling / 2 + Int(Double(ceiling - ceiling / 2) * r)
    }
}

/// The server `seq`s a peer has processed: replayed and live messages are applied once each,
/// in order (docs/protocol.md section 8).
public struct SeqTracker: Sendable, Equatable {
    /// The highest `seq` processed (the hello's `lastSeq`); nil before the first.
    public private(set) var lastSeq: Int?
    public init(lastSeq: Int? = nil) { self.lastSeq = lastSeq }

    /// True when the message is new (and records it); false for a duplicate. Messages
    /// without a `seq` are always new.
    public mutating func accept(_ seq: Int?) -> Bool {
        guard let seq else { return true }
        if let last = lastSeq, seq <= last { return false }
        lastSeq = seq
        return true
    }
}
