import Testing
@testable import SwitchboardProtocol
@testable import SwitchboardServer

/// `JSONWriter.write(compacting:cuttingStringsOver:)` against the tree path the traffic log takes
/// for messages it redacts: the parsed tree, every string value longer than the bound cut
/// (`TrafficLog.scrub` without redaction), written again.
@Suite struct JSONCompacting {
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
        let expected = TrafficLog.scrub(try JSONParser.parse(text), maxString: max, redact: false)
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
