import Foundation
import Testing
@testable import SwitchboardProtocol

/// A reproducible generator of random wire values (SplitMix64).
struct Gen: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    static let alphabet: [Character] = Array("abcXYZ019 _-./:\"\\\n\t\u{1}\u{7f}é漢🙂")

    mutating func string(_ max: Int = 12) -> String {
        String((0..<Int.random(in: 0...max, using: &self)).map { _ in Gen.alphabet.randomElement(using: &self)! })
    }
    mutating func id() -> String { "i" + string(20) }
    mutating func int(_ r: ClosedRange<Int> = 0...WireNumbers.maxSafeInteger) -> Int { Int.random(in: r, using: &self) }
    mutating func bool() -> Bool { Bool.random(using: &self) }

    mutating func json(depth: Int = 3) -> JSON {
        switch int(0...(depth > 0 ? 6 : 3)) {
        case 0: return .null
        case 1: return .bool(bool())
        case 2: return .int(int(-1_000_000...1_000_000))
        case 3: return .string(string())
        case 4: return .double(Double(int(-1000...1000)) / 8)
        case 5: return .array((0..<int(0...3)).map { _ in json(depth: depth - 1) })
        default: return .object(object(depth: depth - 1))
        }
    }
    mutating func object(depth: Int = 2) -> JSONObject {
        var o = JSONObject()
        for k in 0..<int(0...4) { o["k\(k)" + string(4)] = json(depth: depth) }
        return o
    }
}

/// Every message the server sends, written by its fast encoder, decodes into its Codable type
/// with the same values; and the Codable encoding of that value is the same JSON again.
@Suite struct WireSchemaTests {
    static let rounds = 300

    func written(_ type: StaticString, seq: Int?, _ fields: (inout JSONWriter) -> Void) -> [UInt8] {
        JSONWriter.message(type: type, seq: seq, fields)
    }

    /// Decodes `bytes` as a server message, re-encodes the Codable value and checks that it
    /// is the same JSON as the fast encoder's.
    func roundTrip(_ bytes: [UInt8]) throws -> ServerMessage {
        let message = try ServerMessage.decode(bytes)
        let encoded: Data
        switch message {
        case .command(let m): encoded = try JSONEncoder().encode(m)
        case .commandResult(let m): encoded = try JSONEncoder().encode(m)
        case .cancel(let m): encoded = try JSONEncoder().encode(m)
        case .setInteractive(let m): encoded = try JSONEncoder().encode(m)
        case .ack(let m): encoded = try JSONEncoder().encode(m)
        case .event(let m): encoded = try JSONEncoder().encode(m)
        case .error(let m): encoded = try JSONEncoder().encode(m)
        case .sessionEnd(let m): encoded = try JSONEncoder().encode(m)
        case .replay(let m): encoded = try JSONEncoder().encode(m)
        case .hello(let m): encoded = try JSONEncoder().encode(m)
        case .cdpOpen(let m): encoded = try JSONEncoder().encode(m)
        case .cdp(let m): encoded = try JSONEncoder().encode(m)
        case .cdpClose(let m): encoded = try JSONEncoder().encode(m)
        case .unknown(let t, _): Issue.record("unknown type \(t)"); return message
        }
        let fast = try JSONParser.parse(bytes)
        let back = try JSONParser.parse(Array(encoded))
        #expect(withoutNulls(fast) == withoutNulls(back), "\(String(decoding: bytes, as: UTF8.self))")
        return message
    }

    /// Codable leaves out nil members where the fast encoder may write null.
    func withoutNulls(_ v: JSON) -> JSON {
        switch v {
        case .object(let o): return .object(JSONObject(o.members.filter { !$0.value.isNull }.map { ($0.key, withoutNulls($0.value)) }))
        case .array(let a): return .array(a.map(withoutNulls))
        default: return v
        }
    }

