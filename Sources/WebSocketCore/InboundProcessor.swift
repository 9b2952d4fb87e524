/// A received message payload. The first `FrameWriter.maxHeaderSize` bytes of `storage` are
/// header room, so the same array can go back out as a frame (echo) without a copy.
public struct ReceivedMessage: Sendable {
    public var storage: [UInt8]

    public init(storage: [UInt8]) { self.storage = storage }

    public init(payload: [UInt8]) {
        storage = FrameWriter.withHeaderRoom(payload)
    }

    public var count: Int { storage.count - FrameWriter.maxHeaderSize }
    public var bytes: ArraySlice<UInt8> { storage[FrameWriter.maxHeaderSize...] }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[FrameWriter.maxHeaderSize...])) }
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }
}

public enum InboundMessage: Sendable {
    case text(ReceivedMessage)
    case binary(ReceivedMessage)
    case ping([UInt8])
    case pong([UInt8])
    /// A close frame; `code` is nil when the frame had no payload.
    case close(code: CloseCode?, reason: String)
}

/// Everything from bytes to messages for one connection: frame parsing, control frames,
/// fragment assembly, size limits, incremental UTF-8 validation and (when negotiated)
/// permessage-deflate. Pure: it does no I/O and owns no socket.
public struct InboundProcessor: Sendable {
    public struct Limits: Sendable {
        public var maxFrameSize: Int
        public var maxMessageSize: Int
        public init(maxFrameSize: Int = 16 << 20, maxMessageSize: Int = 16 << 20) {
            self.maxFrameSize = maxFrameSize
            self.maxMessageSize = maxMessageSize
        }
    }

    private var parser: FrameParser
    public private(set) var limits: Limits

    /// Lowers the largest message accepted from now on (e.g. once the peer's role is known).
    public mutating func limitMessages(to bytes: Int) {
        limits.maxMessageSize = min(limits.maxMessageSize, bytes)
    }
    private var inflater: Inflater?

    // The data message being assembled.
    private var messageOpcode: Opcode = .text
    private var messageCompressed = false
    private var message: [UInt8] = []
    private var utf8 = UTF8Validator()
    // The control frame being assembled.
    private var controlOpcode: Opcode? = nil
    private var control: [UInt8] = []
    /// Set once a close frame was received; later bytes are ignored.
    public private(set) var closeReceived = false

    /// `inflater` is given when permessage-deflate was negotiated; it may be shared by many
    /// connections of one thread when the peer does no context takeover.
    /// A client passes `requireMask: false, forbidMask: true` (server frames are never masked).
    public init(limits: Limits = Limits(), requireMask: Bool = true, forbidMask: Bool = false, inflater: Inflater? = nil) {
        self.limits = limits
        self.inflater = inflater
        parser = FrameParser(configuration: .init(maxFrameSize: limits.maxFrameSize, requireMask: requireMask,
                                                  allowCompression: inflater != nil, forbidMask: forbidMask))
    }

    /// Parses `buffer` (payloads are unmasked in place) and hands every complete message to
    /// `deliver`, in order. Throws at the first violation; the caller closes the connection
    /// with `error.closeCode`. Stops early, at a message boundary, once the messages delivered
    /// add up to `budget` bytes (after decompression) and returns how many bytes of `buffer`
    /// it used: the caller passes the rest again later, so that one peer's backlog (or a
    /// read full of tiny compressed messages) cannot hold the thread.
    @discardableResult
    public mutating func process(_ buffer: UnsafeMutableRawBufferPointer, budget: Int = .max,
                                 _ deliver: (InboundMessage) -> Void) throws(WebSocketError) -> Int {
        var index = 0
        var delivered = 0
        while !closeReceived, let event = try parser.next(buffer, &index) {
            switch event {
            case .header(let h):
                if h.opcode.isControl {
                    controlOpcode = h.opcode
                    control.removeAll(keepingCapacity: true)
                } else {
                    controlOpcode = nil
                    if h.opcode != .continuation {
                        messageOpcode = h.opcode
                        messageCompressed = h.rsv1
                        utf8.reset()
                        message = []
                    }
                    let size = max(message.count - FrameWriter.maxHeaderSize, 0)
                    if !messageCompressed && size + h.length > limits.maxMessageSize { throw .messageTooLarge }
                    if messageCompressed && size + h.length > limits.maxFrameSize { throw .messageTooLarge }
                    // Limits are checked; grow once per frame, but never trust a length for more
                    // than 1 MiB up front. A message's first frame and its header room are one
                    // allocation.
                    let room = min(h.length, 1 << 20)
                    if message.isEmpty {
                        message = FrameWriter.headerRoom(for: room)
                    } else {
                        message.reserveCapacity(message.count + room)
                    }
                }
            case .payload(let range):
                let chunk = UnsafeRawBufferPointer(rebasing: buffer[range])
                if controlOpcode != nil {
                    control.append(contentsOf: chunk)
                } else {
                    if messageOpcode == .text && !messageCompressed && !utf8.validate(chunk) { throw .invalidUTF8 }
                    message.append(contentsOf: chunk)
                }
            case .end:
                if let op = controlOpcode {
                    controlOpcode = nil
                    try deliverControl(op, deliver)
                } else if !parser.inFragmentedMessage {
                    delivered += try deliverMessage(deliver)
                    if delivered >= budget { return index }
                }
            }
        }
        return closeReceived ? buffer.count : index
    }

    /// Delivers the assembled message; returns its size.
    private mutating func deliverMessage(_ deliver: (InboundMessage) -> Void) throws(WebSocketError) -> Int {
        var payload = message
        message = []
        if messageCompressed {
            guard let inflater else { throw .reservedBitsSet }
            payload = try inflater.inflate(payload[FrameWriter.maxHeaderSize...], maxOutput: limits.maxMessageSize)
            if messageOpcode == .text {
                let ok = payload.withUnsafeBytes { UTF8Validator.isValid(UnsafeRawBufferPointer(rebasing: $0[FrameWriter.maxHeaderSize...])) }
                if !ok { throw .invalidUTF8 }
            }
        } else if messageOpcode == .text && !utf8.isComplete {
            throw .invalidUTF8
        }
        let received = ReceivedMessage(storage: payload)
        deliver(messageOpcode == .text ? .text(received) : .binary(received))
        return received.count
    }

    private mutating func deliverControl(_ op: Opcode, _ deliver: (InboundMessage) -> Void) throws(WebSocketError) {
        switch op {
        case .ping: deliver(.ping(control))
        case .pong: deliver(.pong(control))
        case .close:
            closeReceived = true
            if control.isEmpty { deliver(.close(code: nil, reason: "")); return }
            if control.count == 1 { throw .invalidClosePayload }
            let code = CloseCode(UInt16(control[0]) << 8 | UInt16(control[1]))
            guard code.isValidOnWire else { throw .invalidCloseCode(code.rawValue) }
            let reasonBytes = Array(control[2...])
            guard UTF8Validator.isValid(reasonBytes) else { throw .invalidUTF8 }
            deliver(.close(code: code, reason: String(decoding: reasonBytes, as: UTF8.self)))
        default: break
        }
    }
}
