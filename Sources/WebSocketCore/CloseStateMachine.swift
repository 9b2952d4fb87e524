/// The closing handshake (RFC 6455 sections 5.5.1 and 7) as a state machine that returns what
/// to do; the connection executes the actions.
public struct CloseStateMachine: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case open
        /// We sent a close frame and wait for the peer's.
        case closeSent(CloseCode)
        /// The socket should be (or is) closed.
        case closed(CloseCode)
    }

    public enum Action: Sendable, Equatable {
        /// Send a close frame with this code (nil: empty payload) and reason.
        case sendClose(CloseCode?, String)
        /// Stop sending data frames; wait for the peer's close frame until the close deadline.
        case awaitPeerClose
        /// Close the socket once everything queued is written.
        case closeSocketAfterFlush
        /// Nothing to do.
        case none
    }

    public private(set) var state: State = .open

    public init() {}

    public var isOpen: Bool { state == .open }

    /// The code to report to the application when the connection ends.
    public var finalCode: CloseCode? {
        switch state {
        case .open: return nil
        case .closeSent(let c), .closed(let c): return c
        }
    }

    /// We want to close (shutdown, session end, policy).
    public mutating func close(_ code: CloseCode, reason: String = "") -> [Action] {
        guard case .open = state else { return [.none] }
        state = .closeSent(code)
        return [.sendClose(code, reason), .awaitPeerClose]
    }

    /// The peer broke the protocol: send our code and drop the connection after the flush.
    public mutating func fail(_ code: CloseCode, reason: String) -> [Action] {
        switch state {
        case .open:
            state = .closed(code)
            return [.sendClose(code, reason), .closeSocketAfterFlush]
        case .closeSent:
            state = .closed(code)
            return [.closeSocketAfterFlush]
        case .closed:
            return [.none]
        }
    }

    /// The peer's close frame arrived.
    public mutating func receivedClose(_ code: CloseCode?) -> [Action] {
        switch state {
        case .open:
            // Echo the peer's code (an empty close is answered with an empty close).
            state = .closed(code ?? .noStatus)
            return [.sendClose(code, ""), .closeSocketAfterFlush]
        case .closeSent(let ours):
            state = .closed(ours)
            return [.closeSocketAfterFlush]
        case .closed:
            return [.none]
        }
    }

    /// The peer did not answer our close in time, or the socket went away.
    public mutating func transportClosed() -> [Action] {
        switch state {
        case .open: state = .closed(.abnormal)
        case .closeSent(let c): state = .closed(c)
        case .closed: return [.none]
        }
        return [.closeSocketAfterFlush]
    }
}
