import Testing
import SwitchboardProtocol
@testable import SwitchboardServer

/// Every transition of docs/protocol.md section 4, and the forbidden ones, as a table.
@Suite struct SessionStateTransitions {
    /// Builds a state in `phase` through legal events only.
    static func state(_ phase: Phase, worker: Bool = false, client: Bool = false) -> SessionState {
        var s = SessionState()
        switch phase {
        case .created: break
        case .pending: _ = s.apply(.connected(.worker))
        case .active: _ = s.apply(.connected(.worker)); _ = s.apply(.connected(.client))
        case .complete: _ = s.apply(.connected(.worker)); _ = s.apply(.connected(.client)); _ = s.apply(.complete(result: nil))
        case .failed: _ = s.apply(.cancel)
        case .expired: _ = s.apply(.connectTimeout)
        }
        if phase == .pending && !worker { _ = s.apply(.disconnected(.worker)) }
        return s
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var from: Phase
        var event: LifecycleEvent
        var to: Phase
        var reason: EndReason?
        var rejected: ErrorCode? = nil
        var testDescription: String { "\(from) + \(event) -> \(to)" }
    }

    static let rows: [Row] = [
        // Allowed transitions.
        Row(from: .created, event: .connected(.worker), to: .pending, reason: nil),
        Row(from: .created, event: .connected(.client), to: .pending, reason: nil),
        Row(from: .created, event: .connectTimeout, to: .expired, reason: .connectTimeout),
        Row(from: .created, event: .cancel, to: .failed, reason: .cancelled),
        Row(from: .pending, event: .fail(error: nil), to: .failed, reason: .workerFailed),
        Row(from: .pending, event: .cancel, to: .failed, reason: .cancelled),
        Row(from: .pending, event: .internalError, to: .failed, reason: .internalError),
        Row(from: .pending, event: .connectTimeout, to: .expired, reason: .connectTimeout),
        Row(from: .active, event: .complete(result: .object(["a": .int(1)])), to: .complete, reason: .workerCompleted),
        Row(from: .active, event: .fail(error: nil), to: .failed, reason: .workerFailed),
        Row(from: .active, event: .cancel, to: .failed, reason: .cancelled),
        Row(from: .active, event: .internalError, to: .failed, reason: .internalError),
        Row(from: .active, event: .sessionTimeout, to: .expired, reason: .sessionTimeout),
        // Forbidden or no-op.
        Row(from: .created, event: .complete(result: nil), to: .created, reason: nil, rejected: .invalidPhase),
        Row(from: .created, event: .fail(error: nil), to: .created, reason: nil, rejected: .invalidPhase),
        Row(from: .pending, event: .complete(result: nil), to: .pending, reason: nil, rejected: .invalidPhase),
        Row(from: .active, event: .connectTimeout, to: .active, reason: nil),
        Row(from: .created, event: .graceExpired(.worker), to: .created, reason: nil),
        Row(from: .complete, event: .complete(result: nil), to: .complete, reason: .workerCompleted, rejected: .sessionTerminal),
        Row(from: .complete, event: .fail(error: nil), to: .complete, reason: .workerCompleted, rejected: .sessionTerminal),
        Row(from: .complete, event: .cancel, to: .complete, reason: .workerCompleted),
        Row(from: .failed, event: .sessionTimeout, to: .failed, reason: .cancelled),
        Row(from: .expired, event: .connected(.worker), to: .expired, reason: .connectTimeout),
        Row(from: .expired, event: .cancel, to: .expired, reason: .connectTimeout),
        Row(from: .failed, event: .connectTimeout, to: .failed, reason: .cancelled),
    ]

    @Test(arguments: rows) func transition(_ row: Row) {
        var s = Self.state(row.from, worker: row.from == .pending)
        let effects = s.apply(row.event)
        #expect(s.phase == row.to)
        #expect(s.reason == row.reason)
        if let code = row.rejected {
            #expect(effects == [.rejected(code)])
        } else if row.from != row.to {
            #expect(effects.contains(.phaseChanged(from: row.from, to: row.to)))
            if row.to.isTerminal { #expect(effects.contains(.ended(row.to, row.reason!))) }
        } else {
            #expect(!effects.contains { if case .phaseChanged = $0 { return true }; return false })
        }
    }

    @Test func pendingBecomesActiveOnlyWithBothPeers() {
        var s = SessionState()
        #expect(s.apply(.connected(.client)) == [.disarmGrace(.client), .phaseChanged(from: .created, to: .pending)])
        #expect(s.apply(.disconnected(.client)) == [])
        #expect(s.phase == .pending)
        _ = s.apply(.connected(.worker))
        #expect(s.phase == .pending)
        #expect(s.apply(.connected(.client)) == [.disarmGrace(.client), .phaseChanged(from: .pending, to: .active)])
    }

    @Test func disconnectInActiveArmsGraceAndReconnectDisarmsIt() {
        var s = Self.state(.active)
        #expect(s.apply(.disconnected(.client)) == [.armGrace(.client)])
        #expect(s.phase == .active)
        #expect(!s.clientConnected)
        #expect(s.apply(.connected(.client)) == [.disarmGrace(.client)])
        #expect(s.apply(.graceExpired(.client)) == [])
        #expect(s.phase == .active)
    }

    @Test func graceExpiryWhileStillAwayExpiresTheSession() {
        var s = Self.state(.active)
        _ = s.apply(.disconnected(.worker))
        let fx = s.apply(.graceExpired(.worker))
        #expect(s.phase == .expired)
        #expect(s.reason == .disconnectGrace)
        #expect(fx.contains(.ended(.expired, .disconnectGrace)))
    }

    @Test func activeStaysActiveAfterDisconnects() {
        var s = Self.state(.active)
        _ = s.apply(.disconnected(.worker))
        _ = s.apply(.disconnected(.client))
        #expect(s.phase == .active)
        _ = s.apply(.connected(.worker))
        #expect(s.phase == .active)
    }

    @Test func resultAndErrorAreKept() {
        var s = Self.state(.active)
        _ = s.apply(.complete(result: .object(["account": .string("1")])))
        #expect(s.result == .object(["account": .string("1")]))
        var f = Self.state(.active)
        _ = f.apply(.fail(error: .string("boom")))
        #expect(f.error == .string("boom"))
    }
}
