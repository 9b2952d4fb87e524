/// Incremental UTF-8 validator (RFC 3629): can be fed a message in any number of pieces and
/// reports an error at the first byte that can no longer start or continue a valid sequence,
/// so a bad text message fails fast, before the rest of it arrives.
public struct UTF8Validator: Sendable {
    /// Continuation bytes still expected for the current code point.
    private var need: UInt8 = 0
    /// Allowed range of the next continuation byte (narrowed after E0, ED, F0, F4).
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    public init() {}

    /// True when no code point is cut in the middle.
    public var isComplete: Bool { need == 0 }

    public mutating func reset() { need = 0; lower = 0x80; upper = 0xBF }

    /// Validates the next piece. Returns false at the first invalid byte.
    public mutating func validate(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        let count = bytes.count
        var i = 0
        while i < count {
            if need == 0 {
                // Fast path: 32 ASCII bytes at a time, then 8.
                while i + 32 <= count {
                    let words = (base + i).loadUnaligned(as: UInt64.self) | (base + i + 8).loadUnaligned(as: UInt64.self)
                        | (base + i + 16).loadUnaligned(as: UInt64.self) | (base + i + 24).loadUnaligned(as: UInt64.self)
                    if words & 0x8080_8080_8080_8080 != 0 { break }
                    i += 32
                }
                while i + 8 <= count {
                    let word = (base + i).loadUnaligned(as: UInt64.self)
                    if word & 0x8080_8080_8080_8080 != 0 { break }
                    i += 8
                }
                if i >= count { break }
                let b = base.load(fromByteOffset: i, as: UInt8.self)
                i += 1
                switch b {
                case 0x00...0x7F: continue
                case 0xC2...0xDF: need = 1; lower = 0x80; upper = 0xBF
                case 0xE0: need = 2; lower = 0xA0; upper = 0xBF
                case 0xE1...0xEC, 0xEE...0xEF: need = 2; lower = 0x80; upper = 0xBF
                case 0xED: need = 2; lower = 0x80; upper = 0x9F
                case 0xF0: need = 3; lower = 0x90; upper = 0xBF
                case 0xF1...0xF3: need = 3; lower = 0x80; upper = 0xBF
                case 0xF4: need = 3; lower = 0x80; upper = 0x8F
                default: return false
                }
            } else {
                let b = base.load(fromByteOffset: i, as: UInt8.self)
                i += 1
                guard b >= lower && b <= upper else { return false }
                need -= 1
                lower = 0x80
                upper = 0xBF
            }
        }
        return true
    }

    public mutating func validate(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { validate($0) }
    }

    /// One-shot check of a complete buffer.
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var v = UTF8Validator()
        return v.validate(bytes) && v.isComplete
    }

    public static func isValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { isValid($0) }
    }
}
