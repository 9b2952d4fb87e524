import CSystem
import Foundation
import Glibc
import SocketServer
import WebSocketCore

/// A WebSocket client connection (RFC 6455, with RFC 7692 permessage-deflate), on the same
/// frame layer as the server. Each connection has one I/O thread that owns its socket, TLS
/// state, parser and compressor; `send` and `close` may be called from any thread.
public final class WebSocket: @unchecked Sendable {
    /// Connection settings.
    public struct Options: Sendable {
        /// Extra request headers (e.g. `Authorization`).
        public var headers: [(String, String)] = []
        /// Offer permessage-deflate.
        public var compression = true
        /// TCP connect, TLS handshake and upgrade together.
        public var connectTimeoutMs = 10_000
        /// A ping goes out after this long without a frame from the server…
        public var pingIntervalMs = 20_000
        /// …and the connection is given up (close 1006) after this long without any frame.
        public var idleTimeoutMs = 40_000
        /// Largest message accepted (after decompression); larger closes with 1009.
        public var maxMessageSize = 64 << 20
        /// A PEM file of certificates to trust besides the system store (e.g. a private CA).
        public var trustedCertificatesFile: String? = nil
        public init() {}
    }

    /// What the connection delivers.
    public enum Event: Sendable {
        case text([UInt8])
        case binary([UInt8])
        /// The connection is gone: the close code and reason the server sent (or 1006 with a
        /// description when the connection broke without a close frame). Always the last event.
        case closed(code: UInt16, reason: String)
    }

    /// Every message received, in order, then exactly one `.closed`.
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    /// The extension agreed in the handshake (nil: none).
    public let deflate: DeflateParameters?

    private enum Outgoing { case message(Opcode, [UInt8]), close(UInt16, String) }
    private let outbox = Locked<(items: [Outgoing], finished: Bool)>((items: [], finished: false))
    private let wake: Int32
    private let socket: ClientSocket
    private let options: Options

    /// Connects, upgrades and starts the connection's thread. Throws `TransportError` (its
    /// `status` and `body` are set when the server refused the upgrade).
    public static func connect(to url: String, options: Options = Options()) async throws -> WebSocket {
        guard let endpoint = Endpoint(url) else { throw TransportError("not a ws:// or wss:// URL: \(url)") }
        return try await runBlocking { () throws(TransportError) in try WebSocket(endpoint: endpoint, options: options) }
    }

