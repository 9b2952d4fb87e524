import Testing
@testable import Switchboard
import SwitchboardProtocol
@testable import WebSocketClient
import WebSocketCore

/// The SDK's decisions as plain values, table-driven, without sockets.
@Suite struct SDKValueTests {
    @Test(arguments: [
        (UInt16(1000), CloseDecision.stop), (1001, .reconnect), (1002, .stop), (1003, .stop), (1006, .reconnect),
        (1007, .stop), (1008, .stop), (1009, .stop), (1011, .reconnect), (4000, .stop), (4001, .stop), (4002, .stop),
        (4003, .reconnect), (4008, .reconnect), (4012, .reconnect), (4029, .reconnect), (4999, .reconnect),
    ])
    func closeCodesDecideReconnection(code: UInt16, decision: CloseDecision) {
        #expect(CloseDecision.after(code: code) == decision)
    }

    @Test func backoffGrowsWithJitterAndIsCapped() {
        let b = Backoff(baseMs: 100, maxMs: 1000)
        #expect(b.delayMs(attempt: 1, random: 0) == 50 && b.delayMs(attempt: 1, random: 1) == 100)
        #expect(b.delayMs(attempt: 3, random: 0) == 200 && b.delayMs(attempt: 3, random: 1) == 400)
        #expect(b.delayMs(attempt: 10, random: 1) == 1000 && b.delayMs(attempt: 10, random: 0) == 500)
        // Absurd inputs stay in range (no overflow, no negative delay).
        #expect(b.delayMs(attempt: .max, random: 1) == 1000)
        #expect(b.delayMs(attempt: -5, random: -3) == 50)
        #expect(b.delayMs(attempt: 2, random: .nan) >= 100)
    }

    @Test func seqTrackerDropsWhatWasProcessed() {
        var t = SeqTracker(lastSeq: 5)
        #expect(!t.accept(3) && !t.accept(5))
        #expect(t.accept(6) && t.lastSeq == 6)
        #expect(t.accept(nil) && t.lastSeq == 6)
        // A restart gap: later seqs jump; older ones stay duplicates.
        #expect(t.accept(10_006) && !t.accept(7))
    }

    @Test func responseCacheKeepsTheLastSixteen() {
        var c = ResponseCache()
        for k in 0..<20 { c.store("c\(k)", [UInt8(k)]) }
        #expect(c.count == 16 && c["c3"] == nil && c["c4"] == [4] && c["c19"] == [19])
        c.store("c4", [99]) // an update does not grow it
        #expect(c.count == 16 && c["c4"] == [99])
    }

    @Test func telemetryBatchesAreNumberedKeptAndResumed() {
        var t = TelemetryBuffer(maxBatch: 2, maxUnackedEvents: 6)
        let e = TelemetryEvent(type: "console", ts: 1, source: "client", payload: [:])
        #expect(t.seal() == nil)
        #expect(!t.add(e) && t.add(e))
        #expect(t.seal()?.clientSeq == 1)
        _ = t.add(e)
        #expect(t.seal()?.clientSeq == 2)
        t.ack(1)
        #expect(t.unacked.map(\.clientSeq) == [2])
        // The server stored up to 7 (an earlier run of this client): numbering goes on after it.
        t.resume(lastClientSeq: 7)
        #expect(t.unacked.isEmpty && t.nextClientSeq == 8)
        // Unacked events are bounded: the oldest batches go first, counted.
        for _ in 0..<10 { _ = t.add(e); _ = t.add(e); _ = t.seal() }
        #expect(t.unacked.count == 3 && t.dropped == 14 && t.unacked.first?.clientSeq == 15)
        // The batch size never exceeds what the server accepts.
        #expect(TelemetryBuffer(maxBatch: 5000).maxBatch == 1000)
    }

    @Test(arguments: [
        ("ws://127.0.0.1:8080/sessions/s/ws", Endpoint(host: "127.0.0.1", port: 8080, tls: false, target: "/sessions/s/ws")),
        ("wss://relay.example.com/x?role=worker", Endpoint(host: "relay.example.com", port: 443, tls: true, target: "/x?role=worker")),
        ("http://[::1]:9/", Endpoint(host: "::1", port: 9, tls: false, target: "/")),
        ("https://h?q=1", Endpoint(host: "h", port: 443, tls: true, target: "/?q=1")),
        ("HTTP://user@h:80#frag", Endpoint(host: "h", port: 80, tls: false, target: "/")),
    ])
    func endpointsParse(url: String, expected: Endpoint) {
        #expect(Endpoint(url) == expected)
    }

