import ArgumentParser
import Glibc
import SocketServer
import WebSocketCore
import SwitchboardServer
import SwitchboardProtocol

@main
struct Switchboard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A session relay between automation workers and browser clients over WebSocket.",
        subcommands: [Serve.self, SessionCommand.self, Tail.self, Echo.self, Version.self, BenchStore.self]
    )
}

/// Writes a line to standard output at once (no buffering: scripts wait for these lines).
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    bytes.withUnsafeBytes { _ = write(1, $0.baseAddress, $0.count) }
}

/// A failure at start-up (unreadable file, busy port): printed as "Error: …", exit status 1.
struct StartupError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Loads `--tls-cert` / `--tls-key` (both or neither); errors name the file at fault.
func loadTLS(cert: String?, key: String?) throws -> TLSContext? {
    switch (cert, key) {
    case (nil, nil): return nil
    case (nil, _): throw ValidationError("--tls-key needs --tls-cert")
    case (_, nil): throw ValidationError("--tls-cert needs --tls-key")
    case (let c?, let k?):
        do { return try TLSContext(certificatePath: c, keyPath: k) } catch { throw StartupError("TLS: \(error)") }
    }
}

/// Blocks the signals the daemon handles; call first thing on the main thread, before any
/// other thread exists (they inherit the mask, so no signal bypasses the loop's signalfd).
func blockSignals() { SignalSource.block([SIGTERM, SIGINT, SIGHUP]) }

/// Writes a line to standard error.
func sayError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    bytes.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
}

/// Runs `server` on the main thread until SIGTERM / SIGINT, then drains it. SIGHUP calls `onHangup`.
func runUntilSignalled(loop: EventLoop, server: Server, drainMs: Int, keepListening: Bool = false, beforeDrain: @escaping () -> Void = {},
                       onHangup: @escaping () -> Void = {}, onStop: @escaping () -> Void = {}) throws {
    var stopping = false
    let signals = try SignalSource(loop: loop, signals: [SIGTERM, SIGINT, SIGHUP]) { sig in
        if sig == SIGHUP { onHangup(); return }
        guard !stopping else { return }
        stopping = true
        beforeDrain()
        server.shutdown(code: .goingAway, deadlineMs: drainMs, keepListening: keepListening) {
            onStop()
            loop.stop()
        }
    }
    loop.run()
    withExtendedLifetime(signals) {}
}

struct Echo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a WebSocket echo endpoint on the server's stack (for conformance runs).",
        discussion: "Every text or binary message is sent back unchanged. Listens on 127.0.0.1 unless told otherwise."
    )

    @Option(help: "Address to listen on (IPv4 or IPv6 literal).") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0 picks a free one and prints it).") var port = 9001
    @Flag(help: "Do not offer permessage-deflate.") var noCompression = false
    @Flag(help: "Keep deflate contexts between messages (better ratio, ~300 KiB of zlib state per busy connection).") var deflateContextTakeover = false
    @Option(help: "Largest message in bytes.") var maxMessageSize = 16 << 20
    @Option(help: "Milliseconds between server pings.") var pingIntervalMs = 20_000
    @Option(help: "Close a connection with 4008 after this many milliseconds without a frame.") var deadPeerMs = 40_000
    @Option(help: "Milliseconds from accept to a complete request head (TLS handshake included).") var handshakeTimeoutMs = 10_000
    @Option(help: "PEM certificate chain: serve wss:// (with --tls-key).") var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert.") var tlsKey: String?

    func run() throws {
        blockSignals()
        Socket.ignoreSIGPIPE()
        var config = ServerConfiguration()
        config.hosts = [host]
        config.port = port
        config.maxMessageSize = maxMessageSize
        config.maxFrameSize = maxMessageSize
        config.pingIntervalMs = pingIntervalMs
        config.deadPeerTimeoutMs = deadPeerMs
        config.handshakeTimeoutMs = handshakeTimeoutMs
        if noCompression { config.deflate = nil }
        if deflateContextTakeover { config.deflate?.contextTakeover = true }
        Socket.raiseFileLimit()
        let tls = try loadTLS(cert: tlsCert, key: tlsKey)
        let loop = try EventLoop()
        let server = Server(loop: loop, configuration: config, tls: tls)
        let delegate = EchoDelegate()
        server.delegate = delegate
        do { try server.bind() } catch {
            throw StartupError("cannot listen on \(host):\(port): \(error)")
        }
        loop.execute { try? server.start() }
        say("switchboard echo listening on \(tls == nil ? "ws" : "wss")://\(host.contains(":") ? "[\(host)]" : host):\(server.port)/")
        try runUntilSignalled(loop: loop, server: server, drainMs: 2000, onHangup: { _ = server.reloadTLS() })
        withExtendedLifetime(delegate) {}
    }
}