    private init(endpoint: Endpoint, options: Options) throws(TransportError) {
        let deadline = nowMillis() + Int64(options.connectTimeoutMs)
        let tls: TLSClientContext?
        do { tls = endpoint.tls ? try TLSClientContext(trustedCertificatesFile: options.trustedCertificatesFile) : nil } catch {
            throw TransportError(error.description)
        }
        socket = try ClientSocket.connect(endpoint, tls: tls, deadline: deadline)
        var keyBytes = [UInt8](repeating: 0, count: 16)
        for i in keyBytes.indices { keyBytes[i] = UInt8.random(in: 0...255) }
        let key = Base64.encode(keyBytes)
        try socket.send(Array(ClientHandshake.requestHead(host: endpoint.hostHeader, target: endpoint.target, key: key,
                                                          offerDeflate: options.compression, extraHeaders: options.headers).utf8))
        try socket.flushAll(deadline: deadline)
        var buffer: [UInt8] = []
        var head: ResponseHead
        while true {
            guard let bytes = try socket.receive(deadline: deadline) else { throw TransportError("the WebSocket upgrade timed out") }
            if bytes.isEmpty { throw TransportError("the server closed the connection during the upgrade") }
            buffer.append(contentsOf: bytes)
            switch ResponseHead.parse(buffer[...]) {
            case .needMore: continue
            case .invalid(let why): throw TransportError("invalid upgrade response: \(why)")
            case .done(let h): head = h
            }
            break
        }
        if head.status != 101 {
            // A refusal: keep its body (the server's JSON error) for the caller.
            var body = Array(buffer[head.length...])
            let length = head.headers["Content-Length"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 0
            while body.count < min(length, 1 << 20), let more = try socket.receive(deadline: deadline), !more.isEmpty {
                body.append(contentsOf: more)
            }
            throw TransportError("the server refused the WebSocket upgrade with HTTP \(head.status)", status: head.status, body: body)
        }
        switch ClientHandshake.validate(status: head.status, headers: head.headers, key: key, offeredDeflate: options.compression) {
        case .failure(let f): throw TransportError(f.description)
        case .success(let d): deflate = d
        }
        self.options = options
        wake = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let leftover = Array(buffer[head.length...])
        let thread = Thread { [self] in self.run(leftover: leftover) }
        thread.name = "websocket"
        thread.start()
    }

    deinit { Glibc.close(wake) }

    /// Sends a text message (UTF-8 bytes).
    public func send(text: [UInt8]) { enqueue(.message(.text, text)) }
    /// Sends a text message.
    public func send(text: String) { enqueue(.message(.text, Array(text.utf8))) }
    /// Sends a binary message.
    public func send(binary: [UInt8]) { enqueue(.message(.binary, binary)) }

    /// Starts the closing handshake; `events` ends with the server's answer.
    public func close(code: UInt16 = 1000, reason: String = "") { enqueue(.close(code, reason)) }

    private func enqueue(_ item: Outgoing) {
        let accepted = outbox.withLock { box -> Bool in
            guard !box.finished else { return false }
            box.items.append(item)
            return true
        }
        guard accepted else { return }
        var one: UInt64 = 1
        _ = Glibc.write(wake, &one, 8)
    }

    // MARK: The connection's thread

    private func run(leftover: [UInt8]) {
        var state = IOState(options: options, deflate: deflate)
        let (code, reason) = state.loop(socket: socket, wake: wake, outbox: outbox, leftover: leftover) { self.continuation.yield($0) }
        outbox.withLock { $0.finished = true; $0.items.removeAll() }
        socket.close()
        continuation.yield(.closed(code: code, reason: reason))
        continuation.finish()
    }

    private struct IOState {
        let options: Options
        var processor: InboundProcessor
        let deflater: Deflater?
        var closeSent = false
        var closeReceived: (UInt16, String)? = nil
        var closeDeadline: Int64? = nil
        var lastReceived = nowMillis()
        var lastPing = nowMillis()

        init(options: Options, deflate: DeflateParameters?) {
            self.options = options
            processor = InboundProcessor(limits: .init(maxFrameSize: options.maxMessageSize, maxMessageSize: options.maxMessageSize),
                                         requireMask: false, forbidMask: true,
                                         inflater: deflate.map { Inflater(resetAfterMessage: $0.serverNoContextTakeover) })
            // zlib cannot compress with an 8-bit window: then messages go out uncompressed
            // (RSV1 is per message, so that is always allowed).
            if let d = deflate, (d.clientMaxWindowBits ?? 15) >= 9 {
                deflater = Deflater(windowBits: d.clientMaxWindowBits ?? 15, resetAfterMessage: d.clientNoContextTakeover)
            } else {
                deflater = nil
            }
        }

        func frame(_ opcode: Opcode, _ payload: [UInt8]) -> [UInt8] {
            let key = UInt32.random(in: 0...UInt32.max)
            if opcode == .text || opcode == .binary, payload.count >= 64, let deflater,
               var compressed = payload.withUnsafeBytes({ deflater.compress($0) }) {
                // `compressed` has header room in front: write the header in place and mask.
                let length = compressed.count - FrameWriter.maxHeaderSize
                let start = compressed.withUnsafeMutableBytes { buf in
                    Masking.apply(key: key, offset: 0, to: UnsafeMutableRawBufferPointer(rebasing: buf[FrameWriter.maxHeaderSize...]))
                    return FrameWriter.writeHeader(FrameHeader(fin: true, rsv1: true, opcode: opcode, maskKey: key, length: length),
                                                   into: buf, endingAt: FrameWriter.maxHeaderSize)
                }
                compressed.removeFirst(start)
                return compressed
            }
            return FrameWriter.frame(opcode, payload: payload, maskKey: key)
        }

        mutating func sendClose(_ socket: ClientSocket, _ code: UInt16, _ reason: String) {
            guard !closeSent else { return }
            closeSent = true
            closeDeadline = nowMillis() + 2_000
            let payload = code == 1005 ? [] : FrameWriter.closePayload(code: CloseCode(code), reason: reason)
            try? socket.send(frame(.close, payload))
        }

        /// Runs until the connection is closed; returns the close code and reason to report.
        mutating func loop(socket: ClientSocket, wake: Int32, outbox: Locked<(items: [Outgoing], finished: Bool)>,
                           leftover: [UInt8], deliver: (Event) -> Void) -> (UInt16, String) {
            var pendingInput = leftover
            while true {
                do {
                    // Input first (the handshake may have read frames along with the head).
                    var input = pendingInput
                    pendingInput = []
                    while true {
                        if !input.isEmpty {
                            lastReceived = nowMillis()
                            if let end = try process(&input, socket: socket, deliver: deliver) { return end }
                        }
                        guard closeReceived == nil || !closeSent else { break }
                        guard let more = try socket.receive() else { break }
                        if more.isEmpty {
                            if let (c, r) = closeReceived { return (c, r) }
                            return (1006, "the connection closed without a close frame")
                        }
                        input = more
                    }
                    for item in outbox.withLock({ box -> [Outgoing] in defer { box.items.removeAll() }; return box.items }) {
                        switch item {
                        case .message(let op, let payload): if !closeSent { try socket.send(frame(op, payload)) }
                        case .close(let code, let reason): sendClose(socket, code, reason)
                        }
                    }
                    let now = nowMillis()
                    if closeDeadline == nil {
                        if now - lastReceived >= Int64(options.idleTimeoutMs) {
                            return (1006, "no frame from the server for \(options.idleTimeoutMs) ms")
                        }
                        if now - max(lastReceived, lastPing) >= Int64(options.pingIntervalMs) {
                            lastPing = now
                            try socket.send(frame(.ping, []))
                        }
                    }
                    try socket.flush()
                    if let (c, r) = closeReceived, closeSent, !socket.hasPendingOutput {
                        // The server closes TCP first (RFC 6455 7.1.1); wait briefly for it.
                        _ = try? socket.receive(deadline: nowMillis() + 1_000)
                        return (c, r)
                    }
                    if let d = closeDeadline, now >= d { return closeReceived ?? (1006, "no answer to our close frame") }
                    var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN) | (socket.hasPendingOutput ? Int16(POLLOUT) : 0), revents: 0),
                               pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
                    let nextPing = max(lastReceived, lastPing) + Int64(options.pingIntervalMs)
                    let wait = min(max(nextPing - now, 0), closeDeadline.map { max($0 - now, 0) } ?? 1_000, 1_000)
                    _ = poll(&fds, 2, Int32(wait))
                    if fds[1].revents != 0 { var n: UInt64 = 0; _ = Glibc.read(wake, &n, 8) }
                } catch {
                    return (1006, error.description)
                }
            }
        }

