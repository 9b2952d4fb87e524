import WebSocketCore

/// Echoes every WebSocket message back (text as text, binary as binary) on any path, and
/// answers plain HTTP with a short text. Used for conformance runs (`switchboard echo`).
public final class EchoDelegate: ServerDelegate, WebSocketHandler {
    public init() {}

    public func handle(_ request: HTTPRequest, on connection: Connection) {
        connection.respond(HTTPResponse(status: 200, text: "switchboard echo: connect with a WebSocket client\n"))
    }

    public func upgrade(_ request: HTTPRequest, on connection: Connection) -> UpgradeDecision { .accept(self) }

    public func webSocketDidOpen(_ connection: Connection) {}

    public func webSocket(_ connection: Connection, didReceiveText message: ReceivedMessage) {
        connection.send(OutboundMessage(reserved: message.storage), opcode: .text)
    }

    public func webSocket(_ connection: Connection, didReceiveBinary message: ReceivedMessage) {
        connection.send(OutboundMessage(reserved: message.storage), opcode: .binary)
    }

    public func webSocketDidClose(_ connection: Connection, code: CloseCode) {}
}
