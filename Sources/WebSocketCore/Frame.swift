/// WebSocket opcodes (RFC 6455 section 5.2).
public enum Opcode: UInt8, Sendable {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// A parsed frame header. `length` is the payload length; `maskKey` is nil for unmasked frames.
public struct FrameHeader: Equatable, Sendable {
    public var fin: Bool
    public var rsv1: Bool
    public var rsv2: Bool
    public var rsv3: Bool
    public var opcode: Opcode
    public var maskKey: UInt32?
    public var length: Int

    public init(fin: Bool = true, rsv1: Bool = false, rsv2: Bool = false, rsv3: Bool = false,
                opcode: Opcode, maskKey: UInt32? = nil, length: Int) {
        self.fin = fin; self.rsv1 = rsv1; self.rsv2 = rsv2; self.rsv3 = rsv3
        self.opcode = opcode; self.maskKey = maskKey; self.length = length
    }
}

/// XOR masking (RFC 6455 section 5.3), in place, eight bytes at a time.
/// `offset` is the position of `bytes` within the frame payload, so a payload can be
/// unmasked in pieces.
public enum Masking {
    public static func apply(key: UInt32, offset: Int, to bytes: UnsafeMutableRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        @inline(__always) func keyByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: key >> (24 - 8 * UInt32(i & 3))) }
        let count = bytes.count
        var i = 0
        var phase = offset & 3
        // Head: byte by byte until the key lines up with its first byte.
        while i < count && phase != 0 {
            base.storeBytes(of: base.load(fromByteOffset: i, as: UInt8.self) ^ keyByte(phase), toByteOffset: i, as: UInt8.self)
            i += 1
            phase = (phase + 1) & 3
        }
        // The key repeated over eight bytes in memory order, whatever the endianness.
        var word: UInt64 = 0
        withUnsafeMutableBytes(of: &word) { w in
            for j in 0..<8 { w[j] = keyByte(j) }
        }
        // Sixteen bytes at a time (one vector XOR), then eight, then the last few.
        let block = unsafeBitCast(SIMD2<UInt64>(repeating: word), to: SIMD16<UInt8>.self)
        while i + 16 <= count {
            let v = (base + i).loadUnaligned(as: SIMD16<UInt8>.self) ^ block
            (base + i).storeBytes(of: v, as: SIMD16<UInt8>.self)
            i += 16
        }
        while i + 8 <= count {
            let v = (base + i).loadUnaligned(as: UInt64.self) ^ word
            (base + i).storeBytes(of: v, as: UInt64.self)
            i += 8
        }
        var j = 0
        while i < count {
            base.storeBytes(of: base.load(fromByteOffset: i, as: UInt8.self) ^ keyByte(j), toByteOffset: i, as: UInt8.self)
            i += 1
            j += 1
        }
    }

    public static func apply(key: UInt32, offset: Int = 0, to bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { apply(key: key, offset: offset, to: $0) }
    }
}

/// Writes frame headers. Server frames are unmasked; a client (tests, tools) passes a mask key.
public enum FrameWriter {
    /// Largest header: 2 + 8 length bytes + 4 mask bytes.
    public static let maxHeaderSize = 14

