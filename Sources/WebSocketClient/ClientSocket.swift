import Glibc
import SocketServer

/// A transport failure: connecting, TLS, or the connection breaking.
public struct TransportError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What failed.
    public var description: String
    /// The HTTP status when the server refused a WebSocket upgrade.
    public var status: Int?
    /// The refusal's body (the server's JSON error), when there was one.
    public var body: [UInt8]?
    public init(_ description: String, status: Int? = nil, body: [UInt8]? = nil) {
        self.description = description; self.status = status; self.body = body
    }
}

/// Monotonic milliseconds.
func nowMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// One outgoing TCP connection, optionally under TLS, on a non-blocking socket. Confined to
/// one thread at a time. Plaintext goes in with `send` and leaves with `flush`; `receive`
/// gives plaintext back.
final class ClientSocket {
    let fd: Int32
    private let tls: TLSSession?
    private var out: [UInt8] = []
    private var outOffset = 0
    /// Reused by every read: ciphertext (or plaintext without TLS), and decrypted plaintext.
    private var readBuffer = [UInt8](repeating: 0, count: 64 << 10)
    private var plainBuffer = [UInt8](repeating: 0, count: 16 << 10)
    private var closed = false

    var hasPendingOutput: Bool { outOffset < out.count }

    private init(fd: Int32, tls: TLSSession?) { self.fd = fd; self.tls = tls }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    /// Connects to `endpoint` (every address the name resolves to, in order) and completes
    /// the TLS handshake, all before `deadline` (monotonic ms).
    static func connect(_ endpoint: Endpoint, tls context: TLSClientContext?, deadline: Int64) throws(TransportError) -> ClientSocket {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(endpoint.host, String(endpoint.port), &hints, &list)
        guard rc == 0, let first = list else {
            throw TransportError("cannot resolve \(endpoint.host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { lastError = String(cString: strerror(errno)); continue }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) != 0 && errno != EINPROGRESS {
                lastError = String(cString: strerror(errno)); Glibc.close(fd); continue
            }
            guard waitFD(fd, events: Int16(POLLOUT), deadline: deadline) else {
                lastError = "timed out"; Glibc.close(fd); continue
            }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            guard err == 0 else { lastError = String(cString: strerror(err)); Glibc.close(fd); continue }
            var session: TLSSession? = nil
            if endpoint.tls {
                do throws(TLSError) {
                    let ctx: TLSClientContext
                    if let context { ctx = context } else { ctx = try TLSClientContext() }
                    session = try TLSSession(client: ctx, host: endpoint.host)
                } catch {
                    Glibc.close(fd); throw TransportError(error.description)
                }
            }
            let socket = ClientSocket(fd: fd, tls: session)
            if session != nil { try socket.handshake(deadline: deadline) }
            return socket
        }
        throw TransportError("cannot connect to \(endpoint.host):\(endpoint.port): \(lastError)")
    }

    private func handshake(deadline: Int64) throws(TransportError) {
        guard let tls else { return }
        while true {
            let status = tls.handshake()
            if let o = tls.takeOutput() { out.append(contentsOf: o) }
            try flushAll(deadline: deadline)
            switch status {
            case .done: return
            case .failed(let why): throw TransportError(why)
            case .needsIO:
                // Handshake records only: feed them to OpenSSL and let `handshake()` go on.
                var buf = [UInt8](repeating: 0, count: 16 << 10)
                while true {
                    let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                    if n > 0 { buf.withUnsafeBytes { tls.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }; break }
                    if n == 0 { throw TransportError("the server closed the connection during the TLS handshake") }
                    guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else {
                        throw TransportError("receive failed during the TLS handshake: \(String(cString: strerror(errno)))")
                    }
                    guard ClientSocket.waitFD(fd, events: Int16(POLLIN), deadline: deadline) else { throw TransportError("the TLS handshake timed out") }
                }
            }
        }
    }

    /// Queues plaintext (encrypted at once under TLS).
    func send(_ bytes: UnsafeRawBufferPointer) throws(TransportError) {
        if let tls {
            guard tls.write(bytes) else { throw TransportError("TLS write failed") }
            if let o = tls.takeOutput() { out.append(contentsOf: o) }
        } else {
            out.append(contentsOf: bytes)
        }
    }

    func send(_ bytes: [UInt8]) throws(TransportError) {
        guard let tls else { out.append(contentsOf: bytes); return }
        guard bytes.withUnsafeBytes({ tls.write($0) }) else { throw TransportError("TLS write failed") }
        if let o = tls.takeOutput() { out.append(contentsOf: o) }
    }

    /// Writes what the socket takes now; true when nothing is left.
    @discardableResult
    func flush() throws(TransportError) -> Bool {
        while outOffset < out.count {
            let n = out.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + outOffset, out.count - outOffset, Int32(MSG_NOSIGNAL)) }
            if n > 0 { outOffset += n; continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return false }
            throw TransportError("send failed: \(String(cString: strerror(errno)))")
        }
        out.removeAll(keepingCapacity: out.count < 1 << 20)
        outOffset = 0
        return true
    }

    func flushAll(deadline: Int64) throws(TransportError) {
        while try !flush() {
            guard ClientSocket.waitFD(fd, events: Int16(POLLOUT), deadline: deadline) else { throw TransportError("send timed out") }
        }
    }

    /// Plaintext available now: nil when none (would block), empty at the end of the stream.
    func receive() throws(TransportError) -> [UInt8]? {
        while true {
            let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
                throw TransportError("receive failed: \(String(cString: strerror(errno)))")
            }
            guard let tls else { return n == 0 ? [] : Array(readBuffer[0..<n]) }
            if n == 0 { return [] }
            readBuffer.withUnsafeBytes { tls.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            var plain: [UInt8] = []
            while true {
                let m = plainBuffer.withUnsafeMutableBytes { tls.read(into: $0) }
                if m > 0 { plain.append(contentsOf: plainBuffer[0..<m]); continue }
                if m < 0 { throw TransportError("TLS failure") }
                break
            }
            // Post-handshake records (TLS 1.3 tickets, key updates) may need an answer.
            if let o = tls.takeOutput() { out.append(contentsOf: o) }
            if !plain.isEmpty { return plain }
            if tls.peerClosed { return [] }
            // Only TLS records without application data: read on.
        }
    }

    /// Waits for plaintext until `deadline`: nil on timeout, empty at the end of the stream.
    func receive(deadline: Int64) throws(TransportError) -> [UInt8]? {
        while true {
            if let bytes = try receive() { return bytes }
            try flush()
            guard ClientSocket.waitFD(fd, events: Int16(POLLIN), deadline: deadline) else { return nil }
        }
    }

    /// Polls one descriptor until it is ready or `deadline` passes.
    static func waitFD(_ fd: Int32, events: Int16, deadline: Int64) -> Bool {
        while true {
            let left = deadline - nowMillis()
            if left <= 0 { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let rc = poll(&p, 1, Int32(min(left, 1000)))
            if rc > 0 { return true }
            if rc < 0 && errno != EINTR { return true }
        }
    }
}
