import Testing
@testable import SwitchboardProtocol

@Suite struct JSONParsing {
    @Test(arguments: [
        "{}", "[]", "null", "true", "0", "-1.5e3", "\"a\\u00e9\\n\\\"\"", "{\"a\":[1,{\"b\":null}],\"c\":\"\\ud83d\\ude00\"}",
    ])
    func validRoundTrips(_ text: String) throws {
        let v = try JSONParser.parse(text)
        let again = try JSONParser.parse(JSONWriter.string(v))
        #expect(v == again)
    }

    @Test(arguments: [
        "", "{", "{\"a\"}", "{\"a\":}", "[1,]", "01", "1.", "-", "tru", "\"\\x\"", "\"\u{01}\"", "\"\\ud800\"", "{} x", "{'a':1}", "NaN",
    ])
    func invalidIsRejected(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
    }

    /// Strings are scanned eight bytes at a time: a quote, a backslash, a control character or
    /// a multi-byte character at every offset of strings of 0…40 bytes, parsed both ways
    /// (built, and skipped as a relayed member), gives what the byte-wise rules give.
    @Test(arguments: [
        (#"\""#, "\""), (#"\\"#, "\\"), (#"\n"#, "\n"), (#"\u00e9"#, "é"), ("é", "é"), ("😀", "😀"), ("\u{7F}", "\u{7F}"),
    ])
    func everyOffsetOfASpecialByteInAString(escaped: String, decoded: String) throws {
        for length in 0...40 {
            for at in 0...length {
                let plain = { (n: Int) in String(repeating: "a", count: n) }
                let text = "\"" + plain(at) + escaped + plain(length - at) + "\""
                #expect(try JSONParser.parse(text) == .string(plain(at) + decoded + plain(length - at)), "\(text)")
                let object = Array(("{\"r\":" + text + ",\"n\":1}").utf8)
                let parsed = try object.withUnsafeBytes { try JSONParser.parseObject($0, build: { $0 != "r" }) }
                #expect(parsed?.0.last?.value == .int(1))
                // The same string with a raw control character or a cut end is refused.
                for bad in ["\"" + plain(at) + "\u{01}" + plain(length - at) + "\"", "\"" + plain(at) + escaped + plain(length - at)] {
                    #expect(throws: JSONParseError.self) { try JSONParser.parse(bad) }
                    #expect(throws: JSONParseError.self) {
                        try Array(("{\"r\":" + bad).utf8).withUnsafeBytes { try JSONParser.parseObject($0, build: { _ in false }) }
                    }
                }
            }
        }
    }

