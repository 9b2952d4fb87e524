import ArgumentParser
import Glibc
import SocketServer
import SwitchboardProtocol
import SwitchboardServer
import WebSocketCore

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the Switchboard daemon (REST API and session WebSockets on one port).",
        discussion: """
        With no options it listens on 127.0.0.1:8080 and keeps its data in ./switchboard-data. \
        When no API key is configured, one is generated on first start, stored in the data \
        directory and printed once; later starts reuse it.

        Settings come from, in increasing precedence: built-in defaults, the file given with \
        --config (or SWITCHBOARD_CONFIG), SWITCHBOARD_<KEY> environment variables, and these \
        flags. config/switchboard.toml documents every key. A bad value stops start-up with \
        the key, the value and where it came from (exit status 78).

        Signals: SIGTERM or SIGINT drain (readyz answers 503, new sessions and connections are \
        refused, peers are closed with 1001) and exit 0; SIGHUP reopens the traffic log and \
        reloads the TLS certificate.
        """
    )

    @Option(help: "A configuration file (key = value lines; see config/switchboard.toml).") var config: String?
    @Option(help: "Address to listen on; repeat for several. Listening on all interfaces (0.0.0.0, ::) is an explicit choice.") var host: [String] = []
    @Option(help: "Port to listen on (0 picks a free one).") var port: Int?
    @Option(help: "Directory for the API key file and the traffic log.") var dataDir: String?
    @Option(name: .customLong("api-key"), help: "An API key for the REST API. Repeatable.") var apiKeys: [String] = []
    @Option(help: "Public base URL for websocketUrl in responses (e.g. wss://relay.example.com).") var publicUrl: String?
    @Option(help: "PEM certificate chain: serve https:// and wss:// on the same port (with --tls-key).") var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert.") var tlsKey: String?
    @Flag(help: "Do not offer permessage-deflate.") var noCompression = false
    @Flag(help: "Keep deflate contexts between messages (better ratio, ~100 KiB per connection that compresses).") var deflateContextTakeover = false
    @Flag(help: "Write user input (fill values, typed text, bodies) to the traffic log unredacted.") var noRedaction = false
    @Option(help: "Allowed Origin for client connections; repeatable. Empty: any.") var allowedOrigin: [String] = []
    @Option(help: "Milliseconds to wait for a hello before closing with 4003.") var helloTimeoutMs: Int?
    @Option(help: "Milliseconds from accept to a complete request head (TLS handshake included).") var handshakeTimeoutMs: Int?
    @Option(help: "Milliseconds between server pings.") var pingIntervalMs: Int?
    @Option(help: "Close a connection with 4008 after this many milliseconds without a frame.") var deadPeerMs: Int?
    @Option(help: "Messages per second a peer may send (token bucket rate).") var ratePerSecond: Int?
    @Option(help: "Messages a peer may send in a burst.") var rateBurst: Int?
    @Option(help: "Largest WebSocket message in bytes (after decompression).") var maxMessageSize: Int?
    @Option(help: "Messages retained per stream for replay.") var replayMaxMessages: Int?
    @Option(help: "Bytes retained per stream for replay.") var replayMaxBytes: Int?
    @Option(help: "Where sessions are kept: sqlite (DATA_DIR/switchboard.db, survives restarts), memory, or postgres (several nodes, with --postgres-url).") var store: String?
    @Option(help: "libpq connection string of the PostgreSQL store (store = postgres).") var postgresUrl: String?
    @Option(help: "This node's name among the nodes sharing a PostgreSQL store (default: host name and port).") var nodeName: String?
    @Option(help: "Milliseconds a node's lease on its sessions lasts without renewal (store = postgres).") var leaseMs: Int?
    @Option(help: "Milliseconds SIGTERM waits for peers to close before exiting.") var drainMs: Int?

    /// Applies flags given on the command line, over the file and the environment.
    func flags(_ c: inout ServeConfiguration) throws(ConfigError) {
        func set(_ key: String, _ v: ConfigValue?, _ flag: String) throws(ConfigError) { if let v { try c.set(key, v, source: flag) } }
        try set("host", host.isEmpty ? nil : .list(host), "--host")
        try set("port", port.map { .int($0) }, "--port")
        try set("data_dir", dataDir.map { .string($0) }, "--data-dir")
        try set("api_keys", apiKeys.isEmpty ? nil : .list(apiKeys), "--api-key")
        try set("public_url", publicUrl.map { .string($0) }, "--public-url")
        try set("tls_cert", tlsCert.map { .string($0) }, "--tls-cert")
        try set("tls_key", tlsKey.map { .string($0) }, "--tls-key")
        if noCompression { try set("compression", .bool(false), "--no-compression") }
        if deflateContextTakeover { try set("deflate_context_takeover", .bool(true), "--deflate-context-takeover") }
        if noRedaction { try set("redaction", .bool(false), "--no-redaction") }
        try set("allowed_origins", allowedOrigin.isEmpty ? nil : .list(allowedOrigin), "--allowed-origin")
        try set("hello_timeout_ms", helloTimeoutMs.map { .int($0) }, "--hello-timeout-ms")
        try set("handshake_timeout_ms", handshakeTimeoutMs.map { .int($0) }, "--handshake-timeout-ms")
        try set("ping_interval_ms", pingIntervalMs.map { .int($0) }, "--ping-interval-ms")
        try set("dead_peer_ms", deadPeerMs.map { .int($0) }, "--dead-peer-ms")
        try set("rate_per_second", ratePerSecond.map { .int($0) }, "--rate-per-second")
        try set("rate_burst", rateBurst.map { .int($0) }, "--rate-burst")
        try set("max_message_size", maxMessageSize.map { .int($0) }, "--max-message-size")
        try set("replay_max_messages", replayMaxMessages.map { .int($0) }, "--replay-max-messages")
        try set("replay_max_bytes", replayMaxBytes.map { .int($0) }, "--replay-max-bytes")
        try set("drain_ms", drainMs.map { .int($0) }, "--drain-ms")
        try set("store", store.map { .string($0) }, "--store")
        try set("postgres_url", postgresUrl.map { .string($0) }, "--postgres-url")
        try set("node_name", nodeName.map { .string($0) }, "--node-name")
        try set("lease_ms", leaseMs.map { .int($0) }, "--lease-ms")
    }

    func resolve() throws(ConfigError) -> ServeConfiguration {
        var c = ServeConfiguration()
        let env = environment()
        if let path = config ?? env["SWITCHBOARD_CONFIG"] { try c.load(file: path) }
        try c.load(environment: env)
        try flags(&c)
        try c.validate()
        return c
    }

    func run() throws {
        blockSignals()
        Socket.ignoreSIGPIPE()
        Socket.raiseFileLimit()
        let c: ServeConfiguration
        do { c = try resolve() } catch {
            sayError("switchboard: invalid configuration: \(error)")
            throw ExitCode(78)
        }
        let tls = try loadTLS(cert: c.tlsCert, key: c.tlsKey)
        // The data directory holds unredacted journals, token digests and the API key: only the
        // server's user may read it, whoever created it. Files it creates are 0600 (umask).
        umask(0o077)
        if mkdir(c.dataDir, 0o700) != 0 && errno != EEXIST {
            throw StartupError("cannot create data directory \(c.dataDir): errno \(errno)")
        }
        if let problem = ServeConfiguration.restrictPermissions(dataDir: c.dataDir) { throw StartupError(problem) }
        let keys = c.apiKeys.isEmpty ? [try loadOrCreateKey(dataDir: c.dataDir)] : c.apiKeys

        var server = ServerConfiguration()
        server.hosts = c.host
        server.port = c.port
        server.pingIntervalMs = c.pingIntervalMs
        server.deadPeerTimeoutMs = c.deadPeerMs
        server.handshakeTimeoutMs = c.handshakeTimeoutMs
        server.maxMessageSize = c.maxMessageSize
        server.maxFrameSize = c.maxMessageSize
        server.maxQueuedBytes = c.maxSendQueue
        server.deflate = c.compression ? DeflatePolicy(contextTakeover: c.deflateContextTakeover) : nil
        server.maxConnections = c.maxConnections
        server.maxConnectionsPerIP = c.maxConnectionsPerIP
        server.acceptRetryMs = c.acceptRetryMs
        server.maxQueuedHTTPBytes = c.maxQueuedHTTPBytes
        server.inboundBytesPerIteration = c.inboundBytesPerIteration

        var settings = RelaySettings(c)
        settings.apiKeys = keys
        settings.tls = tls != nil
        do { settings.injectionScripts = try InjectionScripts.load(c.injectionScripts) } catch {
            throw StartupError("\(error)")
        }

        var logOptions = TrafficLog.Options(path: c.dataDir + "/traffic.jsonl")
        logOptions.redact = c.redaction
        logOptions.maxBytes = c.logMaxBytes
        logOptions.keep = c.logKeep
        logOptions.maxBuffer = c.logBufferBytes
        let log: TrafficLog
        do { log = try TrafficLog(options: logOptions) } catch { throw StartupError("cannot open traffic log: \(error)") }
        log.start()

        let loop = try EventLoop()
        var sessionStore: SessionStore? = nil
        if c.store == "sqlite" {
            do { sessionStore = try SQLiteStore(path: c.dataDir + "/switchboard.db", loop: loop) } catch {
                throw StartupError("cannot open the session store \(c.dataDir)/switchboard.db: \(error)")
            }
        } else if c.store == "postgres", let url = c.postgresURL {
            let name = c.nodeName ?? "\(hostName()):\(c.port)"
            do { sessionStore = try PostgresStore(url: url, nodeName: name, leaseMs: c.leaseMs, loop: loop) } catch {
                throw StartupError("cannot open the PostgreSQL session store: \(error)")
            }
        }
        let srv = Server(loop: loop, configuration: server, tls: tls)
        let relay = Relay(loop: loop, settings: settings, log: log, store: sessionStore)
        relay.server = srv
        srv.delegate = relay
        do { try srv.bind() } catch { throw StartupError("cannot listen on \(c.host.joined(separator: ", ")) port \(c.port): \(error)") }
        loop.execute {
            do { try relay.restore() } catch { sayError("switchboard: cannot restore sessions: \(error)") }
            try? srv.start()
        }
        for (h, p) in zip(c.host, srv.boundPorts) {
            say("switchboard \(Relay.version) listening on \(tls == nil ? "http" : "https")://\(h.contains(":") ? "[\(h)]" : h):\(p) (data: \(c.dataDir))")
        }
        log.event(session: nil, "start", ["version": .string(Relay.version), "port": .int(srv.port)])
        try runUntilSignalled(loop: loop, server: srv, drainMs: c.drainMs, keepListening: true,
                              beforeDrain: { relay.startDraining(); log.event(session: nil, "drain", [:]) },
                              onHangup: {
                                  log.reopen()
                                  if tls != nil {
                                      let error = srv.reloadTLS()
                                      log.event(session: nil, "tls_reload", error.map { ["error": .string($0.description)] } ?? ["ok": .bool(true)])
                                  }
                              }) {
            sessionStore?.close()
            log.event(session: nil, "stop", [:])
            log.close()
        }
    }

    private func environment() -> [String: String] {
        var out: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(decoding: UnsafeRawBufferPointer(start: entry, count: strlen(entry)), as: UTF8.self)
            if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return out
    }

    private func loadOrCreateKey(dataDir: String) throws -> String {
        let path = dataDir + "/api-key"
        if let key = ServeConfiguration.firstLine(path) {
            say("using the API key stored in \(path)")
            return key
        }
        let key = Crypto.token(prefix: "sk_", bits: 192)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw StartupError("cannot write \(path): errno \(errno)") }
        let bytes = Array((key + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        say("generated an API key (stored in \(path), shown only now): \(key)")
        return key
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the server and protocol versions.")
    func run() {
        say("switchboard \(Relay.version) (protocol \(ProtocolVersion.current))")
    }
}

/// The machine's host name (a node's default name with its port).
func hostName() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    guard gethostname(&buf, buf.count - 1) == 0 else { return "localhost" }
    return String(cString: buf)
}
