import ArgumentParser
import Glibc
import SwitchboardProtocol
import SwitchboardServer

/// Where the REST API is and how to authenticate, shared by the `session` subcommands.
struct APIOptions: ParsableArguments {
    @Option(help: "Base URL of the server (or SWITCHBOARD_URL).") var url: String?
    @Option(help: "API key (or SWITCHBOARD_API_KEY, or the key file in --data-dir).") var apiKey: String?
    @Option(help: "Data directory holding a generated api-key file.") var dataDir = "switchboard-data"
    @Flag(help: "Print the raw JSON answer.") var json = false

    var baseURL: String { url ?? env("SWITCHBOARD_URL") ?? "http://127.0.0.1:8080" }

    func key() throws -> String {
        if let apiKey { return apiKey }
        if let k = env("SWITCHBOARD_API_KEY") { return k }
        guard let key = ServeConfiguration.firstLine(dataDir + "/api-key") else {
            throw StartupError("no API key: pass --api-key, set SWITCHBOARD_API_KEY, or run where \(dataDir)/api-key exists")
        }
        return key
    }

    func env(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

    /// Sends a request and returns the parsed JSON answer; a non-2xx answer is an error with its message.
    func call(_ method: String, _ path: String, body: JSON? = nil) throws -> JSON {
        let (status, text) = try HTTPClient.request(method: method, url: baseURL + path, headers: ["Authorization": "Bearer " + (try key())],
                                                    body: body.map { JSONWriter.serialize($0) })
        let value = try? JSONParser.parse(Array(text.utf8))
        guard (200..<300).contains(status) else {
            let message = value?["error"]?["message"]?.stringValue ?? text
            throw StartupError("HTTP \(status): \(message)")
        }
        guard let value else { throw StartupError("the server answered with something that is not JSON") }
        return value
    }
}

struct SessionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session",
        abstract: "Create, inspect, list and cancel sessions through the REST API.",
        subcommands: [Create.self, Get.self, List.self, Cancel.self]
    )

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a session; prints its id, tokens and WebSocket URL.")
        @OptionGroup var api: APIOptions
        @Option(help: "Metadata as a JSON object, e.g. '{\"user_id\":\"u_1\"}'.") var metadata: String?
        @Option(help: "Session duration in milliseconds.") var durationMs: Int?
        @Option(help: "Default command timeout in milliseconds.") var commandTimeoutMs: Int?

        func run() throws {
            var body = JSONObject()
            if let metadata {
                guard let m = try? JSONParser.parse(metadata), m.objectValue != nil else { throw ValidationError("--metadata must be a JSON object") }
                body["metadata"] = m
            }
            var config = JSONObject()
            if let durationMs { config["sessionDurationMs"] = .int(durationMs) }
            if let commandTimeoutMs { config["commandTimeoutMs"] = .int(commandTimeoutMs) }
            if !config.isEmpty { body["config"] = .object(config) }
            let s = try api.call("POST", "/v1/sessions", body: .object(body))
            if api.json { say(JSONWriter.string(s)); return }
            for key in ["sessionId", "phase", "websocketUrl", "workerToken", "clientToken"] {
                say("\(key.padding(14)) \(s[key]?.stringValue ?? "")")
            }
            say("\("expiresAt".padding(14)) \(ISO8601.format(Int64(s["expiresAt"]?.intValue ?? 0)))")
        }
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one session.")
        @OptionGroup var api: APIOptions
        @Argument(help: "The session id.") var id: String
        func run() throws {
            let s = try api.call("GET", "/v1/sessions/\(id)")
            if api.json { say(JSONWriter.string(s)); return }
            printSession(s, long: true)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List sessions, newest first.")
        @OptionGroup var api: APIOptions
        @Option(help: "Only sessions in this phase.") var phase: String?
        @Option(help: "At most this many (1-1000).") var limit = 50
        @Option(help: "Continue from a previous page's next cursor.") var cursor: String?
        func run() throws {
            var q = "?limit=\(limit)"
            if let phase { q += "&phase=\(phase)" }
            if let cursor { q += "&cursor=\(cursor)" }
            let page = try api.call("GET", "/v1/sessions" + q)
            if api.json { say(JSONWriter.string(page)); return }
            for s in page["sessions"]?.arrayValue ?? [] { printSession(s, long: false) }
            if let next = page["next"]?.stringValue { say("(more: --cursor \(next))") }
        }
    }

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a session as failed/cancelled (idempotent).")
        @OptionGroup var api: APIOptions
        @Argument(help: "The session id.") var id: String
        func run() throws {
            let s = try api.call("DELETE", "/v1/sessions/\(id)")
            if api.json { say(JSONWriter.string(s)); return }
            printSession(s, long: false)
        }
    }
}

