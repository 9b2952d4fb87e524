// A worker that creates a session, prints what a client needs to join it, and drives a short
// flow: navigate, read the title, fill and submit a form, then completes the session.
//
//   switchboard-example --server http://127.0.0.1:8080 --api-key KEY [--demo-client]
//
// With --demo-client a scripted client joins from this process (it pretends to be a browser),
// so the flow runs end to end against any server. Without it, connect a client to the printed
// URL with the printed token.
import Foundation
import Switchboard
import SwitchboardProtocol

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

let env = ProcessInfo.processInfo.environment
let server = argument("--server") ?? env["SWITCHBOARD_URL"] ?? "http://127.0.0.1:8080"
guard let apiKey = argument("--api-key") ?? env["SWITCHBOARD_API_KEY"] else {
    FileHandle.standardError.write(Data("usage: switchboard-example --server URL --api-key KEY [--demo-client]\n".utf8))
    exit(2)
}
var transport = TransportOptions()
transport.trustedCertificatesFile = argument("--ca-file")

/// A pretend browser for the demo: answers each command as a page at example.test would.
struct DemoBrowser: CommandExecutor {
    var capabilities: [String] { ["uid"] }
    func configure(_ c: ClientConfiguration, telemetry: TelemetrySink) async {
        print("client: joined \(c.sessionId); \(c.injectionScripts.count) injection script(s) to install")
    }
    func execute(_ command: ClientCommand) async throws -> JSON {
        print("client: \(command.name) \(JSONWriter.string(.object(command.params)))")
        switch command.name {
        case "navigate": return .object(["url": command.params["url"] ?? .null, "status": .int(200)])
        case "title": return .object(["value": .string("Example Domain")])
        case "fill", "click": return .object(["ok": .bool(true)])
        default: throw CommandFailure.notSupported("the demo client does not do \(command.name)")
        }
    }
}

do {
    let api = SwitchboardAPI(baseURL: server, apiKey: apiKey, options: transport)
    let session = try await api.createSession(metadata: ["example": .string("quickstart")])
    print("session:      \(session.sessionId)")
    print("client URL:   \(session.websocketUrl)?role=client")
    print("client token: \(session.clientToken)")

    var client: ClientConnection? = nil
    if CommandLine.arguments.contains("--demo-client") {
        var o = ClientOptions()
        o.connection.transport = transport
        client = try await ClientConnection.connect(websocketURL: session.websocketUrl, token: session.clientToken,
                                                    executor: DemoBrowser(), options: o)
    } else {
        print("waiting for a client to connect…")
    }

    let worker = try await api.connectWorker(session)
    let page = try await worker.navigate("https://example.test/login", waitUntil: .load)
    print("worker: navigated to \(page.url) (status \(page.status.map(String.init) ?? "-"))")
    print("worker: title is \(try await worker.title())")
    try await worker.fill(.selector("#email"), "user@example.test")
    try await worker.click(.selector("button[type=submit]"))
    let end = try await worker.complete(result: .object(["signedIn": .bool(true)]))
    print("worker: session \(end.phase.rawValue) (\(end.reason.rawValue))")
    _ = await client?.waitForEnd()
} catch {
    FileHandle.standardError.write(Data("switchboard-example: \(error)\n".utf8))
    exit(1)
}
