import Testing
@testable import SwitchboardProtocol

@Suite struct Catalog {
    /// One valid params object per catalog command.
    static let valid: [(String, JSONObject)] = [
        ("navigate", ["url": .string("https://example.com"), "waitUntil": .string("load")]),
        ("reload", [:]), ("goBack", [:]), ("goForward", [:]),
        ("waitForNavigation", ["urlPattern": .string("example\\.com/.*"), "timeout": .int(1000)]),
        ("click", ["selector": .string("#b"), "button": .string("left"), "clickCount": .int(2)]),
        ("fill", ["uid": .string("e7"), "value": .string("secret")]),
        ("type", ["selector": .string("#q"), "text": .string("hi"), "delayMs": .int(5)]),
        ("select", ["selector": .string("#s"), "values": .array([.string("a")])]),
        ("hover", ["selector": .string("a")]),
        ("press", ["key": .string("Enter")]),
        ("scroll", ["direction": .string("down"), "amount": .int(300)]),
        ("waitForSelector", ["selector": .string("#x"), "state": .string("visible")]),
        ("getAttribute", ["selector": .string("a"), "name": .string("href")]),
        ("textContent", ["selector": .string("h1")]), ("innerHTML", ["selector": .string("h1")]), ("isVisible", ["uid": .string("e1")]),
        ("evaluate", ["expression": .string("return 1")]),
        ("url", [:]), ("title", [:]), ("content", [:]),
        ("screenshot", ["format": .string("png"), "fullPage": .bool(true)]),
        ("extract", [:]),
        ("waitForNetworkIdle", ["idleMs": .int(500)]),
        ("waitForTimeout", ["ms": .int(100)]),
        ("updateStatus", ["progress": .double(0.5)]),
    ]

    @Test func everyCatalogEntryHasAValidExample() {
        #expect(Set(Self.valid.map(\.0)) == Set(CommandCatalog.names))
        for (name, params) in Self.valid {
            #expect(CommandCatalog.validate(command: name, params: params).isEmpty, "\(name)")
        }
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        var command: String; var params: JSONObject; var path: String
        var testDescription: String { "\(command) \(path)" }
    }

    static let invalid: [Bad] = [
        Bad(command: "teleport", params: [:], path: "command"),
        Bad(command: "navigate", params: [:], path: "params.url"),
        Bad(command: "navigate", params: ["url": .string("ftp://x.org/")], path: "params.url"),
        Bad(command: "navigate", params: ["url": .string("https://a.b"), "waitUntil": .string("never")], path: "params.waitUntil"),
        Bad(command: "click", params: [:], path: "params.selector"),
        Bad(command: "click", params: ["selector": .string("a"), "uid": .string("e1")], path: "params"),
        Bad(command: "click", params: ["selector": .int(3)], path: "params.selector"),
        Bad(command: "fill", params: ["selector": .string("a")], path: "params.value"),
        Bad(command: "type", params: ["selector": .string("a"), "text": .int(1)], path: "params.text"),
        Bad(command: "select", params: ["selector": .string("a"), "values": .array([.int(1)])], path: "params.values"),
        Bad(command: "press", params: [:], path: "params.key"),
        Bad(command: "waitForSelector", params: ["selector": .string("a"), "state": .string("gone")], path: "params.state"),
        Bad(command: "waitForNavigation", params: ["urlPattern": .string("(unclosed")], path: "params.urlPattern"),
        Bad(command: "getAttribute", params: ["selector": .string("a")], path: "params.name"),
        Bad(command: "evaluate", params: [:], path: "params.expression"),
        Bad(command: "screenshot", params: ["format": .string("gif")], path: "params.format"),
        Bad(command: "waitForTimeout", params: ["ms": .int(60_001)], path: "params.ms"),
        Bad(command: "updateStatus", params: [:], path: "params"),
        Bad(command: "updateStatus", params: ["progress": .int(2)], path: "params.progress"),
    ]

    @Test(arguments: invalid) func invalidParams(_ bad: Bad) {
        let issues = CommandCatalog.validate(command: bad.command, params: bad.params)
        #expect(issues.contains { $0.path == bad.path }, "\(issues)")
    }

    @Test func unknownParamsAreAllowed() {
        #expect(CommandCatalog.validate(command: "navigate", params: ["url": .string("https://x.io"), "pad": .string("xxx")]).isEmpty)
    }

    @Test func effectiveTimeouts() {
        #expect(CommandCatalog.effectiveTimeout(command: "click", params: [:], timeoutMs: 100, sessionDefault: 30_000) == 100)
        #expect(CommandCatalog.effectiveTimeout(command: "click", params: [:], timeoutMs: nil, sessionDefault: 30_000) == 30_000)
        #expect(CommandCatalog.effectiveTimeout(command: "waitForSelector", params: ["timeout": .int(1000)], timeoutMs: nil, sessionDefault: 30_000) == 6000)
        #expect(CommandCatalog.effectiveTimeout(command: "waitForTimeout", params: ["ms": .int(40_000)], timeoutMs: nil, sessionDefault: 30_000) == 45_000)
    }
}

