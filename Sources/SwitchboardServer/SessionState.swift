import SwitchboardProtocol

/// Per-session timeouts (docs/protocol.md section 4), in milliseconds.
public struct SessionTimeouts: Sendable, Equatable, Codable {
    public var connectTimeoutMs = 300_000
    public var sessionDurationMs = 3_600_000
    public var disconnectGracePeriodMs = 60_000
    public var commandTimeoutMs = 30_000
    public init() {}
}

/// What can happen to a session's lifecycle.
public enum LifecycleEvent: Sendable, Equatable {
    case connected(Role)
    case disconnected(Role)
    case complete(result: JSON?)
    case fail(error: JSON?)
    case cancel
    case internalError
    case connectTimeout
    case sessionTimeout
    case graceExpired(Role)
}

/// What the session actor must do after a lifecycle event.
public enum LifecycleEffect: Sendable, Equatable {
    case phaseChanged(from: Phase, to: Phase)
    /// The session reached a terminal phase: notify peers, resolve pending work, close.
    case ended(Phase, EndReason)
    case armGrace(Role)
    case disarmGrace(Role)
    /// The event is not allowed now; answer with this error code.
    case rejected(ErrorCode)
}

/// The lifecycle of one session as a pure value: `apply(event)` returns the effects, and the
/// actor around it executes them. Connection flags are separate from the phase.
public struct SessionState: Sendable, Equatable {
    public private(set) var phase: Phase = .created
    public private(set) var reason: EndReason? = nil
    public private(set) var workerConnected = false
    public private(set) var clientConnected = false
    public private(set) var result: JSON? = nil
    public private(set) var error: JSON? = nil

    public init() {}

    /// Restores a persisted state.
    public init(phase: Phase, reason: EndReason?, result: JSON? = nil, error: JSON? = nil) {
        self.phase = phase; self.reason = reason; self.result = result; self.error = error
    }

    public func isConnected(_ role: Role) -> Bool { role == .worker ? workerConnected : clientConnected }

    private mutating func setConnected(_ role: Role, _ value: Bool) {
        if role == .worker { workerConnected = value } else if role == .client { clientConnected = value }
    }

    private mutating func end(_ p: Phase, _ r: EndReason, _ effects: inout [LifecycleEffect]) {
        effects.append(.phaseChanged(from: phase, to: p))
        phase = p
        reason = r
        effects.append(.ended(p, r))
    }

    public mutating func apply(_ event: LifecycleEvent) -> [LifecycleEffect] {
        var fx: [LifecycleEffect] = []
        switch event {
        case .connected(let role):
            guard role != .debug else { return [] }
            setConnected(role, true)
            guard !phase.isTerminal else { return [] }
            fx.append(.disarmGrace(role))
            if phase == .created {
                fx.append(.phaseChanged(from: .created, to: .pending))
                phase = .pending
            }
            if phase == .pending && workerConnected && clientConnected {
                fx.append(.phaseChanged(from: .pending, to: .active))
                phase = .active
            }
        case .disconnected(let role):
            guard role != .debug else { return [] }
            setConnected(role, false)
            if phase == .active { fx.append(.armGrace(role)) }
        case .complete(let r):
            if phase.isTerminal { return [.rejected(.sessionTerminal)] }
            guard phase == .active else { return [.rejected(.invalidPhase)] }
            result = r
            end(.complete, .workerCompleted, &fx)
        case .fail(let e):
            if phase.isTerminal { return [.rejected(.sessionTerminal)] }
            guard phase == .pending || phase == .active else { return [.rejected(.invalidPhase)] }
            error = e
            end(.failed, .workerFailed, &fx)
        case .cancel:
            guard !phase.isTerminal else { return [] }
            error = .object(["code": .string("cancelled"), "message": .string("session cancelled")])
            end(.failed, .cancelled, &fx)
        case .internalError:
            guard phase == .pending || phase == .active else { return [] }
            error = .object(["code": .string("internal_error"), "message": .string("internal server error")])
            end(.failed, .internalError, &fx)
        case .connectTimeout:
            guard phase == .created || phase == .pending else { return [] }
            end(.expired, .connectTimeout, &fx)
        case .sessionTimeout:
            guard !phase.isTerminal else { return [] }
            end(.expired, .sessionTimeout, &fx)
        case .graceExpired(let role):
            guard phase == .active, !isConnected(role) else { return [] }
            end(.expired, .disconnectGrace, &fx)
        }
        return fx
    }
}