func printSession(_ s: JSON, long: Bool) {
    let id = s["sessionId"]?.stringValue ?? "?"
    let phase = s["phase"]?.stringValue ?? "?"
    let reason = s["reason"]?.stringValue.map { " (\($0))" } ?? ""
    let peers = "worker \(s["workerConnected"]?.boolValue == true ? "on" : "off"), client \(s["clientConnected"]?.boolValue == true ? "on" : "off")"
    say("\(id)  \(phase)\(reason)  \(peers)  commands \(s["counts"]?["commands"]?.intValue ?? 0)  events \(s["counts"]?["events"]?.intValue ?? 0)")
    if long {
        say("  created  \(ISO8601.format(Int64(s["createdAt"]?.intValue ?? 0)))  expires \(ISO8601.format(Int64(s["expiresAt"]?.intValue ?? 0)))")
        if let p = s["pending"], !p.isNull { say("  pending  \(JSONWriter.string(p))") }
        if let m = s["metadata"], !m.isNull { say("  metadata \(JSONWriter.string(m))") }
        if let r = s["result"], !r.isNull { say("  result   \(JSONWriter.string(r))") }
        if let e = s["error"], !e.isNull { say("  error    \(JSONWriter.string(e))") }
    }
}

private extension String {
    func padding(_ n: Int) -> String { self + String(repeating: " ", count: max(0, n - count)) }
}

/// A minimal blocking HTTP/1.1 client for plain http:// URLs (the CLI talks to a local daemon).
enum HTTPClient {
    static func request(method: String, url: String, headers: [String: String], body: [UInt8]?) throws -> (Int, String) {
        guard url.hasPrefix("http://") else { throw StartupError("only http:// URLs are supported by the CLI (got \(url))") }
        let rest = url.dropFirst(7)
        let hostPort = rest.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        let path = "/" + (rest.split(separator: "/", maxSplits: 1).dropFirst().first.map(String.init) ?? "")
        var host = hostPort, port = "80"
        if let colon = hostPort.lastIndex(of: ":"), !hostPort.hasSuffix("]") {
            host = String(hostPort[..<colon]); port = String(hostPort[hostPort.index(after: colon)...])
        }
        host = String(host.filter { $0 != "[" && $0 != "]" })
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, port, &hints, &res) == 0, let ai = res else { throw StartupError("cannot resolve \(host)") }
        defer { freeaddrinfo(res) }
        let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
        guard fd >= 0, connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
            if fd >= 0 { close(fd) }
            throw StartupError("cannot connect to \(hostPort): is `switchboard serve` running?")
        }
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(hostPort)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        let out = Array((head + "\r\n").utf8) + (body ?? [])
        var off = 0
        while off < out.count {
            let n = out.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
            guard n > 0 else { throw StartupError("write failed") }
            off += n
        }
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        guard let end = (0..<max(0, data.count - 3)).first(where: { data[$0] == 13 && data[$0 + 1] == 10 && data[$0 + 2] == 13 && data[$0 + 3] == 10 }) else {
            throw StartupError("malformed HTTP answer")
        }
        let statusLine = String(decoding: data[..<end].prefix { $0 != 13 }, as: UTF8.self)
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return (status, String(decoding: data[(end + 4)...], as: UTF8.self))
    }
}