@Suite struct InboundDecoding {
    func command(_ text: String) -> Result<PeerMessage, InboundError> { InboundDecoder.decode(Array(text.utf8), role: .worker) }

    @Test func canonicalShapeKeepsRawParams() throws {
        let text = ##"{"type":"worker.command","id":"c7","command":"click","params":{"selector":"#login" , "x":1},"timeoutMs":10000}"##
        guard case .success(.command(let c)) = command(text) else { Issue.record("not a command"); return }
        #expect(c.id == "c7")
        #expect(c.command == "click")
        #expect(c.timeoutMs == 10000)
        #expect(String(decoding: try #require(c.rawParams), as: UTF8.self) == ##"{"selector":"#login" , "x":1}"##)
    }

    @Test(arguments: [
        ##"{"type":"worker.command","id":"c7","command":{"action":"click","selector":"#login"}}"##,
        ##"{"type":"worker.command","command":{"type":"click","selector":"#login"}}"##,
    ])
    func legacyShapesAreNormalised(_ text: String) {
        guard case .success(.command(let c)) = command(text) else { Issue.record("not a command"); return }
        #expect(c.command == "click")
        #expect(c.params == ["selector": .string("#login")])
        #expect(c.rawParams == nil)
    }

    @Test func legacyWaitAndSelectValue() {
        guard case .success(.command(let w)) = command(##"{"type":"worker.command","command":{"action":"wait","selector":"#a"}}"##) else { Issue.record("wait"); return }
        #expect(w.command == "waitForSelector")
        guard case .success(.command(let s)) = command(##"{"type":"worker.command","command":"select","params":{"selector":"#s","value":"b"}}"##) else { Issue.record("select"); return }
        #expect(s.params["values"] == .array([.string("b")]))
        #expect(s.rawParams == nil)
    }

    @Test(arguments: [
        ("not json", "envelope"), ("[1]", "envelope"), (#"{"no":"type"}"#, "envelope"), (#"{"type":5}"#, "envelope"),
        (#"{"type":"client.hello"}"#, "unknown"), (#"{"type":"worker.dance"}"#, "unknown"),
        (#"{"type":"worker.command","id":"","command":"reload"}"#, "invalid_message"),
        (#"{"type":"worker.command","id":"a\u0000b","command":"reload"}"#, "invalid_message"),
        (#"{"type":"worker.cancel","id":"\u0000"}"#, "invalid_message"),
        (#"{"type":"worker.command","id":"c","command":"reload","timeoutMs":-1}"#, "invalid_message"),
        (#"{"type":"worker.cancel"}"#, "invalid_message"),
        (#"{"type":"worker.command","id":"c","command":"click"}"#, "invalid_command"),
        (#"{"type":"worker.yield_to_user","conditions":[{"type":"url","pattern":"("}]}"#, "invalid_command"),
    ] as [(String, String)])
    func errorsAreClassified(_ text: String, _ kind: String) {
        guard case .failure(let e) = command(text) else { Issue.record("accepted \(text)"); return }
        switch e {
        case .invalidEnvelope: #expect(kind == "envelope")
        case .unknownType: #expect(kind == "unknown")
        case .invalidMessage: #expect(kind == "invalid_message")
        case .invalidCommand: #expect(kind == "invalid_command")
        }
    }

    /// Event types and sources are stored as text: a NUL in one is refused, not cut.
    @Test(arguments: [#"{"type":"nav\u0000x"}"#, #"{"type":"console","source":"\u0000"}"#])
    func eventTextsWithNULAreRefused(_ event: String) {
        let text = #"{"type":"client.events","clientSeq":1,"events":["# + event + "]}"
        guard case .failure(.invalidMessage) = InboundDecoder.decode(Array(text.utf8), role: .client) else { Issue.record("accepted \(event)"); return }
        guard case .success = InboundDecoder.decode(Array(text.replacing("\\u0000", with: "").utf8), role: .client) else { Issue.record("refused without NUL"); return }
    }

    @Test func responseErrorAsStringIsNormalised() {
        guard case .success(.commandResponse(let r)) = InboundDecoder.decode(Array(#"{"type":"client.command_response","id":"c1","error":"boom"}"#.utf8), role: .client) else { Issue.record("no"); return }
        #expect(r.error == CommandError(code: "command_failed", message: "boom"))
    }

    @Test func flatEventsAreNormalised() {
        let text = #"{"type":"client.events","clientSeq":3,"events":[{"type":"navigation","url":"https://a.b","ts":"2026-01-01T00:00:00.000Z"}]}"#
        guard case .success(.telemetry(let cs, let events)) = InboundDecoder.decode(Array(text.utf8), role: .client) else { Issue.record("no"); return }
        #expect(cs == 3)
        #expect(events.first?.payload == ["url": .string("https://a.b")])
        #expect(events.first?.ts == 1_767_225_600_000)
    }
}
