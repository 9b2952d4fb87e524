// A worker that creates a session, prints what a client needs to join it, and drives a short
// flow: navigate, read the title, extract the page (text, elements, obstacle), take a
// screenshot, then complete the session.
//
//   switchboard-example --server http://127.0.0.1:8080 --api-key KEY [--url URL] [--demo-client]
//
// Without --demo-client it prints the `switchboard-browser` command that joins the session as
// its client (run it in a second terminal) and waits for it. With --demo-client a scripted
// client (a pretend browser) joins from this process, so the flow runs without a browser.
import Foundation
import Switchboard
import SwitchboardProtocol

/// Prints a line at once (also when stdout is a pipe).
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

let env = ProcessInfo.processInfo.environment
let server = argument("--server") ?? env["SWITCHBOARD_URL"] ?? "http://127.0.0.1:8080"
let target = argument("--url") ?? "https://example.com/"
guard let apiKey = argument("--api-key") ?? env["SWITCHBOARD_API_KEY"] else {
    FileHandle.standardError.write(Data("usage: switchboard-example --server URL --api-key KEY [--url URL] [--demo-client]\n".utf8))
    exit(2)
}
var transport = TransportOptions()
transport.trustedCertificatesFile = argument("--ca-file")

/// A pretend browser for the demo: answers each command as a simple page would.
struct DemoBrowser: CommandExecutor {
    var capabilities: [String] { ["uid"] }
    func configure(_ c: ClientConfiguration, telemetry: TelemetrySink) async {
        say("client: joined \(c.sessionId); \(c.injectionScripts.count) injection script(s) to install")
    }
    func execute(_ command: ClientCommand) async throws -> JSON {
        say("client: \(command.name) \(JSONWriter.string(.object(command.params)))")
        switch command.name {
        case "navigate": return .object(["url": command.params["url"] ?? .null, "status": .int(200)])
        case "title": return .object(["value": .string("Example Domain")])
        case "extract":
            return .object(["text": .string("Example Domain\nThis domain is for use in examples."), "markdown": .string("# Example Domain"),
                            "elements": .array([.object(["uid": .string("e0"), "role": .string("link"), "name": .string("More information...")])])])
        case "screenshot":
            // A 1×1 PNG.
            return .object(["data": .string("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="),
                            "format": .string("png"), "width": .int(1), "height": .int(1)])
        default: throw CommandFailure.notSupported("the demo client does not do \(command.name)")
        }
    }
}

do {
    let api = SwitchboardAPI(baseURL: server, apiKey: apiKey, options: transport)
    let session = try await api.createSession(metadata: ["example": .string("quickstart")])
    say("session:      \(session.sessionId)")
    say("client URL:   \(session.websocketUrl)")
    say("client token: \(session.clientToken)")

    var client: ClientConnection? = nil
    if CommandLine.arguments.contains("--demo-client") {
        var o = ClientOptions()
        o.connection.transport = transport
        client = try await ClientConnection.connect(websocketURL: session.websocketUrl, token: session.clientToken,
                                                    executor: DemoBrowser(), options: o)
    } else {
        say("waiting for a client; run in a second terminal:")
        say("  swift run switchboard-browser --url \(session.websocketUrl) --token \(session.clientToken)")
    }

    let worker = try await api.connectWorker(session)
    let page = try await worker.navigate(target, waitUntil: .load)
    say("worker: navigated to \(page.url) (status \(page.status.map(String.init) ?? "-"))")
    say("worker: title is \(try await worker.title())")
    let content = try await worker.extract()
    say("worker: \(content.text.count) characters of text, \(content.elements.count) interactive elements, obstacle: \(content.obstacle?.type ?? "none")")
    for e in content.elements.prefix(5) { say("worker:   \(e.uid) \(e.role) \(e.name ?? "")") }
    let shot = try await worker.screenshot()
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(session.sessionId).png")
    FileManager.default.createFile(atPath: file.path, contents: Data(shot.bytes))
    say("worker: screenshot \(shot.width ?? 0)×\(shot.height ?? 0) saved to \(file.path)")
    let end = try await worker.complete(result: .object(["title": .string(try await worker.title())]))
    say("worker: session \(end.phase.rawValue) (\(end.reason.rawValue))")
    _ = await client?.waitForEnd()
} catch {
    FileHandle.standardError.write(Data("switchboard-example: \(error)\n".utf8))
    exit(1)
}
