import Testing
@testable import SwitchboardProtocol

/// Every number a peer sends is range-checked: out of range is an error, never a trap.
@Suite struct HostileNumbers {
    static let hugeLiterals = ["1e19", "1e300", "-1e19", "9223372036854775808", "9223372036854775807", "-9223372036854775809",
                               "1e400", "-1e400", "18446744073709551616", "9007199254740992", "1.5e308", "123456789012345678901234567890"]

    func decode(_ text: String, _ role: Role, limits: InboundLimits = InboundLimits()) -> Result<PeerMessage, InboundError> {
        InboundDecoder.decode(Array(text.utf8), role: role, receivedAt: 1_000, limits: limits)
    }

    func isInvalidMessage(_ r: Result<PeerMessage, InboundError>) -> Bool {
        if case .failure(.invalidMessage) = r { return true }
        return false
    }

    @Test(arguments: hugeLiterals)
    func telemetryTimestampsOutOfRangeAreInvalid(_ n: String) {
        #expect(isInvalidMessage(decode(#"{"type":"client.events","events":[{"type":"x","ts":\#(n)}]}"#, .client)))
        for t in ["client.console_activity", "client.network_activity", "client.sdk_log"] {
            #expect(isInvalidMessage(decode(#"{"type":"\#(t)","entries":[{"ts":\#(n)}]}"#, .client)), "\(t)")
        }
    }

    @Test(arguments: ["-1", "\"0000-01-01T00:00:00Z\"", "\"nonsense\"", "true", "{}"])
    func otherBadTimestampsAreInvalid(_ v: String) {
        #expect(isInvalidMessage(decode(#"{"type":"client.events","events":[{"type":"x","ts":\#(v)}]}"#, .client)))
    }

    @Test func timestampsAtTheEdgesAreAccepted() throws {
        for (v, ms) in [("0", Int64(0)), ("253402300799999", 253_402_300_799_999), ("\"9999-12-31T23:59:59.999Z\"", 253_402_300_799_999), ("1.5", 1)] {
            guard case .success(.telemetry(_, let events)) = decode(#"{"type":"client.events","events":[{"type":"x","ts":\#(v)}]}"#, .client) else {
                Issue.record("refused \(v)"); continue
            }
            #expect(events.first?.ts == ms)
        }
    }