    /// Plain ASCII strings skip UTF-8 validation; a string with any byte of 0x80 or more is
    /// validated, so an invalid sequence anywhere in it is refused.
    @Test(arguments: [[0xFF], [0xC3], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0x80]] as [[UInt8]])
    func invalidUTF8InAStringIsRefusedAtEveryOffset(_ bad: [UInt8]) throws {
        for length in 0...20 {
            for at in 0...length {
                let a = { (n: Int) in [UInt8](repeating: UInt8(ascii: "a"), count: n) }
                let text: [UInt8] = [0x22] + a(at) + bad + a(length - at) + [0x22]
                #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
                let good: [UInt8] = [0x22] + a(at) + Array("é".utf8) + a(length - at) + [0x22]
                #expect(try JSONParser.parse(good) == .string(String(repeating: "a", count: at) + "é" + String(repeating: "a", count: length - at)))
            }
        }
    }

    @Test(arguments: [0, 7, 9, 10, 99, 100, -1, -10, 1_234_567_890, Int.max, Int.min, Int.min + 1])
    func integersAreWrittenInDecimal(_ v: Int) {
        var w = JSONWriter()
        w.int(v)
        #expect(String(decoding: w.bytes, as: UTF8.self) == String(v))
    }

    /// A relayed 64 KiB value followed by the bytes that close its message fits one buffer:
    /// they do not double it (a retained message would hold twice its size).
    @Test func aLargeRawValueLeavesRoomForWhatClosesTheMessage() {
        var w = JSONWriter(bytes: [UInt8](repeating: 0, count: 14))
        w.bytes.reserveCapacity(270)
        w.raw(#"{"type":"server.command","seq":1,"params":"#)
        w.raw([UInt8](repeating: UInt8(ascii: "1"), count: 65_536))
        w.raw(#","timeoutMs":30000}"#)
        #expect(w.bytes.count == 14 + 42 + 65_536 + 19)
        #expect(w.bytes.capacity < w.bytes.count + 4_096, "capacity \(w.bytes.capacity) for \(w.bytes.count) bytes")
        // Small values still grow the buffer geometrically.
        var small = JSONWriter()
        for _ in 0..<10_000 { small.raw([UInt8(ascii: "1")]) }
        #expect(small.bytes.count == 10_000)
    }

    @Test func nestingIsLimited() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
        let ok = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        #expect(throws: Never.self) { try JSONParser.parse(ok) }
    }

    @Test func rawRangesOfTopLevelMembers() throws {
        let text = Array(#"{"type":"x", "params" : {"a": [1, 2]} ,"n":5}"#.utf8)
        let parsed = try text.withUnsafeBytes { try JSONParser.parseObject($0) }
        let (obj, ranges) = try #require(parsed)
        #expect(obj.keys == ["type", "params", "n"])
        #expect(String(decoding: text[ranges[1]], as: UTF8.self) == #"{"a": [1, 2]}"#)
        #expect(String(decoding: text[ranges[2]], as: UTF8.self) == "5")
    }

    @Test func skippedMembersAreCheckedButNotBuilt() throws {
        let text = Array(#"{"type":"r","result":{"a":[1,"\u00e9",{"b":null}]},"id":"c1"}"#.utf8)
        let parsed = try text.withUnsafeBytes { try JSONParser.parseObject($0, build: { $0 != "result" }) }
        let (members, ranges) = try #require(parsed)
        #expect(members.map(\.key) == ["type", "result", "id"])
        #expect(members[1].value == nil && members[2].value == .string("c1"))
        #expect(String(decoding: text[ranges[1]], as: UTF8.self) == #"{"a":[1,"\u00e9",{"b":null}]}"#)
        for bad in [#"{"result":[1,]}"#, #"{"result":{"a"}}"#, #"{"result":"\x"}"#, #"{"result":"\ud800"}"#, #"{"result":tru}"#] {
            #expect(throws: JSONParseError.self) { try Array(bad.utf8).withUnsafeBytes { try JSONParser.parseObject($0, build: { _ in false }) } }
        }
        let deep = "{\"result\":" + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}"
        #expect(throws: JSONParseError.self) { try Array(deep.utf8).withUnsafeBytes { try JSONParser.parseObject($0, build: { _ in false }) } }
    }

    @Test func numbersKeepTheirLiteral() throws {
        #expect(JSONWriter.string(try JSONParser.parse("[1.50,1e3,-0]")) == "[1.50,1e3,-0]")
    }

    @Test func writerEscapesControlCharacters() {
        #expect(JSONWriter.string(.string("a\"b\\c\n\u{01}")) == #""a\"b\\c\n\u0001""#)
    }

    @Test func iso8601() {
        #expect(ISO8601.parse("2026-01-01T00:00:00.000Z") == 1_767_225_600_000)
        #expect(ISO8601.parse("2026-01-01T01:00:00+01:00") == 1_767_225_600_000)
        #expect(ISO8601.parse("2026-01-01T00:00:00.5Z") == 1_767_225_600_500)
        #expect(ISO8601.parse("yesterday") == nil)
        #expect(ISO8601.format(1_767_225_600_123) == "2026-01-01T00:00:00.123Z")
    }

    /// Formatting covers years 0000–9999 (leap days, negative times, each field's edges) and
    /// writes any other time as the nearer edge; parsing reads back what it wrote.
    @Test func iso8601FormatsEveryInstantItCanWrite() {
        let cases: [(Int64, String)] = [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-1_000, "1969-12-31T23:59:59.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (ISO8601.formattable.lowerBound, "0000-01-01T00:00:00.000Z"),
            (ISO8601.formattable.upperBound, "9999-12-31T23:59:59.999Z"),
            (ISO8601.formattable.lowerBound - 1, "0000-01-01T00:00:00.000Z"),
            (ISO8601.formattable.upperBound + 1, "9999-12-31T23:59:59.999Z"),
            (.min, "0000-01-01T00:00:00.000Z"),
            (.max, "9999-12-31T23:59:59.999Z"),
        ]
        for (millis, text) in cases {
            #expect(ISO8601.format(millis) == text, "\(millis)")
            #expect(ISO8601.formatBytes(millis) == Array(text.utf8))
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            let millis = Int64.random(in: ISO8601.formattable, using: &rng)
            #expect(ISO8601.parse(ISO8601.format(millis)) == millis, "\(millis)")
        }
    }
}

/// `JSONWriter.write(compacting:cuttingStringsOver:)` against its definition: the parsed tree,
/// every string value longer than the bound cut, written again.
@Suite struct JSONCompacting {
    static func cutTree(_ v: JSON, max: Int) -> JSON {
        switch v {
        case .string(let s) where s.utf8.count > max: return .string(JSONWriter.cut(s.utf8, max: max))
        case .array(let a): return .array(a.map { cutTree($0, max: max) })
        case .object(let o): return .object(JSONObject(o.members.map { ($0.key, cutTree($0.value, max: max)) }))
        default: return v
        }
    }

    static func compact(_ text: String, max: Int) -> [UInt8]? {
        var w = JSONWriter(bytes: Array("prefix".utf8))
        let ok = Array(text.utf8).withUnsafeBufferPointer { w.write(compacting: $0, cuttingStringsOver: max) }
        // Nothing is written when it fails.
        guard ok else { #expect(w.bytes == Array("prefix".utf8)); return nil }
        #expect(w.bytes.starts(with: Array("prefix".utf8)))
        return Array(w.bytes.dropFirst(6))
    }

    static func check(_ text: String, max: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let out = try #require(compact(text, max: max), sourceLocation: sourceLocation)
        #expect(!out.contains { $0 < 0x20 }, "a line break or tab is left", sourceLocation: sourceLocation)
        let expected = cutTree(try JSONParser.parse(text), max: max)
        // Compared as written (JSON's `==` does not tell duplicate keys apart).
        #expect(JSONWriter.serialize(try JSONParser.parse(out)) == JSONWriter.serialize(expected),
                "\(String(decoding: out, as: UTF8.self))", sourceLocation: sourceLocation)
    }

    @Test(arguments: [
        "{}", "[]", "null", " 12 ", "\"short\"", "\"0123456789\"", "\"01234567890\"",
        "{\n  \"type\": \"worker.command\",\n  \"params\": {\"url\": \"https://example.com/a-long-path\"}\n}",
        "[\"aaaaaaaaaaaaaaaa\",\t\"b\", {\"k\":\r\n\"cccccccccccccccccccccc\"}]",
        // Keys are never cut, however long.
        "{\"a-key-much-longer-than-ten\": \"v\", \"x\" : \"yyyyyyyyyyyyyyyyyy\"}",
        // Escapes: longer than the bound as written, not once decoded (kept whole) …
        "\"\\u0041\\u0042\\u0043\"",
        // … and longer once decoded (cut from the decoded text).
        "{\"s\":\"\\\"quoted\\\" and \\\\ back\\nslash \\u00e9\\ud83d\\ude00 tail\"}",
        // A multi-byte character cut in two at the bound.
        "\"aaaaaaaaé and more\"", "\"aaaaaaaaa😀 and more\"",
        "{\"n\": [1, -2.5e3, true, false, null, \"   spaced   out   string  \"]}",
        "{\"x\": 1, \"x\": \"a duplicate key's long value\"}",
    ])
    func matchesTheCutTree(_ text: String) throws {
        try JSONCompacting.check(text, max: 10)
    }

    /// A quote, a backslash escape or a multi-byte character at every offset of strings around
    /// the bound and across the eight-byte steps of the scan.
    @Test(arguments: ["\\\"", "\\\\", "\\n", "\\u00e9", "é", "😀"])
    func everyOffsetAroundTheBound(_ special: String) throws {
        for length in 0...24 {
            for at in 0...length {
                let s = String(repeating: "a", count: at) + special + String(repeating: "b", count: length - at)
                try JSONCompacting.check("{\"k\": \"\(s)\", \"z\": [\"\(s)\"]}", max: 12)
            }
        }
    }

    @Test(arguments: ["\"unterminated", "{\"a\": \"b\\", "[\"x\\q yyyyyyyyyyyyyyyy\"]",
                      // A byte below 0x20 in a string, raw or after a backslash, at any length.
                      "\"a\nb\"", "\"a\\\nb\"", "[\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\u{01}\"]"])
    func anUnterminatedStringABadEscapeOrAControlByteInAStringWritesNothing(_ text: String) {
        #expect(JSONCompacting.compact(text, max: 10) == nil)
    }

    /// Whatever the input, a line it writes holds no byte below 0x20 (outside strings they
    /// are dropped like whitespace).
    @Test func noControlByteIsEverWritten() {
        #expect(JSONCompacting.compact("{\u{01}\"a\"\u{1F}:\u{00}1}", max: 10) == Array("{\"a\":1}".utf8))
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [0x00, 0x01, 0x09, 0x0A, 0x1F, 0x20, 0x22, 0x5C, 0x3A, 0x2C, 0x7B, 0x7D, 0x5B, 0x5D, 0x61, 0x75, 0x30, 0xC3, 0xA9]
        for _ in 0..<20_000 {
            let input = (0..<Int.random(in: 0...40, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
            var w = JSONWriter()
            let ok = input.withUnsafeBufferPointer { w.write(compacting: $0, cuttingStringsOver: 4) }
            #expect(!w.bytes.contains { $0 < 0x20 }, "\(input) wrote \(w.bytes)")
            if !ok { #expect(w.bytes.isEmpty) }
        }
    }

    @Test func aControlByteIsFoundAtEveryOffset() {
        for length in 1...80 {
            for at in 0..<length {
                for c: UInt8 in [0x00, 0x09, 0x0A, 0x0D, 0x1F] {
                    var b = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    b[at] = c
                    #expect(b.withUnsafeBufferPointer { JSONWriter.hasControlByte($0) })
                }
            }
            let clean: [UInt8] = (0..<length).map { [0x20, 0x7F, 0x80, 0xC3, 0xFF, 0x41][$0 % 6] }
            #expect(!clean.withUnsafeBufferPointer { JSONWriter.hasControlByte($0) })
        }
    }
}
