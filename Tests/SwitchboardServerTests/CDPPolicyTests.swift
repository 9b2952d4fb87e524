import Glibc
import Testing
@testable import SwitchboardProtocol
@testable import SwitchboardServer

/// What the relay reads of a worker's CDP frame, what it refuses, and how it logs frames.
@Suite struct CDPPolicyTests {
    @Test(arguments: [
        (#"{"id":1,"method":"Page.navigate","params":{"url":"x"}}"#, CDPPolicy.Command(id: 1, method: "Page.navigate", sessionId: nil)),
        (#"{"method":"Runtime.evaluate","sessionId":"S","id":9007199254740991}"#, CDPPolicy.Command(id: 9007199254740991, method: "Runtime.evaluate", sessionId: "S")),
        (#"{"id":0,"method":""}"#, CDPPolicy.Command(id: 0, method: "", sessionId: nil)),
    ] as [(String, CDPPolicy.Command)])
    func commandsAreRead(frame: String, expected: CDPPolicy.Command) {
        #expect((try? JSONParser.parse(Array(frame.utf8))).flatMap(CDPPolicy.command) == expected)
    }

    @Test(arguments: [
        "", "null", "[]", "{}", #"{"id":1}"#, #"{"method":"X"}"#, #"{"id":"1","method":"X"}"#, #"{"id":-1,"method":"X"}"#,
        #"{"id":1.5,"method":"X"}"#, #"{"id":1e300,"method":"X"}"#, #"{"id":1,"method":7}"#, #"{"id":1,"method":"X""#,
        String(repeating: "[", count: 10_000), #"{"id":1,"method":"X","params":"# + String(repeating: "[", count: 10_000),
    ])
    func anythingElseIsNotACommand(frame: String) {
        #expect((try? JSONParser.parse(Array(frame.utf8))).flatMap(CDPPolicy.command) == nil)
    }

    @Test func refusalsAnswerLikeChromium() throws {
        for method in ["Browser.close", "Browser.crash", "Browser.crashGpuProcess"] { #expect(CDPPolicy.refused.contains(method)) }
        #expect(!CDPPolicy.refused.contains("Target.closeTarget") && !CDPPolicy.refused.contains("Page.close"))
        let answer = try JSONParser.parse(CDPPolicy.refusal(CDPPolicy.Command(id: 7, method: "Browser.close", sessionId: "S")))
        #expect(answer["id"]?.intValue == 7 && answer["sessionId"]?.stringValue == "S")
        #expect(answer["error"]?["code"]?.intValue == -32000 && answer["error"]?["message"]?.stringValue?.contains("refused") == true)
        let bare = try JSONParser.parse(CDPPolicy.refusal(CDPPolicy.Command(id: 1, method: "Browser.crash", sessionId: nil)))
        #expect(bare["sessionId"] == nil)
    }

    @Test func cdpLogLinesRedactInputAndPageValues() throws {
        let path = "/tmp/switchboard-cdp-log-\(getpid()).jsonl"
        defer { unlink(path) }
        let log = try TrafficLog(options: TrafficLog.Options(path: path))
        let frames = [
            #"{"id":1,"method":"Input.insertText","params":{"text":"alice@example.com"}}"#,
            #"{"id":2,"result":{"result":{"type":"string","value":"secret page value"}}}"#,
            #"{"id":3,"method":"Network.setCookies","params":{"cookies":[{"name":"sid","value":"hunter2"}]}}"#,
            #"{"method":"Page.frameNavigated","params":{"frame":{"url":"https://example.com/"}}}"#,
        ]
        for (k, f) in frames.enumerated() {
            log.cdp(session: "s", direction: k == 1 ? "client_to_worker" : "worker_to_client", channel: 1,
                    frame: try JSONParser.parse(Array(f.utf8)), bytes: f.utf8.count)
        }
        log.close()
        let text = String(decoding: try #require(contents(of: path)), as: UTF8.self)
        #expect(!text.contains("alice@example.com") && !text.contains("secret page value") && !text.contains("hunter2"))
        #expect(text.contains("https://example.com/") && text.contains("[redacted: 17 chars]"))
        let lines = text.split(separator: "\n")
        #expect(lines.count == 4)
        for line in lines {
            let v = try JSONParser.parse(Array(line.utf8))
            #expect(v["event"]?.stringValue == "cdp" && v["channel"]?.intValue == 1)
        }
    }
}

private func contents(of path: String) -> [UInt8]? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}