    @Test(arguments: hugeLiterals + ["0", "-5", "1.5", "600001"])
    func commandAndYieldTimeoutsOutOfRangeAreInvalid(_ n: String) {
        #expect(isInvalidMessage(decode(#"{"type":"worker.command","command":"url","timeoutMs":\#(n)}"#, .worker)))
        let y = #"{"type":"worker.yield_to_user","conditions":[{"type":"url","pattern":"x"}],"timeoutMs":\#(n)}"#
        if n != "600001" { #expect(isInvalidMessage(decode(y, .worker))) }
    }

    @Test(arguments: hugeLiterals + ["-1", "595001"])
    func catalogWaitsOutOfRangeAreInvalidCommands(_ n: String) {
        for cmd in [#""command":"waitForNavigation","params":{"urlPattern":"x","timeout":\#(n)}"#,
                    ##""command":"waitForSelector","params":{"selector":"#a","timeout":\##(n)}"##,
                    #""command":"waitForNetworkIdle","params":{"timeout":\#(n)}"#,
                    #""command":"waitForNetworkIdle","params":{"idleMs":\#(n)}"#,
                    #""command":"waitForTimeout","params":{"ms":\#(n)}"#] {
            guard case .failure(.invalidCommand) = decode(#"{"type":"worker.command",\#(cmd)}"#, .worker) else {
                Issue.record("accepted \(cmd)"); continue
            }
        }
    }

    @Test func theServersMaximumIsTheLimit() {
        let limits = InboundLimits(maxCommandTimeoutMs: 10_000, maxYieldTimeoutMs: 20_000)
        #expect(isInvalidMessage(decode(#"{"type":"worker.command","command":"url","timeoutMs":10001}"#, .worker, limits: limits)))
        guard case .success(.command(let c)) = decode(#"{"type":"worker.command","command":"url","timeoutMs":10000}"#, .worker, limits: limits) else {
            Issue.record("refused"); return
        }
        #expect(c.timeoutMs == 10_000)
        guard case .failure(.invalidCommand) = decode(#"{"type":"worker.command","command":"waitForSelector","params":{"selector":"a","timeout":5001}}"#, .worker, limits: limits) else {
            Issue.record("accepted"); return
        }
        #expect(isInvalidMessage(decode(#"{"type":"worker.yield_to_user","conditions":[{"type":"url","pattern":"x"}],"timeoutMs":20001}"#, .worker, limits: limits)))
    }

    @Test(arguments: hugeLiterals + ["-1", "1.5"])
    func countersOutOfRangeAreInvalid(_ n: String) {
        #expect(isInvalidMessage(decode(#"{"type":"worker.hello","lastSeq":\#(n)}"#, .worker)))
        #expect(isInvalidMessage(decode(#"{"type":"client.events","clientSeq":\#(n),"events":[]}"#, .client)))
        #expect(isInvalidMessage(decode(#"{"type":"worker.hello","protocolVersion":\#(n)}"#, .worker)))
    }

    @Test(arguments: hugeLiterals + ["0", "-1", "1.5", "-0", "\"1\"", "null", "true", "[]", "{}"])
    func cdpChannelsOutOfRangeAreInvalid(_ n: String) {
        #expect(isInvalidMessage(decode(#"{"type":"client.cdp","channel":\#(n),"data":"{}"}"#, .client)))
        #expect(isInvalidMessage(decode(#"{"type":"client.cdp_close","channel":\#(n)}"#, .client)))
    }

    /// The worst frames and sizes a device can put in `client.cdp`: refused without a trap,
    /// or kept within their bounds.
    @Test func hostileCDPFramesAndVersionsAreBounded() throws {
        let deep = String(repeating: "[", count: 100_000)
        let huge = String(repeating: "x", count: 4 << 20)
        for data in ["", "x", "null", "[]", "1e400", deep, "{\"a\":" + deep, huge, "{\"id\":1}{\"id\":2}", "{\"id\":1e400}"] {
            let text = JSONWriter.string(.object(["type": .string("client.cdp"), "channel": .int(1), "data": .string(data)]))
            if data.hasPrefix("{\"id\":1e400") {
                // One JSON object, whatever its numbers: relayed as sent.
                guard case .success(.cdp(1, let d, _)) = decode(text, .client) else { Issue.record("1e400 id"); continue }
                #expect(d == data)
            } else {
                #expect(isInvalidMessage(decode(text, .client)), "\(data.prefix(20))")
            }
        }
        let big = JSONWriter.string(.object(["id": .int(1), "result": .object(["data": .string(huge)])]))
        let text = JSONWriter.string(.object(["type": .string("client.cdp"), "channel": .int(WireNumbers.maxSafeInteger), "data": .string(big)]))
        guard case .success(.cdp(let ch, let d, let frame)) = decode(text, .client) else { Issue.record("a 4 MiB frame"); return }
        #expect(ch == WireNumbers.maxSafeInteger && d.utf8.count == big.utf8.count && frame["result"]?["data"]?.stringValue?.utf8.count == huge.utf8.count)
        // A close reason is cut to 200 characters; cdpVersion keeps only known keys, each cut to 256.
        let close = decode(#"{"type":"client.cdp_close","channel":3,"reason":"\#(String(repeating: "é", count: 10_000))"}"#, .client)
        guard case .success(.cdpClose(3, let reason?)) = close else { Issue.record("cdp_close"); return }
        #expect(reason.count == 200)
        var version: JSONObject = ["Browser": .string(String(repeating: "b", count: 1 << 20)), "Evil": .string("x"), "User-Agent": .int(5)]
        for k in 0..<10_000 { version["k\(k)"] = .string("v") }
        let hello = JSONWriter.string(.object(["type": .string("client.hello"), "capabilities": .array([.string("cdp")]), "cdpVersion": .object(version)]))
        guard case .success(.hello(let h)) = decode(hello, .client) else { Issue.record("hello"); return }
        #expect(h.cdpVersion?.members.count == 1 && h.cdpVersion?["Browser"]?.stringValue?.count == 256)
        #expect(isInvalidMessage(decode(#"{"type":"client.hello","cdpVersion":"Chrome"}"#, .client)))
    }

    @Test func effectiveTimeoutNeverExceedsItsLimit() {
        let p: JSONObject = ["timeout": .number("1e300")]
        #expect(CommandCatalog.effectiveTimeout(command: "waitForSelector", params: p, timeoutMs: nil, sessionDefault: 30_000, limit: 600_000) == 30_000)
        let q: JSONObject = ["timeout": .int(599_000)]
        #expect(CommandCatalog.effectiveTimeout(command: "waitForSelector", params: q, timeoutMs: nil, sessionDefault: 30_000, limit: 600_000) == 600_000)
        #expect(CommandCatalog.effectiveTimeout(command: "url", params: [:], timeoutMs: Int.max, sessionDefault: 1, limit: 600_000) == 600_000)
    }

    @Test func exactConversions() {
        #expect(WireNumbers.integer("9007199254740991") == 9_007_199_254_740_991)
        #expect(WireNumbers.integer("9007199254740992") == nil)
        // At and past both ends of Int64 (Int.min has no positive counterpart).
        for literal in ["-9223372036854775808", "9223372036854775807", "-9223372036854775809", "9223372036854775808", "-9007199254740992"] {
            #expect(WireNumbers.integer(literal) == nil, "\(literal)")
        }
        #expect(WireNumbers.integer("-9007199254740991") == -9_007_199_254_740_991)
        #expect(WireNumbers.integer("1e3") == 1000)
        #expect(WireNumbers.integer("1.5") == nil)
        #expect(WireNumbers.integer("nan") == nil)
        #expect(WireNumbers.millis(.infinity) == nil)
        #expect(WireNumbers.millis(.nan) == nil)
        #expect(WireNumbers.adding(.max, 1) == .max)
        #expect(WireNumbers.adding(.min, -1) == .min)
        #expect(WireNumbers.subtracting(.min, 1) == .min)
        #expect(WireNumbers.multiplying(.max, 2) == .max)
        #expect(JSON.double(1e300) == .number("1e+300"))
        #expect(JSON.double(.infinity) == .null)
    }
}

/// Worker-supplied patterns: linear time, bounded work, a clear refusal for what cannot be.
@Suite struct Patterns {
    static let table: [(pattern: String, input: String, match: Bool)] = [
        ("abc", "xxabcxx", true), ("^abc", "xabc", false), ("abc$", "abcx", false), ("^abc$", "abc", true),
        ("a.c", "a\nc", false), ("a.c", "abc", true), ("colou?r", "color", true), ("colou?r", "colour", true),
        ("ab*c", "ac", true), ("ab+c", "ac", false), ("ab{2}c", "abbc", true), ("ab{2}c", "abbbc", false),
        ("ab{2,}c", "abbbbc", true), ("ab{1,2}c", "abbbc", false), ("a{,2}", "a{,2}", true), ("x{", "x{", true),
        ("(foo|bar)baz", "barbaz", true), ("(foo|bar)baz", "quxbaz", false), ("(?:a|b)+$", "xabab", true),
        ("(?<host>[a-z]+)\\.com", "example.com", true), ("[0-9]+", "abc", false), ("[^a-z]", "abc", false),
        ("[^a-z]", "ab1", true), ("\\d{3}-\\d{4}", "555-1234", true), ("\\w+@\\w+\\.\\w+", "me@x.io", true),
        ("\\s", "nospace", false), ("\\bcat\\b", "a cat sat", true), ("\\bcat\\b", "concat", false), ("\\Bcat", "concat", true),
        ("https://example\\.com/dashboard", "https://example.com/dashboard?x=1", true), ("/done$", "https://a.b/done", true),
        ("[a\\-z]", "-", true), ("[\\d.]+", "1.5", true), ("\\x41", "A", true), ("\\u00e9", "é", true), ("\\/", "a/b", true),
        ("", "anything", true), ("a|", "zzz", true), ("(?i)LOGIN", "/login", true), ("LOGIN", "/login", false),
        ("^(a+)+$", String(repeating: "a", count: 5000) + "!", false), ("(a|aa)+$", String(repeating: "a", count: 5000) + "b", false),
        ("(x+x+)+y", String(repeating: "x", count: 5000), false), ("^(a+)+$", String(repeating: "a", count: 5000), true),
        ("é+", "ééé", true), ("[α-ω]+", "λ", true),
    ]

    @Test func table() throws {
        for row in Self.table {
            let p = try Pattern(row.pattern)
            #expect(p.matches(row.input) == row.match, "\(row.pattern)")
        }
    }

    @Test(arguments: ["(", ")", "a)", "[a", "*a", "a**", "a{2}{3}", "\\", "(?=a)", "(?!a)", "(?<=a)", "(?<!a)", "(a)\\1", "[z-a]", "a{3,2}",
                      "a{1001}", "\\q", "\\xZZ", String(repeating: "(", count: 200) + String(repeating: ")", count: 200), "(a{1000}){1000}"])
    func refused(_ pattern: String) {
        #expect(throws: Pattern.SyntaxError.self) { try Pattern(pattern) }
        #expect(!PatternCheck.isValid(pattern))
    }

    @Test func theBudgetBoundsTheWork() throws {
        let p = try Pattern("(a|b|c|d|e|f|g|h)*z")
        let input = Array(String(repeating: "abcdefgh", count: 10_000).unicodeScalars)
        #expect(p.search(input, budget: 1000) == .budgetExhausted)
        #expect(p.search(input) == .budgetExhausted || p.search(input) == .noMatch)
    }
}

@Suite struct SleepDurations {
    @Test(arguments: [(Int.min, 0), (-1, 0), (0, 0), (250, 250_000_000), (86_400_000, 86_400_000_000_000), (Int.max, 86_400_000_000_000)] as [(Int, UInt64)])
    func delaysAreClamped(millis: Int, nanoseconds: UInt64) {
        #expect(WireNumbers.sleepNanoseconds(millis: millis) == nanoseconds)
    }
}