    @Test func commandAndResult() throws {
        var g = Gen(state: 1)
        for _ in 0..<Self.rounds {
            let (seq, id, name, params, timeout) = (g.int(1...1 << 40), g.id(), g.string(), g.object(), g.int(1...600_000))
            let raw = g.bool() ? JSONWriter.serialize(.object(params))[...] : nil
            guard case .command(let c) = try roundTrip(written("server.command", seq: seq) {
                ServerCommand.writeFields(&$0, id: id, command: name, params: params, rawParams: raw, timeoutMs: timeout)
            }) else { Issue.record("not a command"); continue }
            #expect(c.seq == seq && c.id == id && c.command == name && c.params == params && c.timeoutMs == timeout)

            let result: JSON? = g.bool() ? g.json() : nil
            let error: CommandError? = g.bool() ? CommandError(code: g.string(), message: g.bool() ? g.string(40) : nil) : nil
            let duration = g.int(0...1 << 31)
            guard case .commandResult(let r) = try roundTrip(written("server.command_result", seq: seq) {
                ServerCommandResult.writeFields(&$0, id: id, command: name, result: result, error: error, durationMs: duration)
            }) else { Issue.record("not a result"); continue }
            #expect(r.id == id && r.command == name && r.durationMs == duration && r.error == error)
            if error == nil { #expect((r.result ?? .null) == (result ?? .null)) } else { #expect(r.result == nil) }
        }
    }

    @Test func controlMessages() throws {
        var g = Gen(state: 2)
        for _ in 0..<Self.rounds {
            let seq = g.int(1...1 << 40)
            let id = g.id()
            guard case .cancel(let c) = try roundTrip(written("server.cancel", seq: seq) { ServerCancel.writeFields(&$0, id: id) })
            else { Issue.record("cancel"); continue }
            #expect(c.id == id && c.seq == seq)

            let cs = g.int(1...WireNumbers.maxSafeInteger)
            guard case .ack(let a) = try roundTrip(written("server.ack", seq: seq) { ServerAck.writeFields(&$0, clientSeq: cs) })
            else { Issue.record("ack"); continue }
            #expect(a.clientSeq == cs)

            let on = g.bool()
            let text: String? = on && g.bool() ? g.string(30) : nil
            let conditions: [JSON]? = on ? [.object(["index": .int(1), "type": .string("selector"), "selector": .string(g.string())])] : nil
            guard case .setInteractive(let s) = try roundTrip(written("server.set_interactive", seq: seq) {
                ServerSetInteractive.writeFields(&$0, interactive: on, yieldId: id, message: text, conditions: conditions)
            }) else { Issue.record("set_interactive"); continue }
            #expect(s.interactive == on && s.yieldId == id && s.message == text && (s.conditions?.count ?? 0) == (conditions?.count ?? 0))

            let code = ErrorCode.allCases.randomElement(using: &g)!
            let details: JSONObject? = g.bool() ? g.object() : nil
            let message = g.string(50)
            guard case .error(let e) = try roundTrip(written("server.error", seq: g.bool() ? seq : nil) {
                ServerError.writeFields(&$0, code: code, message: message, id: g.bool() ? id : nil, details: details)
            }) else { Issue.record("error"); continue }
            #expect(e.code == code && e.message == message && e.details == details)

            let phase = [Phase.complete, .failed, .expired].randomElement(using: &g)!
            let reason = [EndReason.workerCompleted, .cancelled, .sessionTimeout].randomElement(using: &g)!
            let value = g.json()
            guard case .sessionEnd(let end) = try roundTrip(written("server.session_end", seq: seq) {
                ServerSessionEnd.writeFields(&$0, phase: phase, reason: reason, result: value, error: value)
            }) else { Issue.record("session_end"); continue }
            #expect(end.phase == phase && end.reason == reason && (phase == .complete ? end.result : end.error) ?? .null == value)
        }
    }

    @Test func eventsAndReplay() throws {
        var g = Gen(state: 3)
        for _ in 0..<Self.rounds {
            let event = TelemetryEvent(type: g.string(), ts: Int64(g.int(0...253_402_300_799_999)), source: "client", payload: g.object())
            var eventJSON = try JSONParser.parse(Array(JSONEncoder().encode(event)))
            if case .object(var o) = eventJSON { o["eventSeq"] = .int(g.int(1...1 << 30)); eventJSON = .object(o) }
            let seq = g.int(1...1 << 40)
            guard case .event(let e) = try roundTrip(written("server.event", seq: seq) { ServerEvent.writeFields(&$0, event: eventJSON) })
            else { Issue.record("event"); continue }
            #expect(e.event.type == event.type && e.event.ts == event.ts && e.event.payload == event.payload && e.event.eventSeq != nil)

            let inner = (0..<g.int(1...4)).map { k in
                written("server.ack", seq: seq + k) { ServerAck.writeFields(&$0, clientSeq: k + 1) }[...]
            }
            var w = JSONWriter()
            let complete = g.bool()
            ServerReplay.write(&w, fromSeq: seq, toSeq: seq + inner.count - 1, complete: complete, messages: inner)
            guard case .replay(let r) = try roundTrip(w.bytes) else { Issue.record("replay"); continue }
            #expect(r.fromSeq == seq && r.toSeq == seq + inner.count - 1 && r.complete == complete)
            for (k, m) in r.messages.enumerated() {
                guard case .ack(let a) = try ServerMessage.decode(m) else { Issue.record("replayed"); continue }
                #expect(a.seq == seq + k && a.clientSeq == k + 1)
            }
        }
    }

    @Test func hellos() throws {
        var g = Gen(state: 5)
        for _ in 0..<Self.rounds {
            let role = Role.allCases.randomElement(using: &g)!
            let pending: PendingInfo? = g.bool() ? PendingInfo(id: g.id(), kind: g.bool() ? "command" : "yield", command: g.bool() ? g.string() : nil) : nil
            var h = ServerHello(currentSeq: g.int(0...1 << 40), sessionId: g.id(), role: role, serverVersion: g.string(),
                                phase: Phase.allCases.randomElement(using: &g)!, workerConnected: g.bool(), clientConnected: g.bool(),
                                interactive: g.bool(), pending: pending, expiresAt: Int64(g.int(0...253_402_300_799_999)),
                                metadata: g.bool() ? g.object() : nil, yieldId: g.bool() ? g.id() : nil)
            if role == .client {
                h.lastClientSeq = g.bool() ? g.int(1...1 << 40) : nil
                h.eventFilter = g.bool() ? .object(["types": .array([.string(g.string())])]) : nil
                h.capture = g.bool() ? .object(g.object()) : nil
                h.debug = g.bool() ? g.bool() : nil
                h.injectionScripts = [.object(["name": .string(g.string()), "source": .string(g.string(200))])]
            }
            var w = JSONWriter()
            h.write(&w)
            guard case .hello(let d) = try roundTrip(w.bytes) else { Issue.record("hello"); continue }
            #expect(d.currentSeq == h.currentSeq && d.sessionId == h.sessionId && d.role == role && d.phase == h.phase)
            #expect(d.pending == pending && d.expiresAt == h.expiresAt && d.yieldId == h.yieldId && d.interactive == h.interactive)
            if role == .client {
                #expect(d.lastClientSeq == h.lastClientSeq && d.debug == h.debug && d.metadata == nil)
                #expect(d.injectionScripts == h.injectionScripts && (d.eventFilter ?? .null) == (h.eventFilter ?? .null))
            } else {
                #expect(d.metadata == h.metadata && d.injectionScripts == nil)
            }
        }
    }

    @Test func unknownTypesKeepTheirSeq() throws {
        guard case .unknown(let t, let seq) = try ServerMessage.decode(Array(#"{"type":"server.later","seq":9,"x":1}"#.utf8)) else {
            Issue.record("decoded as a known type"); return
        }
        #expect(t == "server.later" && seq == 9)
        #expect(throws: ServerMessage.DecodingFailure.self) { try ServerMessage.decode(Array(#"{"seq":1}"#.utf8)) }
        #expect(throws: ServerMessage.DecodingFailure.self) { try ServerMessage.decode(Array(#"{"type":"server.ack","seq":"x"}"#.utf8)) }
    }

    // MARK: Peer → server: what the SDK encodes, the server decodes to the same values.

    @Test func cdpMessages() throws {
        var g = Gen(state: 7)
        for _ in 0..<Self.rounds {
            let channel = g.int(1...WireNumbers.maxSafeInteger)
            let frame = JSONWriter.string(.object(["id": .int(g.int()), "method": .string(g.string()), "params": .object(g.object())]))
            guard case .cdp(let f) = try roundTrip(written("server.cdp", seq: nil) { w in
                var copy = frame
                copy.withUTF8 { ServerCDPFrame.writeFields(&w, channel: channel, frame: $0) }
            }) else { Issue.record("server.cdp"); continue }
            #expect(f.channel == channel && f.data == frame)
            guard case .cdpOpen(let o) = try roundTrip(written("server.cdp_open", seq: nil) { ServerCDPOpen.writeFields(&$0, channel: channel) })
            else { Issue.record("server.cdp_open"); continue }
            #expect(o.channel == channel)
            let reason = g.string(40)
            guard case .cdpClose(let c) = try roundTrip(written("server.cdp_close", seq: nil) {
                ServerCDPClose.writeFields(&$0, channel: channel, reason: reason)
            }) else { Issue.record("server.cdp_close"); continue }
            #expect(c.channel == channel && c.reason == reason)

            // The client's frames, written directly and by Codable, decode on the server.
            let data = JSONWriter.string(.object(g.object()))
            for bytes in [ClientCDP.message(channel: channel, data: data), PeerMessageEncoder.encode(ClientCDP(channel: channel, data: data))] {
                guard case .success(.cdp(let ch, let d, _)) = InboundDecoder.decode(bytes, role: .client) else { Issue.record("client.cdp"); continue }
                #expect(ch == channel && d == data)
            }
            guard case .success(.cdpClose(let ch, let r)) = InboundDecoder.decode(PeerMessageEncoder.encode(ClientCDPClose(channel: channel, reason: reason)), role: .client)
            else { Issue.record("client.cdp_close"); continue }
            #expect(ch == channel && r == String(reason.prefix(200)))
            // The browser's frame must be one JSON object; a worker may not send them at all.
            guard case .failure(.invalidMessage) = InboundDecoder.decode(ClientCDP.message(channel: channel, data: "x" + data), role: .client) else {
                Issue.record("client.cdp with a frame that is not JSON"); continue
            }
            guard case .failure(.unknownType("client.cdp")) = InboundDecoder.decode(ClientCDP.message(channel: channel, data: data), role: .worker) else {
                Issue.record("client.cdp from a worker"); continue
            }
        }
    }

    @Test func peerMessagesDecodeOnTheServer() throws {
        var g = Gen(state: 4)
        for _ in 0..<Self.rounds {
            let hello = WorkerHello(protocolVersion: 1, sdk: SDKInfo(name: g.string(), version: "1.0"), lastSeq: g.bool() ? g.int() : nil,
                                    events: g.bool() ? ["navigation", g.string()] : nil)
            guard case .success(.hello(let h)) = InboundDecoder.decode(PeerMessageEncoder.encode(hello), role: .worker) else {
                Issue.record("worker.hello"); continue
            }
            #expect(h.lastSeq == hello.lastSeq && h.events == hello.events && h.sdk?["name"]?.stringValue == hello.sdk?.name)

            let ch = ClientHello(lastSeq: g.int(), capabilities: ["uid", g.string()])
            guard case .success(.hello(let c)) = InboundDecoder.decode(PeerMessageEncoder.encode(ch), role: .client) else {
                Issue.record("client.hello"); continue
            }
            #expect(c.lastSeq == ch.lastSeq && c.capabilities == ch.capabilities!)

            let id = String(g.id().prefix(128))
            let value = g.string(40)
            let cmd = WorkerCommand(id: id, command: "fill", params: ["selector": .string("#q"), "value": .string(value)],
                                    timeoutMs: g.int(1...600_000))
            guard case .success(.command(let r)) = InboundDecoder.decode(PeerMessageEncoder.encode(cmd), role: .worker) else {
                Issue.record("worker.command"); continue
            }
            #expect(r.id == id && r.command == "fill" && r.timeoutMs == cmd.timeoutMs && r.params["value"] == .string(value))

            let result = g.json()
            let resp = ClientCommandResponse(id: id, result: result)
            guard case .success(.commandResponse(let rr)) = InboundDecoder.decode(PeerMessageEncoder.encode(resp), role: .client),
                  let raw = rr.rawResult else { Issue.record("client.command_response"); continue }
            #expect(try JSONParser.parse(Array(raw)) == result)

            let failed = ClientCommandResponse(id: id, error: CommandError(code: "element_not_found", message: value))
            guard case .success(.commandResponse(let fr)) = InboundDecoder.decode(PeerMessageEncoder.encode(failed), role: .client) else {
                Issue.record("error response"); continue
            }
            #expect(fr.error == failed.error)

            let events = (0..<g.int(1...5)).map { _ in TelemetryEvent(type: "navigation", ts: Int64(g.int(0...4_000_000_000_000)), source: "client", payload: g.object()) }
            let batch = ClientEvents(clientSeq: g.int(1...1 << 40), events: events)
            guard case .success(.telemetry(let cs, let got)) = InboundDecoder.decode(PeerMessageEncoder.encode(batch), role: .client) else {
                Issue.record("client.events"); continue
            }
            #expect(cs == batch.clientSeq && got == events)

            let y = WorkerYieldToUser(id: id, conditions: [YieldCondition(type: "url", pattern: "^https://x\\.test/"),
                                                           YieldCondition(type: "networkRequest", urlContains: "/api", successfulOnly: true)],
                                      optional: g.bool(), timeoutMs: g.int(1...86_400_000), message: value)
            guard case .success(.yield(let yr)) = InboundDecoder.decode(PeerMessageEncoder.encode(y), role: .worker) else {
                Issue.record("worker.yield_to_user"); continue
            }
            #expect(yr.id == id && yr.optional == y.optional && yr.timeoutMs == y.timeoutMs && yr.message == value && yr.conditions.count == 2)

            for (m, expected) in [(PeerMessageEncoder.encode(WorkerCancel(id: id)), "cancel"),
                                  (PeerMessageEncoder.encode(WorkerComplete(result: result)), "complete"),
                                  (PeerMessageEncoder.encode(WorkerFail(error: .string(value))), "fail")] {
                switch (InboundDecoder.decode(m, role: .worker), expected) {
                case (.success(.cancel(let cid)), "cancel"): #expect(cid == id)
                case (.success(.complete(let r)), "complete"): #expect((r ?? .null) == result)
                case (.success(.fail(let e)), "fail"): #expect(e == .string(value))
                default: Issue.record("\(expected) did not decode")
                }
            }
        }
    }
}
