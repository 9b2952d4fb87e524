// Drives the WebSocket client transport through the Autobahn|Testsuite fuzzing server
// (scripts/conformance.sh client): reads the case count, echoes every message of every case,
// then asks the server to write its reports. AUTOBAHN_URL and AUTOBAHN_AGENT name the server
// and the agent.
import Foundation
import WebSocketClient

let base = ProcessInfo.processInfo.environment["AUTOBAHN_URL"] ?? "ws://127.0.0.1:9001"
let agent = ProcessInfo.processInfo.environment["AUTOBAHN_AGENT"] ?? "switchboard"
var options = WebSocket.Options()
options.maxMessageSize = 64 << 20
options.connectTimeoutMs = 30_000

/// Connects to `path` and echoes every message until the server closes.
func echo(_ path: String) async -> [UInt8]? {
    guard let ws = try? await WebSocket.connect(to: base + path, options: options) else { return nil }
    var first: [UInt8]? = nil
    for await event in ws.events {
        switch event {
        case .text(let t): if first == nil { first = t }; ws.send(text: t)
        case .binary(let b): ws.send(binary: b)
        case .closed: return first
        }
    }
    return first
}

/// Reads the case count (the first text message) and closes.
func caseCount() async -> Int {
    guard let ws = try? await WebSocket.connect(to: base + "/getCaseCount", options: options) else { return 0 }
    for await event in ws.events {
        if case .text(let t) = event { ws.close(); return Int(String(decoding: t, as: UTF8.self)) ?? 0 }
        if case .closed = event { break }
    }
    return 0
}

let count = await caseCount()
guard count > 0 else { FileHandle.standardError.write("autobahn client: no case count from \(base)\n".data(using: .utf8)!); exit(1) }
for i in 1...count {
    _ = await echo("/runCase?case=\(i)&agent=\(agent)")
}
_ = await echo("/updateReports?agent=\(agent)")
print("autobahn client: ran \(count) cases")