    @Test(arguments: ["ftp://h/", "ws://", "ws://h:0/", "ws://h:65536/", "ws://h:99999999999999999999/", "ws://[::1/", "h:80", "ws://h:8a/"])
    func badEndpointsAreRefused(url: String) {
        #expect(Endpoint(url) == nil)
    }

    @Test func hostHeaderNamesNonDefaultPorts() {
        #expect(Endpoint("wss://a.test/")?.hostHeader == "a.test")
        #expect(Endpoint("ws://a.test:81/")?.hostHeader == "a.test:81")
        #expect(Endpoint("ws://[::1]:81/")?.hostHeader == "[::1]:81")
    }

    @Test func responseHeadsParseIncrementally() {
        let text = Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nrest".utf8)
        for cut in 0..<(text.count - 4) {
            if case .done = ResponseHead.parse(text[0..<cut]) { Issue.record("complete at \(cut)") }
        }
        guard case .done(let h) = ResponseHead.parse(text[...]) else { Issue.record("not parsed"); return }
        #expect(h.status == 101 && h.headers["upgrade"] == "websocket" && h.length == text.count - 4)
        for bad in ["HTTP/1.1 abc X\r\n\r\n", "SMTP 220\r\n\r\n", "HTTP/1.1 99 X\r\n\r\n", "HTTP/1.1 200 OK\r\nno colon\r\n\r\n"] {
            guard case .invalid = ResponseHead.parse(Array(bad.utf8)[...]) else { Issue.record("accepted \(bad)"); continue }
        }
        guard case .invalid = ResponseHead.parse([UInt8](repeating: 65, count: ResponseHead.maxSize + 1)[...]) else {
            Issue.record("an endless head was not refused"); return
        }
    }

