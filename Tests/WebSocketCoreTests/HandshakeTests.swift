import Testing
@testable import WebSocketCore

@Suite struct HandshakeTests {
    static func headers(_ extra: [(String, String)] = [], dropping: Set<String> = []) -> HTTPHeaders {
        var base: [(String, String)] = [
            ("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ]
        base.removeAll { dropping.contains($0.0) }
        return HTTPHeaders(base + extra)
    }

    @Test func rfcAcceptKey() {
        #expect(Handshake.acceptKey(for: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func validRequestIsAccepted() throws {
        let result = Handshake.validate(method: "GET", version: "HTTP/1.1", headers: Self.headers(), deflate: nil)
        let accept = try result.get()
        #expect(accept.responseHead.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(accept.responseHead.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
        #expect(accept.deflate == nil)
    }

    struct Refused: Sendable, CustomTestStringConvertible {
        var name: String; var method = "GET"; var version = "HTTP/1.1"; var headers: HTTPHeaders; var status: Int
        var testDescription: String { name }
    }

    static let refusals: [Refused] = [
        Refused(name: "POST", method: "POST", headers: headers(), status: 405),
        Refused(name: "HTTP/1.0", version: "HTTP/1.0", headers: headers(), status: 400),
        Refused(name: "no Upgrade", headers: headers(dropping: ["Upgrade"]), status: 400),
        Refused(name: "no Connection: Upgrade", headers: headers([("Connection", "keep-alive")], dropping: ["Connection"]), status: 400),
        Refused(name: "no key", headers: headers(dropping: ["Sec-WebSocket-Key"]), status: 400),
        Refused(name: "key of 15 bytes", headers: headers([("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA")], dropping: ["Sec-WebSocket-Key"]), status: 400),
        Refused(name: "key not base64", headers: headers([("Sec-WebSocket-Key", "not base64 at all!!!!!!=")], dropping: ["Sec-WebSocket-Key"]), status: 400),
        Refused(name: "version 8", headers: headers([("Sec-WebSocket-Version", "8")], dropping: ["Sec-WebSocket-Version"]), status: 426),
        Refused(name: "no version", headers: headers(dropping: ["Sec-WebSocket-Version"]), status: 426),
    ]

    @Test(arguments: refusals) func refusal(_ r: Refused) {
        let result = Handshake.validate(method: r.method, version: r.version, headers: r.headers, deflate: nil)
        guard case .failure(let refusal) = result else { Issue.record("accepted"); return }
        #expect(refusal.status == r.status)
        if r.status == 426 { #expect(refusal.headers.contains { $0.0 == "Sec-WebSocket-Version" && $0.1 == "13" }) }
    }

    @Test func connectionTokenListIsCaseInsensitive() throws {
        let h = Self.headers([("Connection", "Keep-Alive,UPGRADE")], dropping: ["Connection"])
        _ = try Handshake.validate(method: "GET", version: "HTTP/1.1", headers: h, deflate: nil).get()
    }
}

@Suite struct DeflateNegotiation {
    let shared = DeflatePolicy()
    let takeover = DeflatePolicy(contextTakeover: true, serverWindowBits: 12)

    @Test func commaSeparatedOffersInOneHeader() {
        // The first offer is unacceptable (unknown parameter); the second is taken.
        let p = Handshake.negotiateDeflate(offers: "permessage-deflate; foo=1, permessage-deflate; client_max_window_bits", policy: takeover)
        #expect(p == DeflateParameters(serverMaxWindowBits: 12))
    }

    @Test func serverWindowOf8IsDeclined() {
        #expect(Handshake.negotiateDeflate(offers: "permessage-deflate; server_max_window_bits=8", policy: takeover) == nil)
        let p = Handshake.negotiateDeflate(offers: "permessage-deflate; server_max_window_bits=8, permessage-deflate", policy: takeover)
        #expect(p == DeflateParameters(serverMaxWindowBits: 12))
    }

    @Test func serverWindowIsHonoured() {
        let p = Handshake.negotiateDeflate(offers: "permessage-deflate; server_max_window_bits=10", policy: takeover)
        #expect(p?.serverMaxWindowBits == 10)
        #expect(p?.headerValue == "permessage-deflate; server_max_window_bits=10")
    }

    @Test func contextTakeoverFlagsAreEchoed() {
        let p = Handshake.negotiateDeflate(offers: "permessage-deflate; server_no_context_takeover; client_no_context_takeover", policy: takeover)
        #expect(p?.serverNoContextTakeover == true)
        #expect(p?.clientNoContextTakeover == true)
    }

    @Test func sharedPolicyAsksForNoContextTakeoverBothWays() {
        let p = Handshake.negotiateDeflate(offers: "permessage-deflate", policy: shared)
        #expect(p?.headerValue == "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    }

    @Test(arguments: [
        "permessage-deflate; server_max_window_bits", "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=7", "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover", "x-webkit-deflate-frame",
    ])
    func badOffersAreDeclined(_ offer: String) {
        #expect(Handshake.negotiateDeflate(offers: offer, policy: takeover) == nil)
    }
}

@Suite struct DeflateCodec {
    @Test func roundTripWithAndWithoutContext() throws {
        for reset in [true, false] {
            let d = Deflater(windowBits: 15, resetAfterMessage: reset)
            let i = Inflater(resetAfterMessage: reset)
            for n in 0..<5 {
                let text = Array(String(repeating: "switchboard \(n) ", count: 200).utf8)
                let c = try #require(text.withUnsafeBytes { d.compress($0) })
                #expect(c.count - FrameWriter.maxHeaderSize < text.count / 4)
                let back = try i.inflate(c[FrameWriter.maxHeaderSize...], maxOutput: 1 << 20)
                #expect(Array(back[FrameWriter.maxHeaderSize...]) == text)
            }
        }
    }

    @Test func bombIsStoppedAtTheLimit() throws {
        let d = Deflater(windowBits: 15, resetAfterMessage: true)
        let zeros = [UInt8](repeating: 0, count: 4 << 20)
        let c = try #require(zeros.withUnsafeBytes { d.compress($0) })
        #expect(c.count < 32_000)   // a 4 MiB message in under 32 KB: a bomb
        let i = Inflater(resetAfterMessage: true)
        #expect(throws: WebSocketError.messageTooLarge) { try i.inflate(c[FrameWriter.maxHeaderSize...], maxOutput: 1 << 20) }
    }

    @Test func compressedMessageThroughTheProcessor() throws {
        let d = Deflater(windowBits: 15, resetAfterMessage: true)
        let text = Array(String(repeating: "hello ", count: 100).utf8)
        let c = try #require(text.withUnsafeBytes { d.compress($0) })
        let frame = masked(.text, Array(c[FrameWriter.maxHeaderSize...]), rsv1: true)
        let (messages, error) = process(frame, inflater: Inflater(resetAfterMessage: true))
        #expect(error == nil)
        #expect(messages.first?.textValue == String(repeating: "hello ", count: 100))
    }

    @Test func garbageIsACompressionError() {
        let frame = masked(.text, [0xFF, 0xFF, 0xFF, 0xFF, 0x00], rsv1: true)
        let (_, error) = process(frame, inflater: Inflater(resetAfterMessage: true))
        #expect(error == .compressionFailed)
    }
}

@Suite struct CloseHandshake {
    @Test func serverInitiated() {
        var m = CloseStateMachine()
        #expect(m.close(.goingAway, reason: "bye") == [.sendClose(.goingAway, "bye"), .awaitPeerClose])
        #expect(m.close(.normal) == [.none])
        #expect(m.receivedClose(.goingAway) == [.closeSocketAfterFlush])
        #expect(m.finalCode == .goingAway)
    }

    @Test func peerInitiatedIsEchoed() {
        var m = CloseStateMachine()
        #expect(m.receivedClose(CloseCode(4321)) == [.sendClose(CloseCode(4321), ""), .closeSocketAfterFlush])
        #expect(m.finalCode == CloseCode(4321))
        #expect(m.receivedClose(.normal) == [.none])
    }

    @Test func emptyCloseIsAnsweredEmpty() {
        var m = CloseStateMachine()
        #expect(m.receivedClose(nil) == [.sendClose(nil, ""), .closeSocketAfterFlush])
        #expect(m.finalCode == .noStatus)
    }

    @Test func failureDoesNotWait() {
        var m = CloseStateMachine()
        #expect(m.fail(.protocolError, reason: "x") == [.sendClose(.protocolError, "x"), .closeSocketAfterFlush])
        #expect(m.fail(.protocolError, reason: "x") == [.none])
    }

    @Test func vanishedPeerIs1006() {
        var m = CloseStateMachine()
        #expect(m.transportClosed() == [.closeSocketAfterFlush])
        #expect(m.finalCode == .abnormal)
    }

    @Test func closeReasonIsCutToFit() {
        let p = FrameWriter.closePayload(code: .normal, reason: String(repeating: "é", count: 100))
        #expect(p.count <= 125)
        #expect(UTF8Validator.isValid(Array(p[2...])))
    }
}
