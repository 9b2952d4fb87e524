import CZlib

/// The permessage-deflate parameters agreed in the handshake (RFC 7692 section 7).
public struct DeflateParameters: Equatable, Sendable {
    public var serverNoContextTakeover = false
    public var clientNoContextTakeover = false
    /// Window of the server's compressor (9...15; 8 is never agreed, zlib cannot do it).
    public var serverMaxWindowBits = 15
    /// Window of the client's compressor, when the response states one.
    public var clientMaxWindowBits: Int? = nil

    public init(serverNoContextTakeover: Bool = false, clientNoContextTakeover: Bool = false,
                serverMaxWindowBits: Int = 15, clientMaxWindowBits: Int? = nil) {
        self.serverNoContextTakeover = serverNoContextTakeover
        self.clientNoContextTakeover = clientNoContextTakeover
        self.serverMaxWindowBits = serverMaxWindowBits
        self.clientMaxWindowBits = clientMaxWindowBits
    }

    /// The `Sec-WebSocket-Extensions` response value.
    public var headerValue: String {
        var parts = ["permessage-deflate"]
        if serverNoContextTakeover { parts.append("server_no_context_takeover") }
        if clientNoContextTakeover { parts.append("client_no_context_takeover") }
        if serverMaxWindowBits < 15 { parts.append("server_max_window_bits=\(serverMaxWindowBits)") }
        if let c = clientMaxWindowBits { parts.append("client_max_window_bits=\(c)") }
        return parts.joined(separator: "; ")
    }
}

/// What the server is willing to agree to.
public struct DeflatePolicy: Sendable, Equatable {
    /// Keep compression contexts between messages. Off by default: every connection then
    /// shares its thread's zlib streams and an idle compressed connection costs no zlib memory.
    public var contextTakeover: Bool
    /// Window of our compressor when it keeps context (9...15).
    public var serverWindowBits: Int
    public var memLevel: Int
    /// Messages shorter than this go out uncompressed.
    public var threshold: Int

    public init(contextTakeover: Bool = false, serverWindowBits: Int = 15, memLevel: Int = 8, threshold: Int = 64) {
        self.contextTakeover = contextTakeover
        self.serverWindowBits = serverWindowBits
        self.memLevel = memLevel
        self.threshold = threshold
    }
}

/// Raw-deflate decompressor for one stream of messages. Always inflates with a 32 KiB window,
/// which decodes data compressed with any smaller window. zlib state is created on first use.
public final class Inflater: @unchecked Sendable {
    // Confined to one thread (the connection's event loop): the class is only handed around
    // so that connections of one loop can share it.
    private var stream: UnsafeMutablePointer<z_stream>?
    private let resetAfterMessage: Bool
    private static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    public init(resetAfterMessage: Bool) { self.resetAfterMessage = resetAfterMessage }

    deinit {
        if let stream { inflateEnd(stream); stream.deallocate() }
    }

    private func ensureStream() throws(WebSocketError) -> UnsafeMutablePointer<z_stream> {
        if let stream { return stream }
        let s = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        s.initialize(to: z_stream())
        guard sb_inflateInit2(s, -15) == Z_OK else { s.deallocate(); throw .compressionFailed }
        stream = s
        return s
    }