    /// A message buffer: `maxHeaderSize` zero bytes of header room, with capacity for
    /// `payload` bytes after them, in one allocation.
    public static func headerRoom(for payload: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: maxHeaderSize + max(payload, 0)) { room, count in
            room.baseAddress!.initialize(repeating: 0, count: maxHeaderSize)
            count = maxHeaderSize
        }
    }

    /// `bytes` after header room, in one allocation.
    public static func withHeaderRoom(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var storage = headerRoom(for: bytes.count)
        storage.append(contentsOf: bytes)
        return storage
    }

    public static func headerSize(length: Int, masked: Bool) -> Int {
        let base = length < 126 ? 2 : (length <= 0xFFFF ? 4 : 10)
        return base + (masked ? 4 : 0)
    }

    /// Writes the header into `buffer` ending exactly at `end` and returns where it starts.
    /// Used with buffers that keep `maxHeaderSize` bytes of room before the payload.
    @discardableResult
    public static func writeHeader(_ header: FrameHeader, into buffer: UnsafeMutableRawBufferPointer, endingAt end: Int) -> Int {
        let size = headerSize(length: header.length, masked: header.maskKey != nil)
        let start = end - size
        precondition(start >= 0, "not enough header room")
        var b0: UInt8 = header.opcode.rawValue
        if header.fin { b0 |= 0x80 }
        if header.rsv1 { b0 |= 0x40 }
        if header.rsv2 { b0 |= 0x20 }
        if header.rsv3 { b0 |= 0x10 }
        buffer[start] = b0
        let maskBit: UInt8 = header.maskKey != nil ? 0x80 : 0
        var p = start + 1
        if header.length < 126 {
            buffer[p] = maskBit | UInt8(header.length); p += 1
        } else if header.length <= 0xFFFF {
            buffer[p] = maskBit | 126
            buffer[p + 1] = UInt8(header.length >> 8)
            buffer[p + 2] = UInt8(header.length & 0xFF)
            p += 3
        } else {
            buffer[p] = maskBit | 127
            let len = UInt64(header.length)
            for i in 0..<8 { buffer[p + 1 + i] = UInt8(truncatingIfNeeded: len >> (56 - 8 * UInt64(i))) }
            p += 9
        }
        if let key = header.maskKey {
            buffer[p] = UInt8(truncatingIfNeeded: key >> 24)
            buffer[p + 1] = UInt8(truncatingIfNeeded: key >> 16)
            buffer[p + 2] = UInt8(truncatingIfNeeded: key >> 8)
            buffer[p + 3] = UInt8(truncatingIfNeeded: key)
        }
        return start
    }

    /// A complete frame as a new array (control frames, tests, clients).
    public static func frame(_ opcode: Opcode, payload: [UInt8], fin: Bool = true, rsv1: Bool = false, maskKey: UInt32? = nil) -> [UInt8] {
        let header = FrameHeader(fin: fin, rsv1: rsv1, opcode: opcode, maskKey: maskKey, length: payload.count)
        let size = headerSize(length: payload.count, masked: maskKey != nil)
        var out = [UInt8](repeating: 0, count: size + payload.count)
        out.withUnsafeMutableBytes { buf in
            writeHeader(header, into: buf, endingAt: size)
            if !payload.isEmpty {
                payload.withUnsafeBytes { src in
                    UnsafeMutableRawBufferPointer(rebasing: buf[size...]).copyMemory(from: src)
                }
                if let key = maskKey {
                    Masking.apply(key: key, offset: 0, to: UnsafeMutableRawBufferPointer(rebasing: buf[size...]))
                }
            }
        }
        return out
    }

    /// The payload of a close frame: code then UTF-8 reason (reason cut to fit 125 bytes).
    public static func closePayload(code: CloseCode?, reason: String = "") -> [UInt8] {
        guard let code else { return [] }
        var out: [UInt8] = [UInt8(code.rawValue >> 8), UInt8(code.rawValue & 0xFF)]
        var r = Array(reason.utf8)
        if r.count > 123 {
            r = Array(r[0..<123])
            while !r.isEmpty && !UTF8Validator.isValid(r) { r.removeLast() }
        }
        out.append(contentsOf: r)
        return out
    }
}

/// A buffer for one outbound message that keeps room for the frame header in front of the
/// payload, so the header is written in place and the frame leaves in one piece, uncopied.
public struct OutboundMessage: Sendable {
    public var storage: [UInt8]
    /// Where the frame starts once `seal` has written the header.
    public private(set) var start: Int

    public init(capacity: Int = 256) {
        storage = FrameWriter.headerRoom(for: capacity)
        start = FrameWriter.maxHeaderSize
    }

    /// Wraps an existing array whose first `maxHeaderSize` bytes are header room.
    public init(reserved storage: [UInt8]) {
        precondition(storage.count >= FrameWriter.maxHeaderSize)
        self.storage = storage
        start = FrameWriter.maxHeaderSize
    }

    public var payloadCount: Int { storage.count - FrameWriter.maxHeaderSize }

    public mutating func append(_ byte: UInt8) { storage.append(byte) }
    public mutating func append<S: Sequence>(contentsOf bytes: S) where S.Element == UInt8 { storage.append(contentsOf: bytes) }
    public mutating func append(_ string: String) { storage.append(contentsOf: string.utf8) }

    /// Writes the header for `opcode` in front of the payload.
    public mutating func seal(_ opcode: Opcode, rsv1: Bool = false) {
        let header = FrameHeader(fin: true, rsv1: rsv1, opcode: opcode, length: payloadCount)
        start = storage.withUnsafeMutableBytes { FrameWriter.writeHeader(header, into: $0, endingAt: FrameWriter.maxHeaderSize) }
    }
}
