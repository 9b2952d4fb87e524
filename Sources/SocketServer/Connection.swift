import Glibc
import CSystem
import WebSocketCore

/// Receives the messages of one WebSocket connection, in order, on the loop thread.
public protocol WebSocketHandler: AnyObject {
    func webSocketDidOpen(_ connection: Connection)
    func webSocket(_ connection: Connection, didReceiveText message: ReceivedMessage)
    func webSocket(_ connection: Connection, didReceiveBinary message: ReceivedMessage)
    /// Called once, when the socket is gone, with the code of the close handshake
    /// (1006 when the peer vanished without one).
    func webSocketDidClose(_ connection: Connection, code: CloseCode)
}

public enum UpgradeDecision {
    case accept(WebSocketHandler)
    case refuse(HTTPResponse)
}

/// The application above the socket layer: plain HTTP requests and WebSocket upgrades.
public protocol ServerDelegate: AnyObject {
    /// A plain HTTP request. Answer with `connection.respond(_:)`, now or later (on the loop).
    func handle(_ request: HTTPRequest, on connection: Connection)
    /// A valid WebSocket upgrade request: accept it with a handler or refuse it.
    func upgrade(_ request: HTTPRequest, on connection: Connection) -> UpgradeDecision
}

/// One accepted TCP connection: HTTP/1.1 until an upgrade, then WebSocket. Confined to its
/// event loop's thread. Outbound data goes through a bounded write queue; reads pause while
/// the queue is above its high-water mark.
public final class Connection: Selectable, @unchecked Sendable {
    private enum Phase { case http, webSocket, lingering, closed }

    public let fd: Int32
    public let remoteAddress: String
    /// The peer's IP address (no port).
    public let ip: String
    public unowned let server: Server
    public var loop: EventLoop { server.loop }
    private var config: ServerConfiguration { server.configuration }

    private var phase = Phase.http
    private var http: HTTPRequestParser
    private var awaitingResponse = false
    private var inProcessHTTP = false
    private var keepAlive = true
    private var inbound = InboundProcessor()
    private var closer = CloseStateMachine()
    public private(set) var handler: WebSocketHandler?
    private var deflater: Deflater?
    /// Negotiated permessage-deflate parameters, if any.
    public private(set) var deflate: DeflateParameters?

    // Write queue: buffers with the offset of their first unwritten byte.
    private var queue: [(bytes: [UInt8], offset: Int)] = []
    private var queueHead = 0
    public private(set) var queuedBytes = 0
    private var interest: Interest = .read
    private var readPaused = false
    private var closeAfterFlush = false

    // Liveness, in monotonic nanoseconds.
    private var lastReceived: UInt64
    private var lastPing: UInt64
    private var deadline: UInt64
    public private(set) var bytesIn = 0
    public private(set) var bytesOut = 0

    /// Free for the application (e.g. which session and role this connection serves).
    public var context: AnyObject?
    /// TLS, when the server has a certificate: bytes pass through it both ways.
    private let tls: TLSSession?
    private var firstByteSeen = false
    /// Set once upgraded (stays set through closing).
    public private(set) var wasWebSocket = false

    init(fd: Int32, remote: String, ip: String, server: Server) {
        self.fd = fd
        remoteAddress = remote
        self.ip = ip
        self.server = server
        http = HTTPRequestParser(limits: server.configuration.httpLimits)
        tls = server.tls.map { TLSSession(context: $0) }
        let now = server.loop.now
        lastReceived = now
        lastPing = now
        deadline = now &+ UInt64(server.configuration.handshakeTimeoutMs) * 1_000_000
    }

    public var isWebSocket: Bool { phase == .webSocket }

    /// Lowers the largest message (after decompression) this connection accepts.
    public func limitMessages(to bytes: Int) { inbound.limitMessages(to: bytes) }
    public var isOpen: Bool { phase == .webSocket && closer.isOpen }

    // MARK: Reading

