import Glibc
import CSystem
import WebSocketCore

public struct ServerConfiguration: Sendable {
    public var hosts: [String] = ["127.0.0.1"]
    public var port: Int = 8080
    public var maxFrameSize = 16 << 20
    public var maxMessageSize = 16 << 20
    public var httpLimits = HTTPRequestParser.Limits()
    /// From accept to a complete request head (and for idle keep-alive connections).
    public var handshakeTimeoutMs = 10_000
    public var idleHTTPTimeoutMs = 30_000
    public var pingIntervalMs = 20_000
    public var deadPeerTimeoutMs = 40_000
    /// How long to wait for the peer's close frame, or for a half-closed socket to finish.
    public var closeTimeoutMs = 5_000
    public var maxQueuedBytes = 8 << 20
    public var readPauseHighWater = 1 << 20
    public var readPauseLowWater = 256 << 10
    /// permessage-deflate; nil turns it off.
    public var deflate: DeflatePolicy? = DeflatePolicy()
    /// Open connections at most (beyond it, new ones are closed at once).
    public var maxConnections = 100_000
    /// Open connections from one IP address at most.
    public var maxConnectionsPerIP = 10_000
    /// After accept fails for lack of descriptors or memory, accepting resumes after this.
    public var acceptRetryMs = 100
    /// Bytes of HTTP responses queued for one connection before further pipelined requests
    /// wait (and reading pauses).
    public var maxQueuedHTTPBytes = 1 << 20
    /// Message bytes (after decompression) one connection may deliver per loop iteration;
    /// the rest of what it sent waits for the next iteration, and its reads pause meanwhile.
    public var inboundBytesPerIteration = 1 << 20

    public init() {}

    /// How often connections are swept for pings and deadlines.
    var tickIntervalMs: Int {
        max(10, min(1000, min(pingIntervalMs, deadPeerTimeoutMs, handshakeTimeoutMs, closeTimeoutMs) / 4))
    }
}

/// Listening sockets plus the connections they accepted, all on one event loop.
public final class Server: @unchecked Sendable {
    // Confined to `loop` after `start`.
    public let loop: EventLoop
    public let configuration: ServerConfiguration
    public weak var delegate: ServerDelegate?
    /// TLS for new connections; replaced by `reloadTLS` (open connections keep theirs).
    public private(set) var tls: TLSContext?
    private var listeners: [Listener] = []
    public private(set) var boundPorts: [Int] = []
    public private(set) var connectionCount = 0
    public private(set) var acceptedTotal = 0
    public private(set) var webSocketCount = 0
    /// Connections closed at accept because of `maxConnections` / `maxConnectionsPerIP`.
    public private(set) var refusedGlobal = 0
    public private(set) var refusedPerIP = 0
    /// Times accepting paused because descriptors or memory ran out.
    public private(set) var acceptPauses = 0
    private var perIP: [String: Int] = [:]
    private var acceptPaused = false
    /// Bytes of connections already closed (open ones are added in `bytesIn` / `bytesOut`).
    var closedBytesIn = 0
    var closedBytesOut = 0
    public private(set) var draining = false
    private var accepting = true
    private var sweepTimer: Timer?
    private var inflaterShared: Inflater?
    private var deflatersShared: [Int: Deflater] = [:]


    public init(loop: EventLoop, configuration: ServerConfiguration, tls: TLSContext? = nil) {
        self.loop = loop
        self.configuration = configuration
        self.tls = tls
    }

    /// Loads the certificate and key again from the same files (SIGHUP). On failure the
    /// current context stays and the error is returned.
    public func reloadTLS() -> TLSError? {
        guard let current = tls else { return nil }
        do {
            tls = try TLSContext(certificatePath: current.certificatePath, keyPath: current.keyPath)
            return nil
        } catch {
            return error
        }
    }

    /// Binds every configured host (synchronously, so errors reach the caller), then starts
    /// accepting on the loop. Port 0 binds a free port (the same one on every host when possible).
    public func bind() throws(SystemError) {
        var port = configuration.port
        for host in configuration.hosts {
            let fd = try Socket.listen(host: host, port: port)
            let bound = Socket.boundPort(fd)
            if port == 0 { port = bound }
            boundPorts.append(bound)
            listeners.append(Listener(fd: fd, server: self))
        }
    }

    public var port: Int { boundPorts.first ?? configuration.port }

    /// Registers the listeners and the sweep. Call on the loop.
    public func start() throws(SystemError) {
        for l in listeners { try loop.register(l, interest: .read) }
        scheduleSweep()
    }

    private func scheduleSweep() {
        sweepTimer = loop.schedule(afterMillis: configuration.tickIntervalMs) { [weak self] in
            guard let self else { return }
            let now = self.loop.now
            self.loop.forEachRegistered { ($0 as? Connection)?.tick(now: now) }
            self.scheduleSweep()
        }
    }

