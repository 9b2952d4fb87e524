import Foundation
import Glibc
import Switchboard
import SwitchboardProtocol

/// A `switchboard serve` process on loopback for one test, stopped by its PID.
final class ServerProcess: @unchecked Sendable {
    static let apiKey = "sdk-test-key"
    let process: Process
    let port: Int
    let dataDir: String
    let tls: (cert: String, key: String)?
    let host: String

    var baseURL: String { "\(tls == nil ? "http" : "https")://\(host):\(port)" }

    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["SWITCHBOARD_BIN"] { return b }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return repo.appendingPathComponent(".build/debug/switchboard").path
    }

    static func temporaryDirectory() -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("sb-sdk-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    /// Starts a server (on `port`, or a free one) and waits until it listens.
    init(dataDir: String? = nil, port: Int = 0, tls: (cert: String, key: String)? = nil, host: String = "127.0.0.1",
         extra: [String] = []) throws {
        self.dataDir = dataDir ?? ServerProcess.temporaryDirectory()
        self.tls = tls
        self.host = host
        let log = self.dataDir + "/stdout-\(UUID().uuidString).log"
        FileManager.default.createFile(atPath: log, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: ServerProcess.binary)
        var args = ["serve", "--host", "127.0.0.1", "--port", String(port), "--data-dir", self.dataDir, "--api-key", ServerProcess.apiKey]
        if let tls { args += ["--tls-cert", tls.cert, "--tls-key", tls.key] }
        process.arguments = args + extra
        let out = FileHandle(forWritingAtPath: log)!
        process.standardOutput = out
        process.standardError = out
        try process.run()
        // Wait (bounded) for the line that names the port.
        let deadline = Date().addingTimeInterval(20)
        var found: Int? = nil
        while found == nil && Date() < deadline && process.isRunning {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let r = text.range(of: #"listening on https?://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                found = Int(text[r].split(separator: ":").last!)
            } else {
                usleep(20_000)
            }
        }
        guard let found else {
            process.terminate()
            throw SwitchboardError.transport("the server did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        self.port = found
    }

    var api: SwitchboardAPI {
        var o = TransportOptions()
        o.trustedCertificatesFile = tls?.cert
        return SwitchboardAPI(baseURL: baseURL, apiKey: ServerProcess.apiKey, options: o)
    }

    /// SIGKILL, then waits for the process to be gone.
    func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM (a graceful drain), then waits.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    deinit { if process.isRunning { kill() } }
}

/// A self-signed certificate for `localhost` made with the openssl command.
func makeCertificate(in dir: String) throws -> (cert: String, key: String) {
    let cert = dir + "/localhost.pem", key = dir + "/localhost.key"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    p.arguments = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                   "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw SwitchboardError.transport("openssl failed") }
    return (cert, key)
}

/// A TCP proxy on loopback whose connections a test can cut at any moment (a dropped
/// network, without the server noticing anything but a closed socket).
final class CuttableProxy: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let target: Int
    private let lock = NSLock()
    private var sockets: [Int32] = []
    private var accepted = 0

    init(to target: Int) {
        self.target = target
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 64)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        Thread { [self] in acceptLoop() }.start()
    }

    /// Connections accepted so far.
    var connectionCount: Int { lock.withLock { accepted } }

    /// Closes every connection going through the proxy now.
    func cut() {
        let all = lock.withLock { () -> [Int32] in defer { sockets.removeAll() }; return sockets }
        for fd in all { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        cut()
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(target).bigEndian
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0 else { close(client); close(upstream); continue }
            lock.withLock { sockets += [client, upstream]; accepted += 1 }
            Thread { CuttableProxy.pump(client, upstream) }.start()
        }
    }

    private static func pump(_ a: Int32, _ b: Int32) {
        var buf = [UInt8](repeating: 0, count: 64 << 10)
        var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
        loop: while true {
            fds[0].revents = 0; fds[1].revents = 0
            guard poll(&fds, 2, 1000) >= 0 else { break }
            for (from, to) in [(0, b), (1, a)] where fds[from].revents != 0 {
                let n = buf.withUnsafeMutableBytes { recv(fds[from].fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break loop }
                var off = 0
                while off < n {
                    let w = buf.withUnsafeBytes { send(to, $0.baseAddress! + off, n - off, Int32(MSG_NOSIGNAL)) }
                    if w <= 0 { break loop }
                    off += w
                }
            }
        }
        shutdown(a, Int32(SHUT_RDWR)); shutdown(b, Int32(SHUT_RDWR))
        close(a); close(b)
    }
}

/// A pretend browser: answers every catalog command with a result of the documented shape,
/// counts how often each command id ran, reports telemetry, and lets a test hook in.
final class ScriptedBrowser: CommandExecutor, @unchecked Sendable {
    private let lock = NSLock()
    private var runs: [String: Int] = [:]
    private var names: [String] = []
    private var _cancelled: [String] = []
    private var _interactive: [InteractiveChange] = []
    private var sink: TelemetrySink?
    private var _configuration: ClientConfiguration?
    /// Called inside `execute` before it answers.
    var onExecute: (@Sendable (ClientCommand) -> Void)?
    /// Every command as it starts, for tests to wait on.
    let started: AsyncStream<ClientCommand>
    private let startedContinuation: AsyncStream<ClientCommand>.Continuation
    /// Every set_interactive, for tests to wait on.
    let interactiveChanges: AsyncStream<InteractiveChange>
    private let interactiveContinuation: AsyncStream<InteractiveChange>.Continuation

    init() {
        (started, startedContinuation) = AsyncStream.makeStream(of: ClientCommand.self)
        (interactiveChanges, interactiveContinuation) = AsyncStream.makeStream(of: InteractiveChange.self)
    }

    var capabilities: [String] { ["selectorConditions", "uid"] }

    func runCount(_ id: String) -> Int { lock.withLock { runs[id] ?? 0 } }
    var executedNames: [String] { lock.withLock { names } }
    var cancelled: [String] { lock.withLock { _cancelled } }
    var configuration: ClientConfiguration? { lock.withLock { _configuration } }
    var telemetry: TelemetrySink? { lock.withLock { sink } }

    func configure(_ configuration: ClientConfiguration, telemetry: TelemetrySink) async {
        lock.withLock { _configuration = configuration; sink = telemetry }
    }

    func setInteractive(_ change: InteractiveChange) async {
        lock.withLock { _interactive.append(change) }
        interactiveContinuation.yield(change)
    }

    func cancel(commandId: String) async { lock.withLock { _cancelled.append(commandId) } }

    func execute(_ c: ClientCommand) async throws -> JSON {
        lock.withLock { runs[c.id, default: 0] += 1; names.append(c.name) }
        startedContinuation.yield(c)
        onExecute?(c)
        let p = c.params
        func ok() -> JSON { .object(["ok": .bool(true)]) }
        func value(_ v: JSON) -> JSON { .object(["value": v]) }
        if p["selector"]?.stringValue == "#missing" { throw CommandFailure.elementNotFound("no element matches #missing") }
        switch c.name {
        case "navigate":
            let url = p["url"]?.stringValue ?? ""
            telemetry?.record("navigation", payload: ["url": .string(url), "isMainFrame": .bool(true)])
            return .object(["url": .string(url), "status": .int(200)])
        case "reload", "goBack", "goForward": return .object(["url": .string("https://example.test/")])
        case "waitForNavigation": return .object(["url": .string("https://example.test/next")])
        case "click", "fill", "type", "hover", "press", "scroll", "waitForSelector", "waitForNetworkIdle", "updateStatus": return ok()
        case "waitForTimeout":
            try await Task.sleep(nanoseconds: UInt64(p["ms"]?.intValue ?? 0) * 1_000_000)
            return ok()
        case "select": return .object(["selected": p["values"] ?? .array([])])
        case "getAttribute": return value(p["name"]?.stringValue == "none" ? .null : .string("attr-" + (p["name"]?.stringValue ?? "")))
        case "textContent", "innerHTML": return value(.string("text of " + (p["selector"]?.stringValue ?? p["uid"]?.stringValue ?? "")))
        case "isVisible": return value(.bool(true))
        case "evaluate": return .object(["type": .string("number"), "value": .int(42)])
        case "url": return value(.string("https://example.test/"))
        case "title": return value(.string("Example"))
        case "content": return value(.string("<html></html>"))
        case "screenshot":
            return .object(["data": .string("iVBORw0KGgo="), "format": p["format"] ?? .string("png"), "width": .int(800), "height": .int(600)])
        case "extract":
            return .object(["text": .string("Sign in"), "markdown": .string("# Sign in"),
                            "elements": .array([.object(["uid": .string("e1"), "role": .string("button"), "name": .string("Sign in"), "visible": .bool(true)])]),
                            "obstacle": .object(["type": .string("auth_wall"), "confidence": .string("high"), "message": .string("sign in")])])
        default: throw CommandFailure.notSupported(c.name)
        }
    }
}

/// The first element of `stream` that satisfies `predicate`, or nil after `seconds`.
func first<T: Sendable>(_ stream: AsyncStream<T>, within seconds: Double = 20, where predicate: @escaping @Sendable (T) -> Bool) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask {
            for await v in stream where predicate(v) { return v }
            return nil
        }
        group.addTask {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            return nil
        }
        let r = await group.next() ?? nil
        group.cancelAll()
        return r
    }
}