    public func readable() {
        guard phase != .closed else { return }
        let buf = loop.readBuffer
        let n = Glibc.read(fd, buf.baseAddress, buf.count)
        if n > 0 {
            lastReceived = loop.now
            bytesIn += n
            if let tls {
                receivedCiphertext(UnsafeRawBufferPointer(rebasing: buf[0..<n]), tls)
            } else {
                received(UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]))
            }
        } else if n == 0 {
            teardown()
        } else if errno != EAGAIN && errno != EINTR {
            teardown()
        }
    }

    private func receivedCiphertext(_ bytes: UnsafeRawBufferPointer, _ tls: TLSSession) {
        if !firstByteSeen {
            firstByteSeen = true
            // Not a TLS record (0x16): someone speaks plain HTTP to the TLS port. Say so, in plain text.
            if bytes[0] != 0x16 {
                keepAlive = false
                let body = Connection.errorJSON(code: "bad_request", message: "this port speaks TLS: use https:// or wss://")
                rawEnqueue(HTTPResponse(status: 400, json: body).serialize(keepAlive: false), from: 0)
                closeAfterFlush = true
                flushIfIdle()
                return
            }
        }
        tls.feed(bytes)
        let plain = loop.plainBuffer
        while phase != .closed {
            let m = tls.read(into: plain)
            guard m > 0 else { break }
            received(UnsafeMutableRawBufferPointer(rebasing: plain[0..<m]))
        }
        if phase != .closed, let out = tls.takeOutput() { rawEnqueue(out, from: 0) }
        if tls.failed || tls.peerClosed {
            closeAfterFlush = true
            flushIfIdle()
        }
    }

    private func received(_ bytes: UnsafeMutableRawBufferPointer) {
        switch phase {
        case .http:
            http.append(UnsafeRawBufferPointer(bytes))
            processHTTP()
        case .webSocket:
            processFrames(bytes)
        case .lingering, .closed:
            break // discard until the peer closes
        }
    }

    /// Received bytes not processed yet: the connection used its work budget for this loop
    /// iteration. While any wait, reads pause (see `updateInterest`).
    private var backlog: [UInt8] = []

    private func processFrames(_ bytes: UnsafeMutableRawBufferPointer) {
        if !backlog.isEmpty { backlog.append(contentsOf: bytes); return }
        do {
            let used = try inbound.process(bytes, budget: config.inboundBytesPerIteration) { message in self.deliver(message) }
            guard used < bytes.count, phase == .webSocket else { return }
            backlog.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[used...]))
            updateInterest()
            loop.execute { [weak self] in self?.drainBacklog() }
        } catch {
            fail(error.closeCode, reason: error.reason)
        }
    }

    /// Goes on with a backlog, one budget per loop iteration.
    private func drainBacklog() {
        guard phase == .webSocket, !backlog.isEmpty else { backlog = []; return }
        var work = backlog
        backlog = []
        work.withUnsafeMutableBytes { processFrames($0) }
        if backlog.isEmpty { updateInterest() }
    }

    private func deliver(_ message: InboundMessage) {
        switch message {
        case .text(let m):
            if closer.isOpen { handler?.webSocket(self, didReceiveText: m) }
        case .binary(let m):
            if closer.isOpen { handler?.webSocket(self, didReceiveBinary: m) }
        case .ping(let payload):
            if closer.isOpen { enqueue(FrameWriter.frame(.pong, payload: payload), from: 0) }
        case .pong:
            break
        case .close(let code, _):
            run(closer.receivedClose(code))
        }
    }

    // MARK: HTTP

    /// Serves the buffered requests one after the other, iteratively: a response given during
    /// `handle` lets the loop continue (no recursion per pipelined request). Stops while a
    /// response is outstanding or too many response bytes wait for the peer to read them.
    private func processHTTP() {
        guard !inProcessHTTP else { return }
        inProcessHTTP = true
        defer { inProcessHTTP = false; updateInterest() }
        while phase == .http && !awaitingResponse && queuedBytes <= config.maxQueuedHTTPBytes {
            let request: HTTPRequest?
            do {
                request = try http.next()
            } catch {
                keepAlive = false
                let code = error.status == 413 || error.status == 431 ? "too_large" : "bad_request"
                respond(HTTPResponse(status: error.status, json: Connection.errorJSON(code: code, message: error.message)))
                return
            }
            guard var request else { return }
            request.remoteAddress = remoteAddress
            if request.version == "HTTP/1.0" || request.headers.tokens("Connection").contains("close") { keepAlive = false }
            if Handshake.isUpgradeRequest(request.headers) {
                upgrade(request)
                return
            }
            awaitingResponse = true
            server.delegate?.handle(request, on: self)
        }
    }

    private func upgrade(_ request: HTTPRequest) {
        switch Handshake.validate(method: request.method, version: request.version, headers: request.headers,
                                  deflate: config.deflate) {
        case .failure(let refusal):
            keepAlive = false
            var response = HTTPResponse(status: refusal.status, json: Connection.errorJSON(code: "bad_request", message: refusal.message))
            response.headers.append(contentsOf: refusal.headers)
            respond(response)
        case .success(let accept):
            guard let delegate = server.delegate else { return }
            switch delegate.upgrade(request, on: self) {
            case .refuse(let response):
                keepAlive = false
                respond(response)
            case .accept(let handler):
                var inflater: Inflater? = nil
                if let d = accept.deflate {
                    deflate = d
                    inflater = d.clientNoContextTakeover ? server.sharedInflater() : Inflater(resetAfterMessage: false)
                    deflater = d.serverNoContextTakeover ? server.sharedDeflater(windowBits: d.serverMaxWindowBits)
                        : Deflater(windowBits: d.serverMaxWindowBits, memLevel: config.deflate?.memLevel ?? 8, resetAfterMessage: false)
                }
                inbound = InboundProcessor(limits: .init(maxFrameSize: config.maxFrameSize, maxMessageSize: config.maxMessageSize),
                                           requireMask: true, inflater: inflater)
                self.handler = handler
                phase = .webSocket
                wasWebSocket = true
                server.webSocketOpened()
                deadline = 0
                lastPing = loop.now
                enqueue(Array(accept.responseHead.utf8), from: 0)
                let rest = http.takeRemainder()
                http = HTTPRequestParser(limits: .init(maxHeadSize: 0, maxHeaders: 0, maxBodySize: 0))
                handler.webSocketDidOpen(self)
                if !rest.isEmpty && phase == .webSocket {
                    var copy = rest
                    copy.withUnsafeMutableBytes { processFrames($0) }
                }
            }
        }
    }

    /// Answers the current HTTP request. Later requests on a keep-alive connection follow.
    public func respond(_ response: HTTPResponse, headOnly: Bool = false) {
        guard phase == .http else { return }
        awaitingResponse = false
        enqueue(response.serialize(keepAlive: keepAlive, headOnly: headOnly), from: 0)
        if !keepAlive {
            closeAfterFlush = true
            flushIfIdle()
        } else {
            deadline = loop.now &+ UInt64(config.idleHTTPTimeoutMs) * 1_000_000
            if http.bufferedCount > 0 { processHTTP() }   // a no-op when called from processHTTP
        }
    }

    static func errorJSON(code: String, message: String) -> String {
        "{\"error\":{\"code\":\"\(code)\",\"message\":\(jsonString(message))}}"
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    // MARK: Sending WebSocket messages

    /// Sends a text message built in an `OutboundMessage` (header room in front).
    public func send(text message: OutboundMessage) { send(message, opcode: .text) }

    public func send(text: String) {
        var m = OutboundMessage(capacity: text.utf8.count)
        m.append(text)
        send(m, opcode: .text)
    }

    public func send(_ message: consuming OutboundMessage, opcode: Opcode) {
        guard isOpen else { return }
        var m = message
        if let deflater, let policy = config.deflate, m.payloadCount >= policy.threshold,
           let compressed = m.storage.withUnsafeBytes({ deflater.compress(UnsafeRawBufferPointer(rebasing: $0[FrameWriter.maxHeaderSize...])) }) {
            m = OutboundMessage(reserved: compressed)
            m.seal(opcode, rsv1: true)
        } else {
            m.seal(opcode)
        }
        enqueue(m.storage, from: m.start)
    }

    public func sendPing() {
        guard isOpen else { return }
        lastPing = loop.now
        enqueue(FrameWriter.frame(.ping, payload: []), from: 0)
    }

    /// Starts the closing handshake. The handler hears `webSocketDidClose` when the socket is gone.
    public func close(_ code: CloseCode, reason: String = "") {
        switch phase {
        case .webSocket: run(closer.close(code, reason: reason))
        case .http: keepAlive = false; closeAfterFlush = true; if !awaitingResponse { flushIfIdle() }
        case .lingering, .closed: break
        }
    }

    /// Fails the connection: sends `code` and closes without waiting for the peer.
    public func fail(_ code: CloseCode, reason: String) {
        guard phase == .webSocket else { teardown(); return }
        run(closer.fail(code, reason: reason))
    }

    private func run(_ actions: [CloseStateMachine.Action]) {
        for action in actions {
            switch action {
            case .sendClose(let code, let reason):
                enqueue(FrameWriter.frame(.close, payload: FrameWriter.closePayload(code: code, reason: reason)), from: 0)
            case .awaitPeerClose:
                deadline = loop.now &+ UInt64(config.closeTimeoutMs) * 1_000_000
            case .closeSocketAfterFlush:
                closeAfterFlush = true
                flushIfIdle()
            case .none:
                break
            }
        }
    }

    // MARK: Write queue

    func enqueueFrame(_ bytes: [UInt8], from start: Int) { enqueue(bytes, from: start) }

    /// Queues bytes for the peer, through TLS when it is on.
    private func enqueue(_ bytes: [UInt8], from start: Int) {
        guard let tls else { rawEnqueue(bytes, from: start); return }
        guard phase == .http || phase == .webSocket, start < bytes.count else { return }
        let ok = bytes.withUnsafeBytes { tls.write(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        if let out = tls.takeOutput() { rawEnqueue(out, from: 0) }
        if !ok { scheduleTeardown() }
    }

    private func rawEnqueue(_ bytes: [UInt8], from start: Int) {
        guard phase == .http || phase == .webSocket, start < bytes.count else { return }
        if queueHead == queue.count {
            // Nothing queued: try to write straight away.
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + start, $0.count - start) }
            if n == bytes.count - start { bytesOut += n; return }
            if n < 0 && errno != EAGAIN && errno != EINTR { scheduleTeardown(); return }
            let written = max(n, 0)
            bytesOut += written
            queue.append((bytes, start + written))
            queuedBytes += bytes.count - start - written
        } else {
            // A backlog: the peer has not taken what was queued before. One message may be
            // larger than the limit; a message that arrives while the queue already holds
            // more than the limit means the peer is too slow.
            if queuedBytes > config.maxQueuedBytes && phase == .webSocket && closer.isOpen {
                overflow()
                return
            }
            queue.append((bytes, start))
            queuedBytes += bytes.count - start
        }
        updateInterest()
    }

    /// The peer reads too slowly: drop what it has not started to receive and close with 4008.
    private func overflow() {
        // Keep the head buffer: it may be half written, and a frame must not be cut.
        queue.removeSubrange((queueHead + 1)...)
        queuedBytes = queue[queueHead...].reduce(0) { $0 + $1.bytes.count - $1.offset }
        run(closer.fail(.tooSlow, reason: "send queue overflow"))
        deadline = loop.now &+ UInt64(config.closeTimeoutMs) * 1_000_000
        updateInterest()
    }

    public func writable() {
        guard phase != .closed else { return }
        flush()
    }

    private func flush() {
        while queueHead < queue.count {
            let count = min(queue.count - queueHead, 64)
            var iov = [iovec](repeating: iovec(), count: count)
            var total = 0
            // The arrays stay alive in `queue` for the duration of writev.
            for i in 0..<count {
                let entry = queue[queueHead + i]
                entry.bytes.withUnsafeBytes { b in
                    iov[i] = iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress! + entry.offset), iov_len: b.count - entry.offset)
                }
                total += entry.bytes.count - entry.offset
            }
            let n = withExtendedLifetime(queue) { writev(fd, iov, Int32(count)) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { break }
                teardown()
                return
            }
            bytesOut += n
            queuedBytes -= n
            var left = n
            while left > 0 {
                let remaining = queue[queueHead].bytes.count - queue[queueHead].offset
                if left >= remaining {
                    left -= remaining
                    queue[queueHead] = ([], 0)
                    queueHead += 1
                } else {
                    queue[queueHead].offset += left
                    left = 0
                }
            }
            if n < total { break }
        }
        if queueHead == queue.count {
            queue.removeAll(keepingCapacity: queue.count <= 16)
            queueHead = 0
        } else if queueHead > 64 {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
        if queueHead == queue.count && closeAfterFlush {
            linger()
            return
        }
        // Pipelined requests that waited for the peer to read responses go on now.
        if phase == .http && !awaitingResponse && http.bufferedCount > 0 && queuedBytes <= config.maxQueuedHTTPBytes {
            processHTTP()
            return
        }
        updateInterest()
    }

    private func flushIfIdle() {
        if queueHead == queue.count && closeAfterFlush { linger() } else { updateInterest() }
    }

    private func updateInterest() {
        guard phase != .closed else { return }
        let pending = queueHead < queue.count
        if pending && queuedBytes > config.readPauseHighWater { readPaused = true }
        if readPaused && queuedBytes < config.readPauseLowWater { readPaused = false }
        // HTTP: stop reading while a full request is buffered beyond the one being answered
        // or responses pile up unread; what is buffered is served first.
        let httpBacklog = phase == .http && (http.bufferedCount > config.httpLimits.maxHeadSize + config.httpLimits.maxBodySize
                                               || queuedBytes > config.maxQueuedHTTPBytes)
        var want: Interest = (readPaused || httpBacklog || !backlog.isEmpty) && phase != .lingering ? [] : .read
        if pending { want.insert(.write) }
        if want != interest {
            interest = want
            loop.reregister(self, interest: want)
        }
    }

    /// Everything is written: half-close and read (discarding) until the peer closes too, so
    /// unread bytes never turn our last frame into a reset. Bounded by the close timeout.
    private func linger() {
        guard phase != .lingering && phase != .closed else { return }
        let wasWebSocket = phase == .webSocket
        phase = .lingering
        if let tls {
            tls.shutdown()
            if let out = tls.takeOutput() { _ = out.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
        }
        shutdown(fd, Int32(SHUT_WR))
        deadline = loop.now &+ UInt64(config.closeTimeoutMs) * 1_000_000
        interest = .read
        loop.reregister(self, interest: .read)
        if wasWebSocket { notifyClosed() }
    }

    private func scheduleTeardown() {
        loop.execute { [self] in self.teardown() }
    }

    private var notified = false
    private func notifyClosed() {
        guard !notified, let handler else { return }
        notified = true
        if closer.isOpen { _ = closer.transportClosed() }
        handler.webSocketDidClose(self, code: closer.finalCode ?? .abnormal)
    }

    /// Closes the socket now.
    func teardown() {
        guard phase != .closed else { return }
        let wasWebSocket = phase == .webSocket || phase == .lingering
        phase = .closed
        loop.deregister(self)
        Glibc.close(fd)
        queue.removeAll()
        queueHead = 0
        queuedBytes = 0
        server.connectionClosed(self)
        if wasWebSocket { notifyClosed() }
        handler = nil
        context = nil
    }

    // MARK: Periodic checks

    /// Pings, dead-peer detection and deadlines; called by the server's sweep.
    func tick(now: UInt64) {
        if deadline != 0 && now >= deadline {
            switch phase {
            case .http:
                if awaitingResponse { deadline = 0 } else { teardown() }
            case .webSocket:
                // Our close was not answered in time, or the write queue never drained.
                teardown()
            case .lingering:
                teardown()
            case .closed:
                break
            }
            return
        }
        guard phase == .webSocket, closer.isOpen else { return }
        let deadAfter = UInt64(config.deadPeerTimeoutMs) * 1_000_000
        if now &- lastReceived >= deadAfter {
            close(.tooSlow, reason: "no frame received for \(config.deadPeerTimeoutMs) ms")
            return
        }
        if now &- lastPing >= UInt64(config.pingIntervalMs) * 1_000_000 { sendPing() }
    }
}

extension Connection {
    /// Sends a message whose header `seal` already wrote (the same frame may be retained
    /// elsewhere, e.g. for replay). Compresses it instead when deflate applies.
    public func sendSealed(_ message: OutboundMessage) {
        guard isOpen else { return }
        if deflate != nil, let policy = server.configuration.deflate, message.payloadCount >= policy.threshold {
            send(message, opcode: .text)
            return
        }
        enqueueFrame(message.storage, from: message.start)
    }
}
