import Glibc

/// One configuration value as written in the file, the environment or on the command line.
public enum ConfigValue: Equatable, Sendable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case list([String])

    var text: String {
        switch self {
        case .string(let s): return "\"\(s)\""
        case .int(let i): return String(i)
        case .bool(let b): return String(b)
        case .list(let l): return "[" + l.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
        }
    }
}

/// A configuration error: which key, which value, where it came from, what is wrong.
public struct ConfigError: Error, Equatable, CustomStringConvertible, Sendable {
    public var key: String
    public var value: String
    public var source: String
    public var problem: String
    public var description: String { "\(key) = \(value) (from \(source)): \(problem)" }
}

/// Every setting of `switchboard serve`, with its default. Sources are applied in order:
/// built-in defaults, the config file, `SWITCHBOARD_*` environment variables, flags.
public struct ServeConfiguration: Sendable, Equatable {
    public var host: [String] = ["127.0.0.1"]
    public var port = 8080
    public var dataDir = "switchboard-data"

    public var apiKeys: [String] = []
    public var publicURL: String? = nil
    public var tlsCert: String? = nil
    public var tlsKey: String? = nil
    public var compression = true
    public var deflateContextTakeover = false
    public var redaction = true
    public var allowedOrigins: [String] = []
    public var helloTimeoutMs = 10_000
    public var handshakeTimeoutMs = 10_000
    public var pingIntervalMs = 20_000
    public var deadPeerMs = 40_000
    public var ratePerSecond = 1000
    public var rateBurst = 2000
    public var maxMessageSize = 16 << 20
    public var maxSendQueue = 8 << 20
    public var maxDebugConnections = 8
    public var maxCDPChannels = 4
    public var maxCDPFrameBytes = 8 << 20
    public var replayMaxMessages = 1000
    public var replayMaxBytes = 8 << 20
    public var drainMs = 10_000
    public var logMaxBytes = 64 << 20
    public var logKeep = 5
    public var defaultConnectTimeoutMs = 300_000
    public var defaultSessionDurationMs = 3_600_000
    public var defaultDisconnectGraceMs = 60_000
    public var defaultCommandTimeoutMs = 30_000
    public var maxConnectTimeoutMs = 86_400_000
    public var maxSessionDurationMs = 86_400_000
    public var maxDisconnectGraceMs = 3_600_000
    public var maxCommandTimeoutMs = 600_000
    public var injectionScripts: [String] = ["telemetry", "network", "console", "interaction"]
    public var store = "sqlite"
    /// Several nodes (`store = "postgres"`): the libpq connection string, this node's name
    /// (unique among the nodes; defaults to the host name and port) and its lease.
    public var postgresURL: String? = nil
    public var nodeName: String? = nil
    public var leaseMs = 10_000
    public var journalStoredEntries = 100_000
    public var retentionHours = 168
    // Bounds (docs: config/switchboard.toml, "Bounds").
    public var maxSessions = 100_000
    public var maxConnections = 100_000
    public var maxConnectionsPerIP = 10_000
    public var acceptRetryMs = 100
    public var maxQueuedHTTPBytes = 1 << 20
    public var rateBytesPerSecond = 4 << 20
    public var rateBytesBurst = 32 << 20
    public var rateCloseAfterDrops = 2000
    public var rateWindowMs = 10_000
    public var maxWorkerMessageBytes = 4 << 20
    public var maxClientMessageBytes = 16 << 20
    public var maxDebugMessageBytes = 64 << 10
    public var eventsMaxPerSession = 100_000
    public var eventsMaxBytesPerSession = 64 << 20
    public var journalMaxEntries = 1_000
    public var journalMaxBytes = 1 << 20
    public var journalStoredBytes = 64 << 20
    public var storeWaitMs = 5_000
    public var maxYieldTimeoutMs = 86_400_000
    public var logBufferBytes = 64 << 20
    public var inboundBytesPerIteration = 1 << 20

    public init() {}

