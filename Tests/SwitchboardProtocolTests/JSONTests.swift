import Testing
@testable import SwitchboardProtocol

@Suite struct JSONParsing {
    /// The scan for the end of a string's plain run (sixteen bytes at a time, then eight, then
    /// one) agrees with a byte-by-byte scan wherever the special byte falls, from any start,
    /// and never takes a byte at or above 0x80 (UTF-8) or 0x20–0x7F other than `"` and `\\`.
    @Test(arguments: [0x22, 0x5C, 0x00, 0x0A, 0x1F] as [UInt8])
    func firstSpecialAgreesWithAByteByByteScan(_ special: UInt8) {
        let plain: [UInt8] = [0x20, 0x21, 0x23, 0x5B, 0x5D, 0x7F, 0x80, 0xC3, 0xFF, 0x41]
        for count in 0..<72 {
            for at in -1..<count {
                var bytes = (0..<count).map { plain[$0 % plain.count] }
                if at >= 0 { bytes[at] = special }
                bytes.withUnsafeBufferPointer { p in
                    let base = p.baseAddress ?? UnsafePointer(bitPattern: 1)!
                    for from in 0...min(count, 3) {
                        var naive = from
                        while naive < count, bytes[naive] != 0x22, bytes[naive] != 0x5C, bytes[naive] >= 0x20 { naive += 1 }
                        #expect(JSONParser.firstSpecial(base, from: from, end: count) == naive, "count \(count) at \(at) from \(from)")
                    }
                }
            }
        }
    }

    /// A string with a character that must be escaped at any position (in any block of the
    /// scan) is written escaped and reads back the same.
    @Test(arguments: ["\"", "\\", "\n", "\r", "\t", "\u{01}", "\u{1F}", "é"])
    func escapedCharactersAtEveryPositionReadBack(_ special: String) throws {
        for count in 0..<40 {
            for at in 0...count {
                let text = String(repeating: "a", count: at) + special + String(repeating: "b", count: count - at)
                var w = JSONWriter()
                Array(text.utf8).withUnsafeBufferPointer { w.write(utf8String: $0) }
                #expect(try JSONParser.parse(w.bytes) == .string(text))
                #expect(!w.bytes.dropFirst().dropLast().contains { $0 < 0x20 })
            }
        }
    }

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
