import SocketServer
import WebSocketCore

/// What a session needs of a peer's WebSocket: send, close, say where it comes from. The
/// server's `Connection` is one; tests and the session fuzzer use a recording fake, so the
/// session's own logic runs without sockets.
public protocol PeerConnection: AnyObject {
    var remoteAddress: String { get }
    /// Sends a text message built with header room in front.
    func send(_ message: OutboundMessage, opcode: Opcode)
    /// Sends a message already sealed as a frame (retained for replay, sent many times).
    func sendSealed(_ message: OutboundMessage)
    /// Starts the closing handshake with `code`.
    func close(_ code: CloseCode, reason: String)
    /// Lowers the largest message accepted from now on.
    func limitMessages(to bytes: Int)
}

extension Connection: PeerConnection {}
