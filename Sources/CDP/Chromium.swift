import Foundation
import Glibc

/// A Chromium process started for one client: a temporary profile, DevTools on a loopback
/// port chosen by the browser (read back from the profile's `DevToolsActivePort`), headless
/// unless asked otherwise. `stop()` ends it by its PID and removes the profile.
public final class ChromiumProcess: @unchecked Sendable {
    /// The browser's process id. It stays in its parent's process group, so that killing the
    /// group of the client kills its browser too.
    public let pid: pid_t
    /// The browser-level DevTools WebSocket URL.
    public let webSocketURL: String
    public let profile: String
    private var exited = false

    public struct LaunchError: Error, CustomStringConvertible, Sendable { public var description: String }

    /// The browser binary: `$CHROMIUM`, else the first of Debian's and the usual names on PATH.
    public static func findBinary() -> String? {
        if let env = ProcessInfo.processInfo.environment["CHROMIUM"], !env.isEmpty { return env }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
            for dir in path where access("\(dir)/\(name)", X_OK) == 0 { return "\(dir)/\(name)" }
        }
        return nil
    }

    /// Starts the browser and waits (at most `timeoutMs`) until DevTools listens.
    public init(binary: String? = nil, headed: Bool = false, windowSize: (Int, Int) = (1280, 800),
                extraArguments: [String] = [], timeoutMs: Int = 30_000) throws {
        guard let binary = binary ?? ChromiumProcess.findBinary() else {
            throw LaunchError(description: "no Chromium found (install Debian's chromium package or set CHROMIUM)")
        }
        profile = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-browser-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: profile, withIntermediateDirectories: true)
        var args = [
            binary, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--user-data-dir=\(profile)",
            "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-features=Translate,MediaRouter", "--disable-crash-reporter",
            "--disable-breakpad", "--disable-blink-features=AutomationControlled", "--password-store=basic", "--use-mock-keychain",
            "--window-size=\(windowSize.0),\(windowSize.1)",
        ]
        if !headed { args.append("--headless=new") }
        if getuid() == 0 { args.append("--no-sandbox") }
        args += extraArguments
        args.append("about:blank")
        pid = try ChromiumProcess.spawn(args)
        let portFile = profile + "/DevToolsActivePort"
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        var url: String? = nil
        while url == nil && Date() < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8) {
                let lines = text.split(separator: "\n")
                if lines.count >= 2, let port = Int(lines[0]) { url = "ws://127.0.0.1:\(port)\(lines[1])" }
            }
            if url == nil {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid { exited = true; break }
                usleep(25_000)
            }
        }
        guard let url else {
            if !exited { kill(pid, SIGKILL); waitpid(pid, nil, 0) }
            try? FileManager.default.removeItem(atPath: profile)
            throw LaunchError(description: "Chromium (\(binary)) did not open DevTools within \(timeoutMs) ms")
        }
        webSocketURL = url
    }

    /// posix_spawn without a new process group; output to /dev/null.
    static func spawn(_ args: [String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, args[0], &actions, nil, &argv, environ)
        guard rc == 0 else { throw LaunchError(description: "cannot start \(args[0]): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Ends the browser (SIGTERM, then SIGKILL after 3 s) and removes its profile.
    public func stop() {
        if !exited {
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(3)
            var status: Int32 = 0
            while waitpid(pid, &status, WNOHANG) == 0 && Date() < deadline { usleep(20_000) }
            if kill(pid, 0) == 0 { kill(pid, SIGKILL); waitpid(pid, nil, 0) }
            exited = true
        }
        try? FileManager.default.removeItem(atPath: profile)
    }

    deinit { if !exited { kill(pid, SIGKILL) } }
}
