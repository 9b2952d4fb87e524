import ArgumentParser
import Glibc
import SocketServer
import SwitchboardProtocol
import SwitchboardServer

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the Switchboard daemon (REST API and session WebSockets on one port).",
        discussion: """
        With no options it listens on 127.0.0.1:8080 and keeps its data in ./switchboard-data. \
        When no API key is given, one is generated on first start, stored in the data directory \
        and printed once; later starts reuse it. Stop with SIGTERM or SIGINT: the server drains \
        (new connections refused, peers closed with 1001) before it exits.
        """
    )

    @Option(help: "Address to listen on. Repeat for several (e.g. 127.0.0.1 and ::1).") var host: [String] = []
    @Option(help: "Port to listen on (0 picks a free one).") var port: Int = 8080
    @Option(help: "Directory for the API key file and the traffic log.") var dataDir = "switchboard-data"
    @Option(name: .customLong("api-key"), help: "An API key for the REST API. Repeatable.") var apiKeys: [String] = []
    @Option(help: "Public base URL for websocketUrl in responses (e.g. wss://relay.example.com).") var publicUrl: String?
    @Option(help: "PEM certificate chain: serve https:// and wss:// on the same port (with --tls-key). Reloaded on SIGHUP.") var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert.") var tlsKey: String?
    @Flag(help: "Do not offer permessage-deflate.") var noCompression = false
    @Flag(help: "Keep deflate contexts between messages (better ratio, ~300 KiB of zlib state per busy connection).") var deflateContextTakeover = false
    @Flag(help: "Write user input (fill values, typed text, bodies) to the traffic log unredacted.") var noRedaction = false
    @Option(help: "Milliseconds to wait for a hello before closing with 4003.") var helloTimeoutMs = 10_000
    @Option(help: "Milliseconds between server pings.") var pingIntervalMs = 20_000
    @Option(help: "Close a connection with 4008 after this many milliseconds without a frame.") var deadPeerMs = 40_000
    @Option(help: "Milliseconds from accept to a complete request head (TLS handshake included).") var handshakeTimeoutMs = 10_000
    @Option(help: "Messages per second a peer may send (token bucket rate).") var ratePerSecond = 1000
    @Option(help: "Messages a peer may send in a burst.") var rateBurst = 2000
    @Option(help: "Largest WebSocket message in bytes (after decompression).") var maxMessageSize = 16 << 20
    @Option(help: "Messages retained per stream for replay.") var replayMaxMessages = 1000
    @Option(help: "Bytes retained per stream for replay.") var replayMaxBytes = 8 << 20
    @Option(help: "Milliseconds SIGTERM waits for peers to close before exiting.") var drainMs = 10_000

    func run() throws {
        blockSignals()
        Socket.ignoreSIGPIPE()
        Socket.raiseFileLimit()
        if mkdir(dataDir, 0o750) != 0 && errno != EEXIST {
            throw StartupError("cannot create data directory \(dataDir): errno \(errno)")
        }
        let tls = try loadTLS(cert: tlsCert, key: tlsKey)
        var keys = apiKeys
        if keys.isEmpty { keys = [try loadOrCreateKey()] }

        var config = ServerConfiguration()
        config.hosts = host.isEmpty ? ["127.0.0.1"] : host
        config.port = port
        config.pingIntervalMs = pingIntervalMs
        config.deadPeerTimeoutMs = deadPeerMs
        config.maxMessageSize = maxMessageSize
        config.handshakeTimeoutMs = handshakeTimeoutMs
        config.maxFrameSize = maxMessageSize
        if noCompression { config.deflate = nil }
        if deflateContextTakeover { config.deflate?.contextTakeover = true }

        var settings = RelaySettings()
        settings.apiKeys = keys
        settings.publicURL = publicUrl
        settings.tls = tls != nil
        settings.helloTimeoutMs = helloTimeoutMs
        settings.ratePerSecond = ratePerSecond
        settings.rateBurst = rateBurst
        settings.replayMaxMessages = replayMaxMessages
        settings.replayMaxBytes = replayMaxBytes

        var logOptions = TrafficLog.Options(path: dataDir + "/traffic.jsonl")
        logOptions.redact = !noRedaction
        let log: TrafficLog
        do { log = try TrafficLog(options: logOptions) } catch { throw StartupError("cannot open traffic log: \(error)") }
        log.start()

        let loop = try EventLoop()
        let server = Server(loop: loop, configuration: config, tls: tls)
        let relay = Relay(loop: loop, settings: settings, log: log)
        relay.server = server
        server.delegate = relay
        do { try server.bind() } catch { throw StartupError("cannot listen on \(config.hosts.joined(separator: ", ")) port \(port): \(error)") }
        loop.execute { try? server.start() }
        for (h, p) in zip(config.hosts, server.boundPorts) {
            say("switchboard \(Relay.version) listening on \(tls == nil ? "http" : "https")://\(h.contains(":") ? "[\(h)]" : h):\(p) (data: \(dataDir))")
        }
        log.event(session: nil, "start", ["version": .string(Relay.version), "port": .int(server.port)])
        try runUntilSignalled(loop: loop, server: server, drainMs: drainMs, beforeDrain: { relay.startDraining() },
                              onHangup: {
                                  log.reopen()
                                  if tls != nil {
                                      let error = server.reloadTLS()
                                      log.event(session: nil, "tls_reload", error.map { ["error": .string($0.description)] } ?? ["ok": .bool(true)])
                                  }
                              }) {
            log.event(session: nil, "stop", [:])
            log.close()
        }
    }

    private func loadOrCreateKey() throws -> String {
        let path = dataDir + "/api-key"
        if let f = fopen(path, "r") {
            defer { fclose(f) }
            var buf = [CChar](repeating: 0, count: 512)
            if fgets(&buf, 512, f) != nil {
                let key = String(decoding: buf.prefix { $0 != 0 && $0 != 10 && $0 != 13 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !key.isEmpty {
                    say("using the API key stored in \(path)")
                    return key
                }
            }
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
