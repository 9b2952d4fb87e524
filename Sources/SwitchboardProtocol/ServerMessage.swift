import Foundation

/// Any message the server sends to a worker or a client, decoded into its Codable type.
/// SDKs and tools read server traffic through this one function.
public enum ServerMessage: Sendable {
    case hello(ServerHello)
    case command(ServerCommand)
    case commandResult(ServerCommandResult)
    case cancel(ServerCancel)
    case setInteractive(ServerSetInteractive)
    case ack(ServerAck)
    case event(ServerEvent)
    case error(ServerError)
    case sessionEnd(ServerSessionEnd)
    case replay(ServerReplay)
    case cdpOpen(ServerCDPOpen)
    case cdp(ServerCDPFrame)
    case cdpClose(ServerCDPClose)
    /// A type this version does not know (a later server's addition): ignored by peers, but
    /// its `seq` still counts as processed.
    case unknown(type: String, seq: Int?)

    /// The message's `seq` (nil for `server.hello`, `server.replay` and errors before the hello).
    public var seq: Int? {
        switch self {
        case .hello, .replay, .cdpOpen, .cdp, .cdpClose: return nil
        case .command(let m): return m.seq
        case .commandResult(let m): return m.seq
        case .cancel(let m): return m.seq
        case .setInteractive(let m): return m.seq
        case .ack(let m): return m.seq
        case .event(let m): return m.seq
        case .error(let m): return m.seq
        case .sessionEnd(let m): return m.seq
        case .unknown(_, let seq): return seq
        }
    }

    public struct DecodingFailure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Decodes one message from its JSON text.
    public static func decode(_ bytes: [UInt8]) throws(DecodingFailure) -> ServerMessage {
        let value: JSON
        do { value = try JSONParser.parse(bytes) } catch { throw DecodingFailure(description: "invalid JSON: \(error)") }
        return try decode(value, bytes: bytes)
    }

    /// Decodes one message from a parsed value (e.g. an element of `server.replay`).
    public static func decode(_ value: JSON) throws(DecodingFailure) -> ServerMessage {
        try decode(value, bytes: JSONWriter.serialize(value))
    }

    private static func decode(_ value: JSON, bytes: [UInt8]) throws(DecodingFailure) -> ServerMessage {
        guard let type = value["type"]?.stringValue else { throw DecodingFailure(description: "a server message without a string type") }
        func as_<T: Decodable>(_ t: T.Type) throws(DecodingFailure) -> T {
            do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
                throw DecodingFailure(description: "\(type): \(error)")
            }
        }
        switch type {
        case "server.hello": return .hello(try as_(ServerHello.self))
        case "server.command": return .command(try as_(ServerCommand.self))
        case "server.command_result": return .commandResult(try as_(ServerCommandResult.self))
        case "server.cancel": return .cancel(try as_(ServerCancel.self))
        case "server.set_interactive": return .setInteractive(try as_(ServerSetInteractive.self))
        case "server.ack": return .ack(try as_(ServerAck.self))
        case "server.event": return .event(try as_(ServerEvent.self))
        case "server.error": return .error(try as_(ServerError.self))
        case "server.session_end": return .sessionEnd(try as_(ServerSessionEnd.self))
        case "server.replay":
            // Read from the parsed value: its messages stay JSON values, each decoded on its
            // own later, instead of going through JSON's Codable conformance element by element.
            guard let from = value["fromSeq"]?.intValue, let to = value["toSeq"]?.intValue,
                  let complete = value["complete"]?.boolValue, let messages = value["messages"]?.arrayValue else {
                throw DecodingFailure(description: "server.replay: fromSeq, toSeq, complete and messages are required")
            }
            return .replay(ServerReplay(fromSeq: from, toSeq: to, complete: complete, messages: messages))
        case "server.cdp_open", "server.cdp", "server.cdp_close":
            // Read from the parsed value: a CDP frame can be megabytes (a screenshot).
            guard let channel = value["channel"]?.intValue, channel > 0 else { throw DecodingFailure(description: "\(type): a positive integer channel is required") }
            if type == "server.cdp_open" { return .cdpOpen(ServerCDPOpen(channel: channel)) }
            if type == "server.cdp_close" { return .cdpClose(ServerCDPClose(channel: channel, reason: value["reason"]?.stringValue)) }
            guard let data = value["data"]?.stringValue else { throw DecodingFailure(description: "server.cdp: data must be a string") }
            return .cdp(ServerCDPFrame(channel: channel, data: data))
        default: return .unknown(type: type, seq: value["seq"]?.intValue)
        }
    }
}

/// Encodes a peer's message (`worker.*`, `client.*`) as the JSON text it sends.
public enum PeerMessageEncoder {
    public static func encode<M: Encodable>(_ message: M) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        // The protocol's types hold only strings, numbers, booleans and JSON values: encoding
        // them cannot fail.
        return (try? Array(encoder.encode(message))) ?? Array("{}".utf8)
    }
}
