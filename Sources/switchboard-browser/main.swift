// The reference client: executes a session's commands in headless Chromium.
//
//   switchboard-browser --url WS_URL --token CLIENT_TOKEN [--headed] [--chromium PATH]
//                       [--state FILE] [--screenshots DIR] [--ca-file PEM] [--no-cdp]
//
// WS_URL is the session's `websocketUrl`. --state keeps the client's position (lastSeq, the
// response cache, commands started) in FILE so that a restarted client resumes without running
// a command twice. --headed shows the browser (under X or Xvfb); with --screenshots, every
// `set_interactive` saves a PNG of what the user sees. The client offers CDP channels (a
// worker's Playwright `connect_over_cdp` through the session) unless --no-cdp is given.
import CDP
import Foundation
import Glibc
import Switchboard
import SwitchboardBrowser

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

func log(_ s: String) {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    FileHandle.standardOutput.write(Data("\(f.string(from: Date())) \(s)\n".utf8))
}

guard let url = argument("--url"), let token = argument("--token") else {
    FileHandle.standardError.write(Data("usage: switchboard-browser --url WS_URL --token CLIENT_TOKEN [--headed] [--chromium PATH] [--state FILE] [--screenshots DIR] [--ca-file PEM] [--no-cdp]\n".utf8))
    exit(2)
}
let headed = CommandLine.arguments.contains("--headed")
let screenshots = argument("--screenshots")

let browser: ChromiumProcess
do { browser = try ChromiumProcess(binary: argument("--chromium"), headed: headed) } catch {
    FileHandle.standardError.write(Data("switchboard-browser: \(error)\n".utf8))
    exit(1)
}
// Stop the browser with us, whatever ends us.
signal(SIGTERM, SIG_IGN)
signal(SIGINT, SIG_IGN)
let signals = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
    let s = DispatchSource.makeSignalSource(signal: sig, queue: .main)
    s.setEventHandler { log("signal \(sig): stopping"); browser.stop(); exit(0) }
    s.resume()
    return s
}

do {
    let cdp = try await CDPConnection.connect(to: browser.webSocketURL)
    let executor = try await ChromiumExecutor.attach(cdp, cdpEndpoint: CommandLine.arguments.contains("--no-cdp") ? nil : browser.webSocketURL,
                                                     log: log, onInteractive: { change, executor in
        guard let dir = screenshots, change.interactive, let png = try? await executor.capturePNG() else { return }
        let path = "\(dir)/interactive-\(change.yieldId).png"
        FileManager.default.createFile(atPath: path, contents: Data(png))
        log("saved what the user sees to \(path)")
    })
    var options = ClientOptions()
    options.connection.transport.trustedCertificatesFile = argument("--ca-file")
    options.stateFile = argument("--state")
    log("browser ready (\(headed ? "headed" : "headless")); connecting to \(url)")
    let client = try await ClientConnection.connect(websocketURL: url, token: token, executor: executor, options: options)
    let end = await client.waitForEnd()
    log(end.map { "session ended: \($0.phase.rawValue)" } ?? "connection closed")
    browser.stop()
    exit(0)
} catch {
    log("switchboard-browser: \(error)")
    browser.stop()
    exit(1)
}
