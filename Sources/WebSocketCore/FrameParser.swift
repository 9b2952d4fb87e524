/// Incremental RFC 6455 frame parser: a resumable state machine that can be fed the byte
/// stream split anywhere. It never buffers payloads: it unmasks them in place in the caller's
/// buffer and hands out ranges of it. Only an incomplete header (at most 14 bytes) is kept
/// between calls. Header rules are checked as soon as the header is complete, before any
/// payload byte is looked at.
public struct FrameParser: Sendable {
    public struct Configuration: Sendable {
        /// Largest payload of one frame.
        public var maxFrameSize: Int
        /// Client-to-server frames must be masked; a client-side parser sets this to false.
        public var requireMask: Bool
        /// RSV1 is allowed on the first frame of a data message (permessage-deflate).
        public var allowCompression: Bool
        /// Server-to-client frames must not be masked (RFC 6455 5.1); a client-side parser sets this.
        public var forbidMask: Bool

        public init(maxFrameSize: Int = 16 << 20, requireMask: Bool = true, allowCompression: Bool = false, forbidMask: Bool = false) {
            self.maxFrameSize = maxFrameSize
            self.requireMask = requireMask
            self.allowCompression = allowCompression
            self.forbidMask = forbidMask
        }
    }

    public enum Event: Equatable, Sendable {
        /// A complete, validated header.
        case header(FrameHeader)
        /// Unmasked payload bytes, as a range of the buffer passed to `next`.
        case payload(Range<Int>)
        /// The end of the current frame's payload.
        case end
    }

    private enum State: Sendable {
        case header
        case payload(remaining: Int)
        case end
    }

    public var configuration: Configuration
    private var state: State = .header
    private var headerBytes: [UInt8] = []
    private var current = FrameHeader(opcode: .continuation, length: 0)
    private var payloadOffset = 0
    /// True between the first and the last frame of a fragmented data message.
    public private(set) var inFragmentedMessage = false

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Returns the next event from `buffer` starting at `index` (advanced past what was used),
    /// or nil when more bytes are needed.
    public mutating func next(_ buffer: UnsafeMutableRawBufferPointer, _ index: inout Int) throws(WebSocketError) -> Event? {
        switch state {
        case .end:
            state = .header
            return .end
        case .payload(let remaining):
            let available = buffer.count - index
            guard available > 0 else { return nil }
            let n = min(remaining, available)
            let range = index..<(index + n)
            if let key = current.maskKey {
                Masking.apply(key: key, offset: payloadOffset, to: UnsafeMutableRawBufferPointer(rebasing: buffer[range]))
            }
            payloadOffset += n
            index += n
            state = remaining == n ? .end : .payload(remaining: remaining - n)
            return .payload(range)
        case .header:
            guard let header = try parseHeader(buffer, &index) else { return nil }
            current = header
            payloadOffset = 0
            state = header.length == 0 ? .end : .payload(remaining: header.length)
            return .header(header)
        }
    }

    private mutating func parseHeader(_ buffer: UnsafeMutableRawBufferPointer, _ index: inout Int) throws(WebSocketError) -> FrameHeader? {
        // Gather the header: 2 bytes, then as many as they announce.
        func need() -> Int {
            guard headerBytes.count >= 2 else { return 2 }
            let len7 = headerBytes[1] & 0x7F
            let ext = len7 == 126 ? 2 : (len7 == 127 ? 8 : 0)
            return 2 + ext + (headerBytes[1] & 0x80 != 0 ? 4 : 0)
        }
        // Fast path: the whole header is in the buffer and nothing is carried over.
        if headerBytes.isEmpty && buffer.count - index >= 2 {
            let b1 = buffer[index + 1]
            let len7 = b1 & 0x7F
            let size = 2 + (len7 == 126 ? 2 : (len7 == 127 ? 8 : 0)) + (b1 & 0x80 != 0 ? 4 : 0)
            if buffer.count - index >= size {
                let header = try decodeHeader(UnsafeRawBufferPointer(rebasing: buffer[index..<(index + size)]))
                index += size
                return header
            }
        }
        if headerBytes.capacity < FrameWriter.maxHeaderSize { headerBytes.reserveCapacity(FrameWriter.maxHeaderSize) }
        while index < buffer.count {
            let want = need()
            if headerBytes.count >= want { break }
            headerBytes.append(buffer[index])
            index += 1
        }
        guard headerBytes.count >= 2, headerBytes.count >= need() else { return nil }
        let bytes = headerBytes
        let result = bytes.withUnsafeBytes { raw in Result { () throws(WebSocketError) in try decodeHeader(raw) } }
        let header = try result.get()
        headerBytes.removeAll(keepingCapacity: true)
        return header
    }

    private mutating func decodeHeader(_ h: UnsafeRawBufferPointer) throws(WebSocketError) -> FrameHeader {
        let b0 = h[0], b1 = h[1]
        let fin = b0 & 0x80 != 0
        let rsv1 = b0 & 0x40 != 0, rsv2 = b0 & 0x20 != 0, rsv3 = b0 & 0x10 != 0
        guard let opcode = Opcode(rawValue: b0 & 0x0F) else { throw .reservedOpcode(b0 & 0x0F) }
        let masked = b1 & 0x80 != 0
        if configuration.requireMask && !masked { throw .unmaskedClientFrame }
        if configuration.forbidMask && masked { throw .maskedServerFrame }
        if rsv2 || rsv3 { throw .reservedBitsSet }
        if rsv1 {
            // Only the first frame of a compressed data message may carry RSV1.
            guard configuration.allowCompression, opcode == .text || opcode == .binary else { throw .reservedBitsSet }
        }
        var length: UInt64
        var p = 2
        let len7 = b1 & 0x7F
        if len7 == 126 {
            length = UInt64(h[2]) << 8 | UInt64(h[3])
            p = 4
            if length < 126 { throw .nonMinimalLength }
        } else if len7 == 127 {
            length = 0
            for i in 0..<8 { length = length << 8 | UInt64(h[2 + i]) }
            p = 10
            if length & (1 << 63) != 0 { throw .lengthTopBitSet }
            if length <= 0xFFFF { throw .nonMinimalLength }
        } else {
            length = UInt64(len7)
        }
        if opcode.isControl {
            if !fin { throw .fragmentedControlFrame }
            if length > 125 { throw .controlFrameTooLong }
        } else {
            if opcode == .continuation {
                if !inFragmentedMessage { throw .unexpectedContinuation }
            } else if inFragmentedMessage {
                throw .expectedContinuation
            }
            inFragmentedMessage = !fin
        }
        if length > UInt64(configuration.maxFrameSize) { throw .frameTooLarge }
        var key: UInt32? = nil
        if masked {
            key = UInt32(h[p]) << 24 | UInt32(h[p + 1]) << 16 | UInt32(h[p + 2]) << 8 | UInt32(h[p + 3])
        }
        return FrameHeader(fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3, opcode: opcode, maskKey: key, length: Int(length))
    }
}