    /// Makes the data directory 0700 and every regular file directly in it 0600; returns
    /// what failed, if anything.
    public static func restrictPermissions(dataDir: String) -> String? {
        guard chmod(dataDir, 0o700) == 0 else { return "cannot restrict data directory \(dataDir) to 0700: errno \(errno)" }
        guard let d = opendir(dataDir) else { return nil }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            guard name != "." && name != ".." else { continue }
            var st = stat()
            let path = dataDir + "/" + name
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_mode & 0o077 != 0 else { continue }
            guard chmod(path, 0o600) == 0 else { return "cannot restrict \(path) to 0600: errno \(errno)" }
        }
        return nil
    }

    enum Kind: Sendable { case string, optionalString, int(ClosedRange<Int>), bool, list }

    struct Key: Sendable {
        let name: String
        let kind: Kind
        let apply: @Sendable (inout ServeConfiguration, ConfigValue) -> Void
    }

    static let ms = 1...(30 * 86_400_000)

    /// The table of keys: name (as in the file; `--name-with-dashes` on the command line;
    /// `SWITCHBOARD_NAME` in the environment), its kind and where it goes.
    static let keys: [Key] = [
        Key(name: "host", kind: .list) { c, v in if case .list(let l) = v { c.host = l } },
        Key(name: "port", kind: .int(0...65535)) { c, v in if case .int(let i) = v { c.port = i } },
        Key(name: "data_dir", kind: .string) { c, v in if case .string(let s) = v { c.dataDir = s } },
        Key(name: "api_keys", kind: .list) { c, v in if case .list(let l) = v { c.apiKeys = l } },
        Key(name: "public_url", kind: .optionalString) { c, v in if case .string(let s) = v { c.publicURL = s.isEmpty ? nil : s } },
        Key(name: "tls_cert", kind: .optionalString) { c, v in if case .string(let s) = v { c.tlsCert = s.isEmpty ? nil : s } },
        Key(name: "tls_key", kind: .optionalString) { c, v in if case .string(let s) = v { c.tlsKey = s.isEmpty ? nil : s } },
        Key(name: "compression", kind: .bool) { c, v in if case .bool(let b) = v { c.compression = b } },
        Key(name: "deflate_context_takeover", kind: .bool) { c, v in if case .bool(let b) = v { c.deflateContextTakeover = b } },
        Key(name: "redaction", kind: .bool) { c, v in if case .bool(let b) = v { c.redaction = b } },
        Key(name: "allowed_origins", kind: .list) { c, v in if case .list(let l) = v { c.allowedOrigins = l } },
        Key(name: "hello_timeout_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.helloTimeoutMs = i } },
        Key(name: "handshake_timeout_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.handshakeTimeoutMs = i } },
        Key(name: "ping_interval_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.pingIntervalMs = i } },
        Key(name: "dead_peer_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.deadPeerMs = i } },
        Key(name: "rate_per_second", kind: .int(1...10_000_000)) { c, v in if case .int(let i) = v { c.ratePerSecond = i } },
        Key(name: "rate_burst", kind: .int(1...10_000_000)) { c, v in if case .int(let i) = v { c.rateBurst = i } },
        Key(name: "max_message_size", kind: .int(1024...(1 << 30))) { c, v in if case .int(let i) = v { c.maxMessageSize = i } },
        Key(name: "max_send_queue", kind: .int(65536...(1 << 31))) { c, v in if case .int(let i) = v { c.maxSendQueue = i } },
        Key(name: "max_debug_connections", kind: .int(0...1000)) { c, v in if case .int(let i) = v { c.maxDebugConnections = i } },
        Key(name: "max_cdp_channels", kind: .int(0...64)) { c, v in if case .int(let i) = v { c.maxCDPChannels = i } },
        Key(name: "max_cdp_frame_bytes", kind: .int(1024...(1 << 30))) { c, v in if case .int(let i) = v { c.maxCDPFrameBytes = i } },
        Key(name: "replay_max_messages", kind: .int(1...1_000_000)) { c, v in if case .int(let i) = v { c.replayMaxMessages = i } },
        Key(name: "replay_max_bytes", kind: .int(1024...(1 << 31))) { c, v in if case .int(let i) = v { c.replayMaxBytes = i } },
        Key(name: "drain_ms", kind: .int(0...3_600_000)) { c, v in if case .int(let i) = v { c.drainMs = i } },
        Key(name: "log_max_bytes", kind: .int(4096...(1 << 40))) { c, v in if case .int(let i) = v { c.logMaxBytes = i } },
        Key(name: "log_keep", kind: .int(0...1000)) { c, v in if case .int(let i) = v { c.logKeep = i } },
        Key(name: "default_connect_timeout_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.defaultConnectTimeoutMs = i } },
        Key(name: "default_session_duration_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.defaultSessionDurationMs = i } },
        Key(name: "default_disconnect_grace_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.defaultDisconnectGraceMs = i } },
        Key(name: "default_command_timeout_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.defaultCommandTimeoutMs = i } },
        Key(name: "max_connect_timeout_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.maxConnectTimeoutMs = i } },
        Key(name: "max_session_duration_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.maxSessionDurationMs = i } },
        Key(name: "max_disconnect_grace_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.maxDisconnectGraceMs = i } },
        Key(name: "max_command_timeout_ms", kind: .int(ms)) { c, v in if case .int(let i) = v { c.maxCommandTimeoutMs = i } },
        Key(name: "injection_scripts", kind: .list) { c, v in if case .list(let l) = v { c.injectionScripts = l } },
        Key(name: "journal_stored_entries", kind: .int(0...100_000_000)) { c, v in if case .int(let i) = v { c.journalStoredEntries = i } },
        Key(name: "store", kind: .string) { c, v in if case .string(let s) = v { c.store = s } },
        Key(name: "postgres_url", kind: .optionalString) { c, v in if case .string(let s) = v { c.postgresURL = s.isEmpty ? nil : s } },
        Key(name: "node_name", kind: .optionalString) { c, v in if case .string(let s) = v { c.nodeName = s.isEmpty ? nil : s } },
        Key(name: "lease_ms", kind: .int(300...600_000)) { c, v in if case .int(let i) = v { c.leaseMs = i } },
        Key(name: "retention_hours", kind: .int(1...87_600)) { c, v in if case .int(let i) = v { c.retentionHours = i } },
        Key(name: "max_sessions", kind: .int(1...100_000_000)) { c, v in if case .int(let i) = v { c.maxSessions = i } },
        Key(name: "max_connections", kind: .int(1...100_000_000)) { c, v in if case .int(let i) = v { c.maxConnections = i } },
        Key(name: "max_connections_per_ip", kind: .int(1...100_000_000)) { c, v in if case .int(let i) = v { c.maxConnectionsPerIP = i } },
        Key(name: "accept_retry_ms", kind: .int(1...60_000)) { c, v in if case .int(let i) = v { c.acceptRetryMs = i } },
        Key(name: "max_queued_http_bytes", kind: .int(4096...(1 << 30))) { c, v in if case .int(let i) = v { c.maxQueuedHTTPBytes = i } },
        Key(name: "rate_bytes_per_second", kind: .int(1024...(1 << 40))) { c, v in if case .int(let i) = v { c.rateBytesPerSecond = i } },
        Key(name: "rate_bytes_burst", kind: .int(1024...(1 << 40))) { c, v in if case .int(let i) = v { c.rateBytesBurst = i } },
        Key(name: "rate_close_after_drops", kind: .int(1...100_000_000)) { c, v in if case .int(let i) = v { c.rateCloseAfterDrops = i } },
        Key(name: "rate_window_ms", kind: .int(100...3_600_000)) { c, v in if case .int(let i) = v { c.rateWindowMs = i } },
        Key(name: "max_worker_message_bytes", kind: .int(1024...(1 << 30))) { c, v in if case .int(let i) = v { c.maxWorkerMessageBytes = i } },
        Key(name: "max_client_message_bytes", kind: .int(1024...(1 << 30))) { c, v in if case .int(let i) = v { c.maxClientMessageBytes = i } },
        Key(name: "max_debug_message_bytes", kind: .int(128...(1 << 30))) { c, v in if case .int(let i) = v { c.maxDebugMessageBytes = i } },
        Key(name: "events_max_per_session", kind: .int(1...100_000_000)) { c, v in if case .int(let i) = v { c.eventsMaxPerSession = i } },
        Key(name: "events_max_bytes_per_session", kind: .int(4096...(1 << 40))) { c, v in if case .int(let i) = v { c.eventsMaxBytesPerSession = i } },
        Key(name: "journal_max_entries", kind: .int(1...10_000_000)) { c, v in if case .int(let i) = v { c.journalMaxEntries = i } },
        Key(name: "journal_max_bytes", kind: .int(4096...(1 << 40))) { c, v in if case .int(let i) = v { c.journalMaxBytes = i } },
        Key(name: "journal_stored_bytes", kind: .int(4096...(1 << 40))) { c, v in if case .int(let i) = v { c.journalStoredBytes = i } },
        Key(name: "store_wait_ms", kind: .int(100...600_000)) { c, v in if case .int(let i) = v { c.storeWaitMs = i } },
        Key(name: "max_yield_timeout_ms", kind: .int(1...604_800_000)) { c, v in if case .int(let i) = v { c.maxYieldTimeoutMs = i } },
        Key(name: "inbound_bytes_per_iteration", kind: .int(1024...(1 << 30))) { c, v in if case .int(let i) = v { c.inboundBytesPerIteration = i } },
        Key(name: "log_buffer_bytes", kind: .int(65536...(1 << 40))) { c, v in if case .int(let i) = v { c.logBufferBytes = i } },
    ]

    public static var keyNames: [String] { keys.map(\.name) }

    /// Applies one raw value (text from the environment or a flag, or a parsed file value).
    public mutating func set(_ name: String, _ raw: ConfigValue, source: String) throws(ConfigError) {
        guard let key = ServeConfiguration.keys.first(where: { $0.name == name }) else {
            throw ConfigError(key: name, value: raw.text, source: source, problem: "unknown key (known: \(ServeConfiguration.keyNames.joined(separator: ", ")))")
        }
        let value = try ServeConfiguration.coerce(raw, to: key.kind, key: name, source: source)
        key.apply(&self, value)
    }

    static func coerce(_ raw: ConfigValue, to kind: Kind, key: String, source: String) throws(ConfigError) -> ConfigValue {
        func fail(_ problem: String) -> ConfigError { ConfigError(key: key, value: raw.text, source: source, problem: problem) }
        switch (kind, raw) {
        case (.string, .string(let s)), (.optionalString, .string(let s)):
            if case .string = kind, s.isEmpty { throw fail("must not be empty") }
            return raw
        case (.int(let range), .int(let i)):
            guard range.contains(i) else { throw fail("must be an integer from \(range.lowerBound) to \(range.upperBound)") }
            return raw
        case (.int(let range), .string(let s)):
            guard let i = Int(s.trimmingCharacters()) else { throw fail("must be an integer from \(range.lowerBound) to \(range.upperBound)") }
            return try coerce(.int(i), to: kind, key: key, source: source)
        case (.bool, .bool):
            return raw
        case (.bool, .string(let s)):
            switch s.lowercased() {
            case "true", "1", "yes", "on": return .bool(true)
            case "false", "0", "no", "off": return .bool(false)
            default: throw fail("must be true or false")
            }
        case (.list, .list):
            return raw
        case (.list, .string(let s)):
            return .list(s.split(separator: ",").map { String($0).trimmingCharacters() }.filter { !$0.isEmpty })
        default:
            switch kind {
            case .string, .optionalString: throw fail("must be a string")
            case .int(let r): throw fail("must be an integer from \(r.lowerBound) to \(r.upperBound)")
            case .bool: throw fail("must be true or false")
            case .list: throw fail("must be a list of strings")
            }
        }
    }

    /// Cross-key checks, after every source is applied.
    public func validate() throws(ConfigError) {
        if (tlsCert == nil) != (tlsKey == nil) {
            throw ConfigError(key: tlsCert == nil ? "tls_cert" : "tls_key", value: "(unset)", source: "configuration",
                              problem: "tls_cert and tls_key go together")
        }
        if store != "sqlite" && store != "memory" && store != "postgres" {
            throw ConfigError(key: "store", value: "\"\(store)\"", source: "configuration", problem: "must be \"sqlite\", \"memory\" or \"postgres\"")
        }
        if store == "postgres" && postgresURL == nil {
            throw ConfigError(key: "postgres_url", value: "(unset)", source: "configuration",
                              problem: "store = \"postgres\" needs a connection string (e.g. postgresql://switchboard@db/switchboard)")
        }
        if host.isEmpty { throw ConfigError(key: "host", value: "[]", source: "configuration", problem: "give at least one address") }
        for (d, m, name) in [(defaultConnectTimeoutMs, maxConnectTimeoutMs, "default_connect_timeout_ms"),
                             (defaultSessionDurationMs, maxSessionDurationMs, "default_session_duration_ms"),
                             (defaultDisconnectGraceMs, maxDisconnectGraceMs, "default_disconnect_grace_ms"),
                             (defaultCommandTimeoutMs, maxCommandTimeoutMs, "default_command_timeout_ms")] where d > m {
            throw ConfigError(key: name, value: String(d), source: "configuration", problem: "is above its maximum \(m)")
        }
        for s in injectionScripts where !s.contains("=") && InjectionScripts.builtIn[s] == nil {
            throw ConfigError(key: "injection_scripts", value: "\"\(s)\"", source: "configuration",
                              problem: "each entry is a built-in (\(InjectionScripts.builtIn.keys.sorted().joined(separator: ", "))) or name=path/to/script.js")
        }
    }

    /// Reads `key = value` lines (a TOML subset: strings, integers, booleans, string arrays,
    /// `#` comments). Unknown keys and bad values are errors naming the file and line.
    public mutating func load(file path: String) throws(ConfigError) {
        guard let text = ServeConfiguration.readFile(path) else {
            throw ConfigError(key: "config", value: "\"\(path)\"", source: "command line", problem: "cannot read the file")
        }
        for (n, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(rawLine)
            if let hash = ServeConfiguration.commentStart(line) { line = line[..<hash] }
            let trimmed = String(line).trimmingCharacters()
            if trimmed.isEmpty { continue }
            let source = "\(path):\(n + 1)"
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw ConfigError(key: trimmed, value: "", source: source, problem: "expected key = value")
            }
            let key = String(trimmed[..<eq]).trimmingCharacters()
            let valueText = String(trimmed[trimmed.index(after: eq)...]).trimmingCharacters()
            guard let value = ServeConfiguration.parseValue(valueText) else {
                throw ConfigError(key: key, value: valueText, source: source, problem: "not a string, integer, boolean or list of strings")
            }
            try set(key, value, source: source)
        }
    }

    /// Applies `SWITCHBOARD_<KEY>` variables.
    public mutating func load(environment: [String: String]) throws(ConfigError) {
        for key in ServeConfiguration.keys {
            let name = "SWITCHBOARD_" + key.name.uppercased()
            if let v = environment[name] { try set(key.name, .string(v), source: name) }
        }
    }

    static func commentStart(_ line: Substring) -> Substring.Index? {
        var quoted = false
        for i in line.indices {
            if line[i] == "\"" { quoted.toggle() }
            if line[i] == "#" && !quoted { return i }
        }
        return nil
    }

    static func parseValue(_ t: String) -> ConfigValue? {
        if t == "true" { return .bool(true) }
        if t == "false" { return .bool(false) }
        if let i = Int(t.replacingUnderscores()) { return .int(i) }
        if t.hasPrefix("\""), t.hasSuffix("\""), t.count >= 2 { return .string(String(t.dropFirst().dropLast())) }
        if t.hasPrefix("["), t.hasSuffix("]") {
            let inner = String(t.dropFirst().dropLast()).trimmingCharacters()
            if inner.isEmpty { return .list([]) }
            var items: [String] = []
            for part in inner.split(separator: ",") {
                let p = String(part).trimmingCharacters()
                if p.isEmpty { continue }
                guard p.hasPrefix("\""), p.hasSuffix("\""), p.count >= 2 else { return nil }
                items.append(String(p.dropFirst().dropLast()))
            }
            return .list(items)
        }
        return nil
    }

    /// The first line of a file (e.g. a stored API key), nil when unreadable or empty.
    public static func firstLine(_ path: String) -> String? {
        guard let text = readFile(path), let line = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).first,
              !line.isEmpty else { return nil }
        return String(line)
    }

    static func readFile(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Session timeouts for the relay.
    public var sessionDefaults: SessionTimeouts {
        var t = SessionTimeouts()
        t.connectTimeoutMs = defaultConnectTimeoutMs
        t.sessionDurationMs = defaultSessionDurationMs
        t.disconnectGracePeriodMs = defaultDisconnectGraceMs
        t.commandTimeoutMs = defaultCommandTimeoutMs
        return t
    }

    public var sessionMaxima: SessionTimeouts {
        var t = SessionTimeouts()
        t.connectTimeoutMs = maxConnectTimeoutMs
        t.sessionDurationMs = maxSessionDurationMs
        t.disconnectGracePeriodMs = maxDisconnectGraceMs
        t.commandTimeoutMs = maxCommandTimeoutMs
        return t
    }
}

private extension String {
    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