    /// Inflates one message. The result keeps `FrameWriter.maxHeaderSize` bytes of header room
    /// in front. Stops with `messageTooLarge` as soon as the output passes `maxOutput`, so a
    /// compression bomb never gets the memory it asks for.
    public func inflate(_ input: ArraySlice<UInt8>, maxOutput: Int) throws(WebSocketError) -> [UInt8] {
        let s = try ensureStream()
        let room = FrameWriter.maxHeaderSize
        var out = [UInt8](repeating: 0, count: room + min(max(input.count * 4, 1024), maxOutput + 1))
        var produced = 0
        func run(_ chunk: UnsafeRawBufferPointer) throws(WebSocketError) {
            guard chunk.count > 0 else { return }
            s.pointee.next_in = UnsafeMutablePointer(mutating: chunk.baseAddress!.assumingMemoryBound(to: Bytef.self))
            s.pointee.avail_in = uInt(chunk.count)
            while true {
                if room + produced == out.count {
                    // Grow geometrically, but never past one byte more than the limit.
                    out.append(contentsOf: repeatElement(0, count: max(1, min(out.count, maxOutput + 1 - produced))))
                }
                let space = out.count - room - produced
                let rc: Int32 = out.withUnsafeMutableBytes { buf in
                    s.pointee.next_out = buf.baseAddress!.advanced(by: room + produced).assumingMemoryBound(to: Bytef.self)
                    s.pointee.avail_out = uInt(space)
                    return CZlib.inflate(s, Z_SYNC_FLUSH)
                }
                produced += space - Int(s.pointee.avail_out)
                if produced > maxOutput { throw .messageTooLarge }
                switch rc {
                case Z_STREAM_END:
                    // The peer ended its deflate stream (BFINAL); start a fresh one for what follows.
                    inflateReset(s)
                    if s.pointee.avail_in == 0 { return }
                case Z_OK:
                    if s.pointee.avail_in == 0 && s.pointee.avail_out > 0 { return }
                case Z_BUF_ERROR:
                    if s.pointee.avail_in == 0 { return }
                default:
                    throw .compressionFailed
                }
            }
        }
        var result = input.withUnsafeBytes { buf in Result { () throws(WebSocketError) in try run(buf) } }
        if case .success = result {
            result = Inflater.tail.withUnsafeBytes { buf in Result { () throws(WebSocketError) in try run(buf) } }
        }
        if case .failure(let error) = result {
            inflateReset(s)
            throw error
        }
        if resetAfterMessage { inflateReset(s) }
        out.removeSubrange((room + produced)...)
        return out
    }
}

/// Raw-deflate compressor for one stream of messages (or, without context takeover, for every
/// connection of a thread). zlib state is created on first use.
public final class Deflater: @unchecked Sendable {
    // Confined to one thread, like `Inflater`.
    private var stream: UnsafeMutablePointer<z_stream>?
    private let windowBits: Int32
    private let memLevel: Int32
    private let resetAfterMessage: Bool

    public init(windowBits: Int, memLevel: Int = 8, resetAfterMessage: Bool) {
        self.windowBits = Int32(max(9, min(15, windowBits)))
        self.memLevel = Int32(max(1, min(9, memLevel)))
        self.resetAfterMessage = resetAfterMessage
    }

    deinit {
        if let stream { deflateEnd(stream); stream.deallocate() }
    }

    /// Compresses `payload` into a new buffer with header room in front, without the final
    /// `00 00 ff ff` (RFC 7692 section 7.2.1). Returns nil if zlib fails (the caller then
    /// sends the message uncompressed).
    public func compress(_ payload: UnsafeRawBufferPointer) -> [UInt8]? {
        if stream == nil {
            let s = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            s.initialize(to: z_stream())
            // Level 1: a relay compresses every message on the hot path, so speed comes before
            // ratio (scripts/chaos.py: slow consumers' p99 fell from 457 ms to 206 ms with it).
            guard sb_deflateInit2(s, Z_BEST_SPEED, -windowBits, memLevel) == Z_OK else { s.deallocate(); return nil }
            stream = s
        }
        let s = stream!
        let room = FrameWriter.maxHeaderSize
        var out = [UInt8](repeating: 0, count: room + Int(deflateBound(s, uLong(payload.count))) + 16)
        var produced = 0
        s.pointee.next_in = UnsafeMutablePointer(mutating: payload.baseAddress?.assumingMemoryBound(to: Bytef.self))
        s.pointee.avail_in = uInt(payload.count)
        while true {
            if room + produced == out.count { out.append(contentsOf: repeatElement(0, count: out.count)) }
            let space = out.count - room - produced
            let rc: Int32 = out.withUnsafeMutableBytes { buf in
                s.pointee.next_out = buf.baseAddress!.advanced(by: room + produced).assumingMemoryBound(to: Bytef.self)
                s.pointee.avail_out = uInt(space)
                return deflate(s, Z_SYNC_FLUSH)
            }
            produced += space - Int(s.pointee.avail_out)
            guard rc == Z_OK || rc == Z_BUF_ERROR else { deflateReset(s); return nil }
            if s.pointee.avail_out > 0 { break }
        }
        if resetAfterMessage { deflateReset(s) }
        // A sync flush ends with an empty stored block 00 00 ff ff, which is not sent.
        guard produced >= 4 else { return nil }
        out.removeSubrange((room + produced - 4)...)
        return out
    }
}
