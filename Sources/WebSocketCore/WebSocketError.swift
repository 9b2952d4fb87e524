/// Every way a peer can break RFC 6455 / RFC 7692 or our limits, each mapped to exactly one
/// close code in `closeCode` below (the one place where that mapping lives).
public enum WebSocketError: Error, Equatable, Sendable {
    case unmaskedClientFrame
    case maskedServerFrame
    case reservedBitsSet
    case reservedOpcode(UInt8)
    case controlFrameTooLong
    case fragmentedControlFrame
    case unexpectedContinuation
    case expectedContinuation
    case lengthTopBitSet
    case nonMinimalLength
    case invalidClosePayload
    case invalidCloseCode(UInt16)
    case invalidUTF8
    case frameTooLarge
    case messageTooLarge
    case compressionFailed
    case binaryNotAccepted

    public var closeCode: CloseCode {
        switch self {
        case .invalidUTF8: return .invalidPayload
        case .frameTooLarge, .messageTooLarge: return .messageTooBig
        case .binaryNotAccepted: return .unsupportedData
        default: return .protocolError
        }
    }

    public var reason: String {
        switch self {
        case .unmaskedClientFrame: return "client frames must be masked"
        case .maskedServerFrame: return "server frames must not be masked"
        case .reservedBitsSet: return "reserved bits set without a negotiated extension"
        case .reservedOpcode(let op): return "reserved opcode \(op)"
        case .controlFrameTooLong: return "control frame payload over 125 bytes"
        case .fragmentedControlFrame: return "fragmented control frame"
        case .unexpectedContinuation: return "continuation frame without a message to continue"
        case .expectedContinuation: return "new data frame inside a fragmented message"
        case .lengthTopBitSet: return "64-bit length with the most significant bit set"
        case .nonMinimalLength: return "payload length not minimally encoded"
        case .invalidClosePayload: return "close payload of 1 byte"
        case .invalidCloseCode(let c): return "invalid close code \(c)"
        case .invalidUTF8: return "invalid UTF-8 in text"
        case .frameTooLarge: return "frame larger than the limit"
        case .messageTooLarge: return "message larger than the limit"
        case .compressionFailed: return "invalid compressed data"
        case .binaryNotAccepted: return "binary messages are not accepted"
        }
    }
}

/// A WebSocket close status code.
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ raw: UInt16) { self.rawValue = raw }

    public static let normal = CloseCode(1000)
    public static let goingAway = CloseCode(1001)
    public static let protocolError = CloseCode(1002)
    public static let unsupportedData = CloseCode(1003)
    public static let noStatus = CloseCode(1005)
    public static let abnormal = CloseCode(1006)
    public static let invalidPayload = CloseCode(1007)
    public static let policyViolation = CloseCode(1008)
    public static let messageTooBig = CloseCode(1009)
    public static let internalError = CloseCode(1011)
    // Switchboard's application codes (docs/protocol.md section 10).
    public static let invalidJSON = CloseCode(4000)
    public static let replaced = CloseCode(4001)
    public static let unsupportedProtocolVersion = CloseCode(4002)
    public static let helloTimeout = CloseCode(4003)
    public static let tooSlow = CloseCode(4008)
    /// A CDP channel: the session's client disconnected (docs/protocol.md section 16).
    public static let clientDisconnected = CloseCode(4010)
    /// A CDP channel: the client's browser side closed or could not open.
    public static let browserSideClosed = CloseCode(4011)
    /// The session is served by another node now (several nodes): reconnect.
    public static let moved = CloseCode(4012)
    public static let rateLimited = CloseCode(4029)

    /// Whether a peer may send this code in a close frame (RFC 6455 section 7.4).
    public var isValidOnWire: Bool {
        switch rawValue {
        case 1000...1003, 1007...1014: return true
        case 3000...4999: return true
        default: return false
        }
    }

    public var description: String { String(rawValue) }
}
