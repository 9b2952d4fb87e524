/// Appends JSON text to a byte buffer. Strings are escaped per RFC 8259; values already in
/// JSON form (raw relayed bytes) are appended as they are.
public struct JSONWriter {
    public var bytes: [UInt8]
    /// Where the latest `raw` bytes of at least `markedRawMinimum` went in `bytes`: the relayed
    /// params or result of a message the server built, which the store keeps once for the
    /// message it came in with and the one it went out in.
    public private(set) var lastLargeRaw: Range<Int>?
    public static let markedRawMinimum = 64

    public init(bytes: [UInt8] = []) { self.bytes = bytes }

    /// Hands over the bytes written, leaving the writer empty (the caller holds the only
    /// reference: mutating them does not copy).
    public mutating func take() -> [UInt8] {
        var out: [UInt8] = []
        swap(&out, &bytes)
        return out
    }

    public static func serialize(_ value: JSON) -> [UInt8] {
        var w = JSONWriter()
        w.write(value)
        return w.bytes
    }

    public static func string(_ value: JSON) -> String { String(decoding: serialize(value), as: UTF8.self) }

    public mutating func write(_ value: JSON) {
        switch value {
        case .null: bytes.append(contentsOf: "null".utf8)
        case .bool(let b): bytes.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let n): bytes.append(contentsOf: n.utf8)
        case .string(let s): write(string: s)
        case .array(let a):
            bytes.append(UInt8(ascii: "["))
            for (k, v) in a.enumerated() {
                if k > 0 { bytes.append(UInt8(ascii: ",")) }
                write(v)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let o): write(object: o)
        }
    }

    public mutating func write(object o: JSONObject) {
        bytes.append(UInt8(ascii: "{"))
        for (k, m) in o.members.enumerated() {
            if k > 0 { bytes.append(UInt8(ascii: ",")) }
            write(string: m.key)
            bytes.append(UInt8(ascii: ":"))
            write(m.value)
        }
        bytes.append(UInt8(ascii: "}"))
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    public mutating func write(string s: String) {
        // Native and small strings lend their bytes without a copy of the string.
        if s.utf8.withContiguousStorageIfAvailable({ write(utf8String: $0) }) != nil { return }
        var s = s
        s.withUTF8 { write(utf8String: $0) }
    }

    /// Writes valid UTF-8 bytes as a JSON string (escaping quotes, backslashes and controls).
    public mutating func write(utf8String u: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        guard let base = u.baseAddress else { bytes.append(UInt8(ascii: "\"")); return }
        var runStart = 0
        while true {
            // Plain runs are copied whole; the parser's scan finds where each ends.
            let k = JSONParser.firstSpecial(base, from: runStart, end: u.count)
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[runStart..<k]))
            guard k < u.count else { break }
            let c = u[k]
            runStart = k + 1
            switch c {
            case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
            case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            default: bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, JSONWriter.hex[Int(c >> 4)], JSONWriter.hex[Int(c & 0xF)]])
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Appends `"key":` (with a leading comma unless `first`).
    public mutating func key(_ k: StaticString, first: Bool = false) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: k.utf8Start, count: k.utf8CodeUnitCount))
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    public mutating func raw(_ b: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: b.utf8Start, count: b.utf8CodeUnitCount))
    }

    /// Appends bytes already in JSON form. (Concrete rather than generic over collections: a
    /// generic call from another module is not specialized and looks up metadata each time.)
    public mutating func raw(_ b: UnsafeRawBufferPointer) {
        // Growing for a large value (relayed params or results), leave room for the few bytes
        // that close the message: otherwise they would double a buffer just filled.
        let needed = bytes.count + b.count
        if needed > bytes.capacity { bytes.reserveCapacity(Swift.max(needed + 256, bytes.capacity * 2)) }
        if b.count >= JSONWriter.markedRawMinimum { lastLargeRaw = bytes.count..<needed }
        bytes.append(contentsOf: b)
    }

    public mutating func raw(_ b: ArraySlice<UInt8>) { b.withUnsafeBytes { raw($0) } }
    public mutating func raw(_ b: [UInt8]) { b.withUnsafeBytes { raw($0) } }

    /// Appends `v` in decimal (digits written straight into the buffer: no string is made).
    public mutating func int(_ v: Int) {
        if v < 0 { bytes.append(UInt8(ascii: "-")) }
        var m = v.magnitude
        // 20 digits hold any UInt64.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var k = 20
            repeat {
                k -= 1
                digits[k] = UInt8(truncatingIfNeeded: m % 10) &+ 0x30
                m /= 10
            } while m != 0
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[k...]))
        }
    }
}