    func accept(from listener: Listener) {
        guard accepting, !acceptPaused else { return }
        // Bounded per wake-up so a connection storm cannot starve established peers.
        for _ in 0..<256 {
            switch Socket.accept(listener.fd) {
            case .none:
                return
            case .exhausted:
                pauseAccepting()
                return
            case .connection(let fd, let remote, let ip):
                if connectionCount >= configuration.maxConnections {
                    refusedGlobal += 1
                    Glibc.close(fd)
                    continue
                }
                if perIP[ip, default: 0] >= configuration.maxConnectionsPerIP {
                    refusedPerIP += 1
                    Glibc.close(fd)
                    continue
                }
                let c = Connection(fd: fd, remote: remote, ip: ip, server: self)
                do {
                    try loop.register(c, interest: .read)
                } catch {
                    Glibc.close(fd)
                    continue
                }
                perIP[ip, default: 0] += 1
                connectionCount += 1
                acceptedTotal += 1
            }
        }
    }

    /// Out of descriptors: the pending connection stays in the backlog and the listeners stay
    /// readable, so polling them would spin. Stop listening to them and try again later.
    private func pauseAccepting() {
        acceptPaused = true
        acceptPauses += 1
        for l in listeners { loop.reregister(l, interest: []) }
        loop.schedule(afterMillis: configuration.acceptRetryMs) { [weak self] in
            guard let self, self.acceptPaused else { return }
            self.acceptPaused = false
            for l in self.listeners { self.loop.reregister(l, interest: .read) }
        }
    }

    /// Bytes received and sent on every connection since start.
    public var bytesIn: Int {
        var n = closedBytesIn
        loop.forEachRegistered { n += ($0 as? Connection)?.bytesIn ?? 0 }
        return n
    }

    public var bytesOut: Int {
        var n = closedBytesOut
        loop.forEachRegistered { n += ($0 as? Connection)?.bytesOut ?? 0 }
        return n
    }

    func connectionClosed(_ c: Connection) {
        connectionCount -= 1
        if let n = perIP[c.ip] { if n <= 1 { perIP[c.ip] = nil } else { perIP[c.ip] = n - 1 } }
        closedBytesIn += c.bytesIn
        closedBytesOut += c.bytesOut
        if c.wasWebSocket { webSocketCount -= 1 }
        if draining && webSocketCount == 0, let done = drained {
            drained = nil
            closeListeners()
            done()
        }
    }

    func webSocketOpened() { webSocketCount += 1 }

    private func closeListeners() {
        accepting = false
        for l in listeners { loop.deregister(l); Glibc.close(l.fd) }
        listeners.removeAll()
    }

    /// The loop's shared zlib streams, used by connections that agreed to no context takeover.
    func sharedInflater() -> Inflater {
        if let i = inflaterShared { return i }
        let i = Inflater(resetAfterMessage: true)
        inflaterShared = i
        return i
    }

    func sharedDeflater(windowBits: Int) -> Deflater {
        if let d = deflatersShared[windowBits] { return d }
        let d = Deflater(windowBits: windowBits, memLevel: configuration.deflate?.memLevel ?? 8, resetAfterMessage: true)
        deflatersShared[windowBits] = d
        return d
    }

    private var drained: (() -> Void)?

    /// Closes every WebSocket with `code` (1001 by default) and every idle HTTP connection, and
    /// calls `completion` on the loop when all WebSockets are gone or `deadlineMs` passed.
    /// With `keepListening`, plain HTTP is still served meanwhile (so `/readyz` can say 503)
    /// and the delegate refuses new work; otherwise the listeners close at once.
    public func shutdown(code: CloseCode = .goingAway, deadlineMs: Int = 10_000, keepListening: Bool = false,
                         completion: @escaping () -> Void) {
        if !keepListening { closeListeners() }
        draining = true
        var finished = false
        let finish = { [weak self] in
            guard !finished else { return }
            finished = true
            self?.sweepTimer?.cancel()
            completion()
        }
        drained = finish
        loop.forEachRegistered { c in
            guard let c = c as? Connection, c.isWebSocket else { return }
            c.close(code, reason: "server shutting down")
        }
        if webSocketCount == 0 { drained = nil; closeListeners(); finish(); return }
        loop.schedule(afterMillis: deadlineMs) { [weak self] in
            self?.closeListeners()
            self?.loop.forEachRegistered { ($0 as? Connection)?.teardown() }
            finish()
        }
    }
}

final class Listener: Selectable {
    let fd: Int32
    unowned let server: Server
    init(fd: Int32, server: Server) { self.fd = fd; self.server = server }
    func readable() { server.accept(from: self) }
    func writable() {}
}