    @Test func upgradeResponsesAreChecked() throws {
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        func headers(_ extra: [(String, String)] = [], accept: String = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") -> HTTPHeaders {
            HTTPHeaders([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)] + extra)
        }
        #expect(try ClientHandshake.validate(status: 101, headers: headers(), key: key, offeredDeflate: true).get() == nil)
        let d = try ClientHandshake.validate(status: 101, headers: headers([("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover; client_max_window_bits=10")]),
                                              key: key, offeredDeflate: true).get()
        #expect(d?.serverNoContextTakeover == true && d?.clientMaxWindowBits == 10)
        let refusals: [(Int, HTTPHeaders, Bool)] = [
            (200, headers(), true),
            (101, headers(accept: "wrong="), true),
            (101, HTTPHeaders([("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]), true),
            (101, headers([("Sec-WebSocket-Extensions", "permessage-deflate")]), false),
            (101, headers([("Sec-WebSocket-Extensions", "x-other")]), true),
            (101, headers([("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=99")]), true),
            (101, headers([("Sec-WebSocket-Extensions", "permessage-deflate; mystery")]), true),
        ]
        for (status, h, offered) in refusals {
            if case .success = ClientHandshake.validate(status: status, headers: h, key: key, offeredDeflate: offered) { Issue.record("accepted \(status) \(h.fields)") }
        }
        let head = ClientHandshake.requestHead(host: "h:1", target: "/x", key: key, offerDeflate: true, extraHeaders: [("Authorization", "Bearer t")])
        #expect(head.hasPrefix("GET /x HTTP/1.1\r\nHost: h:1\r\n") && head.contains("Authorization: Bearer t\r\n") && head.hasSuffix("\r\n\r\n"))
    }

    @Test func chunkedBodiesAreJoined() {
        #expect(HTTPClient.dechunk(Array("4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n".utf8)[...]) == Array("Wikipedia".utf8))
        #expect(HTTPClient.dechunk(Array("4\r\nWiki\r\n5\r\nped".utf8)[...]) == nil)
        #expect(HTTPClient.dechunk(Array("zz\r\n".utf8)[...]) == nil)
        #expect(HTTPClient.dechunk(Array("fffffffffffff\r\n".utf8)[...]) == nil)
    }

    /// Feeds `frame` to a client-side processor: the texts delivered, or the error.
    func clientSide(_ frame: [UInt8]) -> Result<[String], WebSocketError> {
        var p = InboundProcessor(requireMask: false, forbidMask: true)
        var bytes = frame
        var got: [String] = []
        let outcome = bytes.withUnsafeMutableBytes { b in
            Result { () throws(WebSocketError) in _ = try p.process(b) { if case .text(let r) = $0 { got.append(r.string) } } }
        }
        return outcome.map { got }
    }

    @Test func serverFramesMustNotBeMasked() {
        #expect(clientSide(FrameWriter.frame(.text, payload: Array("hi".utf8), maskKey: 0x01020304)) == .failure(.maskedServerFrame))
        #expect(clientSide(FrameWriter.frame(.text, payload: Array("hi".utf8))) == .success(["hi"]))
    }
}

/// What a hostile or broken server can send the SDK: every input is refused cleanly.
@Suite struct HostileServerInputTests {
    @Test(arguments: [
        #"{"type":"server.ack","seq":1e300,"clientSeq":1}"#, #"{"type":"server.ack","seq":-1e400,"clientSeq":1}"#,
        #"{"type":"server.ack","seq":18446744073709551616,"clientSeq":1}"#, #"{"type":"server.ack","seq":"7","clientSeq":1}"#,
        #"{"type":"server.command","seq":1,"id":"c","command":"click","params":[],"timeoutMs":9223372036854775808}"#,
        #"{"type":"server.replay","fromSeq":1,"toSeq":2,"complete":"yes","messages":[]}"#,
        #"{"type":"server.replay","fromSeq":1e20,"toSeq":2,"complete":true,"messages":[]}"#,
        #"{"seq":1}"#, #"[1,2]"#, "", "nul", #"{"type":7}"#,
        String(repeating: "[", count: 100_000), String(repeating: #"{"a":"#, count: 10_000),
    ])
    func malformedMessagesAreRefused(text: String) {
        #expect(throws: ServerMessage.DecodingFailure.self) { try ServerMessage.decode(Array(text.utf8)) }
    }

    @Test func aReplayOfBrokenMessagesDecodesWhatItCan() throws {
        guard case .replay(let r) = try ServerMessage.decode(Array(#"{"type":"server.replay","fromSeq":3,"toSeq":4,"complete":true,"messages":[{"type":"server.ack","seq":3,"clientSeq":1},{"type":"server.ack","seq":"x"}]}"#.utf8)) else {
            Issue.record("not a replay"); return
        }
        #expect(r.messages.count == 2)
        #expect(throws: Never.self) { try ServerMessage.decode(r.messages[0]) }
        #expect(throws: ServerMessage.DecodingFailure.self) { try ServerMessage.decode(r.messages[1]) }
    }

    @Test func httpBodiesWithHostileLengths() throws {
        func head(_ extra: String) throws -> ResponseHead {
            guard case .done(let h) = ResponseHead.parse(Array("HTTP/1.1 200 OK\r\n\(extra)\r\n\r\n".utf8)[...]) else { throw SwitchboardError.invalidResponse("no head") }
            return h
        }
        // A length beyond Int or negative is not trusted: the body runs to the close.
        for bad in ["99999999999999999999999", "-5", "1e3", ""] {
            let h = try head("Content-Length: \(bad)")
            #expect(HTTPClient.complete(h, Array("abc".utf8)[...], eof: false) == nil)
            #expect(HTTPClient.complete(h, Array("abc".utf8)[...], eof: true) == Array("abc".utf8))
        }
        // A huge declared length waits for bytes (the caller's body limit ends it).
        #expect(HTTPClient.complete(try head("Content-Length: 9223372036854775807"), [1, 2][...], eof: false) == nil)
        for chunk in ["ffffffff\r\nab", "-1\r\n", "7fffffffffffffff\r\n", "\r\n", "0x10\r\n"] {
            #expect(HTTPClient.dechunk(Array(chunk.utf8)[...]) == nil)
        }
        for status in ["HTTP/1.1 9999999999999999999 X", "HTTP/1.1 -20 X", "HTTP/1.1 20 X"] {
            guard case .invalid = ResponseHead.parse(Array("\(status)\r\n\r\n".utf8)[...]) else { Issue.record("accepted \(status)"); continue }
        }
    }

    @Test func upgradeResponsesWithHostileNumbers() {
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        for bits in ["99999999999999999999999", "-15", "0", "16", "1e1", ""] {
            let h = HTTPHeaders([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                                 ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=\(bits)")])
            if case .success = ClientHandshake.validate(status: 101, headers: h, key: key, offeredDeflate: true) { Issue.record("accepted \(bits)") }
        }
    }
}