/// A process started for a test and stopped by its PID — in its own process group, so that
/// what it starts (a browser) goes with it.
final class TestProcess: @unchecked Sendable {
    let process = Process()
    let log: String

    /// Runs `arguments` (Foundation starts it as the leader of a new process group); waits
    /// (bounded) for `ready` to appear in its output.
    init(_ arguments: [String], ready: String?, environment: [String: String] = [:], timeout: Double = 60) throws {
        log = ServerProcess.temporaryDirectory() + "/out.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : "/usr/bin/" + arguments[0])
        process.arguments = Array(arguments.dropFirst())
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = FileHandle(forWritingAtPath: log)!
        process.standardOutput = out
        process.standardError = out
        try process.run()
        precondition(getpgid(process.processIdentifier) == process.processIdentifier, "the child is not a process group leader")
        guard let ready else { return }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && process.isRunning {
            if output.range(of: ready, options: .regularExpression) != nil { return }
            usleep(20_000)
        }
        let text = output
        stop()
        throw SwitchboardError.transport("\(arguments.first ?? "") did not start: \(text)")
    }

    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// The first capture group of `pattern` in the output.
    func match(_ pattern: String) -> String? {
        let text = output
        guard let r = try? NSRegularExpression(pattern: pattern), let m = r.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
              m.numberOfRanges > 1, let g = Range(m.range(at: 1), in: text) else { return nil }
        return String(text[g])
    }

    /// SIGKILL to the whole process group, then waits.
    func kill() {
        Glibc.kill(-process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM to the group (the browser client stops its Chromium), SIGKILL after 5 s.
    func stop() {
        guard process.isRunning else { Glibc.kill(-process.processIdentifier, SIGKILL); return }
        Glibc.kill(-process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill() }
        Glibc.kill(-process.processIdentifier, SIGKILL)
    }

    deinit { if process.isRunning { kill() } }

    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
    static func product(_ name: String) -> String { repository.appendingPathComponent(".build/debug/\(name)").path }
}
