/// Writing JSON text that is already valid (a relayed message) as one line of a log, without
/// building its tree: whitespace between tokens is dropped, and every string value longer than
/// a bound is cut. Keys and everything else are copied as they are.
extension JSONWriter {
    /// What a string value longer than `max` UTF-8 bytes becomes: its first `max` bytes (a
    /// character cut in two is replaced by U+FFFD) and how long it was.
    public static func cut(_ utf8: some Collection<UInt8>, max: Int) -> String {
        String(decoding: utf8.prefix(max), as: UTF8.self) + "…[cut: \(utf8.count) bytes]"
    }

    /// Writes `json`, which should be valid JSON text (the relay parsed it, or wrote it), with
    /// the whitespace between tokens dropped and every string value whose decoded UTF-8 is
    /// longer than `maxString` bytes replaced by `cut(_:max:)` of it: the same value
    /// `JSONWriter.write` gives for the parsed, cut tree, at the cost of one scan. Whatever
    /// the input, what it writes holds no byte below 0x20: those outside strings are dropped
    /// like whitespace, and a string holding one (not JSON) fails. Returns false, having
    /// written nothing, when a string is not terminated, holds such a byte or has an invalid
    /// escape that decoding it needed (other text that is not JSON is copied, not checked).
    public mutating func write(compacting json: UnsafeBufferPointer<UInt8>, cuttingStringsOver maxString: Int) -> Bool {
        guard let base = json.baseAddress else { return true }
        let mark = bytes.count
        let n = json.count
        var i = 0, runStart = 0
        func flush(to end: Int) {
            if end > runStart { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: json[runStart..<end])) }
        }
        while i < n {
            let c = json[i]
            if c <= 0x20 {
                flush(to: i)
                i += 1
                runStart = i
                continue
            }
            guard c == UInt8(ascii: "\"") else { i += 1; continue }
            // A string from `i` to its closing quote at `j`.
            var j = i + 1, escaped = false
            while true {
                j = JSONParser.firstSpecial(base, from: j, end: n)
                guard j < n, json[j] >= 0x20 else { bytes.removeSubrange(mark...); return false }
                if json[j] == UInt8(ascii: "\"") { break }
                // A backslash: the byte it escapes is held to the same rule.
                guard j + 1 < n, json[j + 1] >= 0x20 else { bytes.removeSubrange(mark...); return false }
                escaped = true
                j += 2
            }
            var after = j + 1
            while after < n, json[after] <= 0x20 { after += 1 }
            let isKey = after < n && json[after] == UInt8(ascii: ":")
            // Decoding never lengthens a string: one no longer than the bound as written stays.
            if !isKey && j - i - 1 > maxString {
                let raw = UnsafeBufferPointer(rebasing: json[(i + 1)..<j])
                if !escaped {
                    flush(to: i)
                    write(string: JSONWriter.cut(raw, max: maxString))
                    runStart = j + 1
                } else {
                    guard let value = try? JSONParser.parse(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: json[i...j]))),
                          case .string(let s) = value else {
                        bytes.removeSubrange(mark...)
                        return false
                    }
                    if s.utf8.count > maxString {
                        flush(to: i)
                        write(string: JSONWriter.cut(s.utf8, max: maxString))
                        runStart = j + 1
                    }
                }
            }
            i = j + 1
        }
        flush(to: n)
        return true
    }

    /// Whether `bytes` hold a byte below 0x20. In valid JSON such a byte can only be
    /// whitespace between tokens (strings may not hold one raw): text without one is already
    /// a single line. 32 bytes a step (every message the log writes passes here).
    public static func hasControlByte(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else { return false }
        let raw = UnsafeRawPointer(base)
        let n = bytes.count
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        // A byte below 0x20 borrows into its high bit (exact for the lowest such byte).
        func below(_ x: UInt64) -> UInt64 { (x &- 0x20 &* ones) & ~x }
        func word(_ k: Int) -> UInt64 { raw.loadUnaligned(fromByteOffset: k, as: UInt64.self) }
        var k = 0
        while n &- k >= 32 {
            if (below(word(k)) | below(word(k &+ 8)) | below(word(k &+ 16)) | below(word(k &+ 24))) & highs != 0 { return true }
            k &+= 32
        }
        while n &- k >= 8 {
            if below(word(k)) & highs != 0 { return true }
            k &+= 8
        }
        while k < n {
            if base[k] < 0x20 { return true }
            k &+= 1
        }
        return false
    }
}
