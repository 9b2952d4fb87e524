/// Why a text is not acceptable JSON.
public struct JSONParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public var offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

/// A strict RFC 8259 parser over UTF-8 bytes, with a nesting limit. It can also report the
/// byte range of every top-level member, so values can be relayed verbatim.
public struct JSONParser: ~Copyable {
    private let base: UnsafePointer<UInt8>
    private let end: Int
    private var i = 0
    private let maxDepth: Int

    public static let defaultMaxDepth = 64

    private init(_ bytes: UnsafeRawBufferPointer, maxDepth: Int) {
        base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1)!
        end = bytes.count
        self.maxDepth = maxDepth
    }

    public static func parse(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSON {
        var p = JSONParser(bytes, maxDepth: maxDepth)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == p.end else { throw p.error("trailing characters") }
        return v
    }

    public static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSON {
        let r = bytes.withUnsafeBytes { b in Result { () throws(JSONParseError) in try parse(b, maxDepth: maxDepth) } }
        return try r.get()
    }

    public static func parse(_ string: String) throws(JSONParseError) -> JSON { try parse(Array(string.utf8)) }

    /// Parses a top-level object and returns, with it, the byte range of each member's value.
    /// Nil for valid JSON that is not an object.
    public static func parseObject(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> (object: JSONObject, ranges: [Range<Int>])? {
        var p = JSONParser(bytes, maxDepth: maxDepth)
        p.skipSpace()
        guard p.i < p.end, p.base[p.i] == UInt8(ascii: "{") else {
            _ = try parse(bytes, maxDepth: maxDepth)
            return nil
        }
        var ranges: [Range<Int>] = []
        let obj = try p.object(depth: 0, ranges: &ranges)
        p.skipSpace()
        guard p.i == p.end else { throw p.error("trailing characters") }
        return (obj, ranges)
    }

    /// Parses a top-level object, but only builds the members for which `build(key)` is true;
    /// the others are checked for syntax and come back as nil (with their byte range), so
    /// values that are only relayed are never turned into Swift values. Strings are not
    /// re-validated as UTF-8 when skipped: callers pass text the WebSocket layer validated.
    /// Nil for valid JSON that is not an object.
    public static func parseObject(_ bytes: UnsafeRawBufferPointer, build: (String) -> Bool, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> (members: [(key: String, value: JSON?)], ranges: [Range<Int>])? {
        var p = JSONParser(bytes, maxDepth: maxDepth)
        p.skipSpace()
        guard p.i < p.end, p.base[p.i] == UInt8(ascii: "{") else {
            _ = try parse(bytes, maxDepth: maxDepth)
            return nil
        }
        p.i += 1
        // A message has a handful of members: room for 8 spares the arrays' growth steps.
        var members: [(key: String, value: JSON?)] = []
        var ranges: [Range<Int>] = []
        members.reserveCapacity(8)
        ranges.reserveCapacity(8)
        p.skipSpace()
        if p.i < p.end && p.base[p.i] == UInt8(ascii: "}") {
            p.i += 1
        } else {
            while true {
                p.skipSpace()
                guard p.i < p.end, p.base[p.i] == UInt8(ascii: "\"") else { throw p.error("expected a member name") }
                let key = try p.string()
                p.skipSpace()
                guard p.i < p.end, p.base[p.i] == UInt8(ascii: ":") else { throw p.error("expected ':'") }
                p.i += 1
                p.skipSpace()
                let start = p.i
                if build(key) {
                    members.append((key: key, value: try p.value(depth: 1)))
                } else {
                    try p.skipValue(depth: 1)
                    members.append((key: key, value: nil))
                }
                ranges.append(start..<p.i)
                p.skipSpace()
                guard p.i < p.end else { throw p.error("unexpected end in object") }
                if p.base[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
                if p.base[p.i] == UInt8(ascii: "}") { p.i += 1; break }
                throw p.error("expected ',' or '}'")
            }
        }
        p.skipSpace()
        guard p.i == p.end else { throw p.error("trailing characters") }
        return (members, ranges)
    }

    /// Checks one value's syntax without building it.
    private mutating func skipValue(depth: Int) throws(JSONParseError) {
        guard i < end else { throw error("unexpected end") }
        switch base[i] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth < maxDepth else { throw error("nesting deeper than \(maxDepth)") }
            let isObject = base[i] == UInt8(ascii: "{")
            let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
            i += 1
            skipSpace()
            if i < end && base[i] == close { i += 1; return }
            while true {
                skipSpace()
                if isObject {
                    guard i < end, base[i] == UInt8(ascii: "\"") else { throw error("expected a member name") }
                    try skipString()
                    skipSpace()
                    guard i < end, base[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
                    i += 1
                    skipSpace()
                }
                try skipValue(depth: depth + 1)
                skipSpace()
                guard i < end else { throw error("unexpected end") }
                if base[i] == UInt8(ascii: ",") { i += 1; continue }
                if base[i] == close { i += 1; return }
                throw error("expected ',' or a closing bracket")
            }
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: _ = try number()
        }
    }

    /// Moves `i` past plain string bytes onto the next `"`, `\\` or control character (or the end).
    private mutating func skipPlainRun() { i = JSONParser.firstSpecial(base, from: i, end: end) }

    /// The index of the first `"`, `\\` or byte below 0x20 in `base[from..<end]`, `end` if none:
    /// sixteen bytes at a time (one vector compare each), then eight at a time from the block
    /// holding the byte (or the last few bytes), then one by one. (The parser and the log's
    /// compact writer find the ends of strings with it: six scans of every 64 KiB param or
    /// result a command carries.)
    static func firstSpecial(_ base: UnsafePointer<UInt8>, from: Int, end: Int) -> Int {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        let raw = UnsafeRawPointer(base)
        var k = from
        let quotes = SIMD16<UInt8>(repeating: 0x22), backslashes = SIMD16<UInt8>(repeating: 0x5C)
        let spaces = SIMD16<UInt8>(repeating: 0x20)
        while end - k >= 16 {
            let v = raw.loadUnaligned(fromByteOffset: k, as: SIMD16<UInt8>.self)
            if any((v .== quotes) .| (v .== backslashes) .| (v .< spaces)) { break }
            k += 16
        }
        while end - k >= 8 {
            // Little-endian: the byte at `k` is the lowest.
            let x = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: k, as: UInt64.self))
            // A byte of `v` is zero (or below `n` for `x &- n * ones`) when its high bit is set
            // in the result: the classic test, exact for the lowest such byte (a borrow only
            // marks bytes above it).
            let quote = x ^ (0x22 &* ones), backslash = x ^ (0x5C &* ones)
            let special = ((quote &- ones) & ~quote | (backslash &- ones) & ~backslash | (x &- 0x20 &* ones) & ~x) & highs
            if special != 0 { return k + special.trailingZeroBitCount >> 3 }
            k += 8
        }
        while k < end, base[k] != 0x22, base[k] != 0x5C, base[k] >= 0x20 { k += 1 }
        return k
    }

    /// A string's decoded bytes as a `String`, refused unless valid UTF-8. ASCII needs no
    /// validation; `String(validating:)` looks up generic metadata on every call (a few per
    /// cent of a relayed message).
    private func makeString(_ s: UnsafeBufferPointer<UInt8>) throws(JSONParseError) -> String {
        if JSONParser.isASCII(s) { return String(decoding: s, as: UTF8.self) }
        guard let str = String(validating: s, as: UTF8.self) else { throw error("invalid UTF-8 in string") }
        return str
    }

    /// Whether every byte is below 0x80 (eight at a time).
    static func isASCII(_ s: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let p = s.baseAddress else { return true }
        let raw = UnsafeRawPointer(p)
        var k = 0, acc: UInt64 = 0
        while s.count - k >= 8 { acc |= raw.loadUnaligned(fromByteOffset: k, as: UInt64.self); k += 8 }
        while k < s.count { acc |= UInt64(p[k]); k += 1 }
        return acc & 0x8080_8080_8080_8080 == 0
    }

    private mutating func skipString() throws(JSONParseError) {
        i += 1
        while i < end {
            skipPlainRun()
            guard i < end else { break }
            let c = base[i]
            if c == UInt8(ascii: "\"") { i += 1; return }
            if c < 0x20 { throw error("control character in string") }
            if c == UInt8(ascii: "\\") {
                i += 1
                guard i < end else { break }
                switch base[i] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    i += 1
                    let v = try hex4()
                    if (0xD800...0xDBFF).contains(v) {
                        guard end - i >= 6, base[i] == UInt8(ascii: "\\"), base[i + 1] == UInt8(ascii: "u") else { throw error("lone surrogate") }
                        i += 2
                        guard (0xDC00...0xDFFF).contains(try hex4()) else { throw error("lone surrogate") }
                    } else if (0xDC00...0xDFFF).contains(v) {
                        throw error("lone surrogate")
                    }
                default:
                    throw error("invalid escape")
                }
                continue
            }
            i += 1
        }
        throw error("unterminated string")
    }

    private func error(_ m: String) -> JSONParseError { JSONParseError(message: m, offset: i) }

    private mutating func skipSpace() {
        while i < end {
            let c = base[i]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 } else { return }
        }
    }

    private mutating func value(depth: Int) throws(JSONParseError) -> JSON {
        guard i < end else { throw error("unexpected end") }
        switch base[i] {
        case UInt8(ascii: "{"):
            var none: [Range<Int>] = []
            return .object(try object(depth: depth, ranges: &none, record: false))
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: return try number()
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let n = word.utf8CodeUnitCount
        guard end - i >= n else { throw error("invalid literal") }
        for k in 0..<n where base[i + k] != word.utf8Start[k] { throw error("invalid literal") }
        i += n
    }

    private mutating func object(depth: Int, ranges: inout [Range<Int>], record: Bool = true) throws(JSONParseError) -> JSONObject {
        guard depth < maxDepth else { throw error("nesting deeper than \(maxDepth)") }
        i += 1
        var obj = JSONObject()
        skipSpace()
        if i < end && base[i] == UInt8(ascii: "}") { i += 1; return obj }
        while true {
            skipSpace()
            guard i < end, base[i] == UInt8(ascii: "\"") else { throw error("expected a member name") }
            let key = try string()
            skipSpace()
            guard i < end, base[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
            i += 1
            skipSpace()
            let start = i
            let v = try value(depth: depth + 1)
            if record { ranges.append(start..<i) }
            obj.members.append((key: key, value: v))
            skipSpace()
            guard i < end else { throw error("unexpected end in object") }
            if base[i] == UInt8(ascii: ",") { i += 1; continue }
            if base[i] == UInt8(ascii: "}") { i += 1; return obj }
            throw error("expected ',' or '}'")
        }
    }

    private mutating func array(depth: Int) throws(JSONParseError) -> JSON {
        guard depth < maxDepth else { throw error("nesting deeper than \(maxDepth)") }
        i += 1
        var items: [JSON] = []
        skipSpace()
        if i < end && base[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
            skipSpace()
            items.append(try value(depth: depth + 1))
            skipSpace()
            guard i < end else { throw error("unexpected end in array") }
            if base[i] == UInt8(ascii: ",") { i += 1; continue }
            if base[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            throw error("expected ',' or ']'")
        }
    }

    private mutating func number() throws(JSONParseError) -> JSON {
        let start = i
        if i < end && base[i] == UInt8(ascii: "-") { i += 1 }
        guard i < end, isDigit(base[i]) else { throw error("invalid value") }
        if base[i] == UInt8(ascii: "0") { i += 1 } else { while i < end && isDigit(base[i]) { i += 1 } }
        if i < end && base[i] == UInt8(ascii: ".") {
            i += 1
            guard i < end, isDigit(base[i]) else { throw error("invalid number") }
            while i < end && isDigit(base[i]) { i += 1 }
        }
        if i < end && (base[i] == UInt8(ascii: "e") || base[i] == UInt8(ascii: "E")) {
            i += 1
            if i < end && (base[i] == UInt8(ascii: "+") || base[i] == UInt8(ascii: "-")) { i += 1 }
            guard i < end, isDigit(base[i]) else { throw error("invalid number") }
            while i < end && isDigit(base[i]) { i += 1 }
        }
        return .number(String(decoding: UnsafeBufferPointer(start: base + start, count: i - start), as: UTF8.self))
    }

    @inline(__always) private func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

    private mutating func string() throws(JSONParseError) -> String {
        i += 1
        let start = i
        // Fast path: no escapes.
        while i < end {
            skipPlainRun()
            guard i < end else { break }
            let c = base[i]
            if c == UInt8(ascii: "\"") {
                let s = UnsafeBufferPointer(start: base + start, count: i - start)
                i += 1
                return try makeString(s)
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw error("control character in string") }
            i += 1
        }
        var out = [UInt8](UnsafeBufferPointer(start: base + start, count: i - start))
        while i < end {
            let c = base[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return try out.withUnsafeBufferPointer { u throws(JSONParseError) in try makeString(u) }
            }
            if c < 0x20 { throw error("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            guard i < end else { break }
            let e = base[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    guard end - i >= 6, base[i] == UInt8(ascii: "\\"), base[i + 1] == UInt8(ascii: "u") else { throw error("lone surrogate") }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("lone surrogate") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw error("lone surrogate")
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
            default: throw error("invalid escape")
            }
        }
        throw error("unterminated string")
    }

    private mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard end - i >= 4 else { throw error("invalid \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = base[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw error("invalid \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }
}