        /// Feeds received bytes through the frame layer. Returns a close to report when the
        /// connection must end now (a protocol violation by the server).
        mutating func process(_ input: inout [UInt8], socket: ClientSocket, deliver: (Event) -> Void) throws(TransportError) -> (UInt16, String)? {
            var controls: [InboundMessage] = []
            var processor = self.processor
            let outcome = input.withUnsafeMutableBytes { buf in
                Result { () throws(WebSocketError) in
                    _ = try processor.process(buf) { m in
                        switch m {
                        case .text(let r): deliver(.text(Array(r.bytes)))
                        case .binary(let r): deliver(.binary(Array(r.bytes)))
                        default: controls.append(m)
                        }
                    }
                }
            }
            self.processor = processor
            if case .failure(let error) = outcome {
                sendClose(socket, error.closeCode.rawValue, error.reason)
                try? socket.flushAll(deadline: nowMillis() + 1_000)
                return (error.closeCode.rawValue, "closed by the client: \(error.reason)")
            }
            input = []
            for c in controls {
                switch c {
                case .ping(let payload): if !closeSent { try socket.send(frame(.pong, payload)) }
                case .close(let code, let reason):
                    closeReceived = (code?.rawValue ?? 1005, reason)
                    // Echo the code (RFC 6455 5.5.1) unless we closed first.
                    sendClose(socket, code?.rawValue ?? 1005, "")
                default: break
                }
            }
            return nil
        }
    }
}

/// Runs blocking work on its own thread and resumes the caller with its result.
func runBlocking<T: Sendable>(_ work: @escaping @Sendable () throws(TransportError) -> T) async throws(TransportError) -> T {
    let result: Result<T, TransportError> = await withCheckedContinuation { c in
        let thread = Thread {
            do throws(TransportError) { c.resume(returning: .success(try work())) } catch { c.resume(returning: .failure(error)) }
        }
        thread.start()
    }
    return try result.get()
}
