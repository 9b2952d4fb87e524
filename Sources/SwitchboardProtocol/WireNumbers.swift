/// Every number a peer sends passes through here before the server does arithmetic with it
/// (docs/protocol.md, "Numbers"). Conversions are exact, ranges are documented, and deadline
/// arithmetic saturates: a value out of range is an `invalid_message` or `validation_error`,
/// never a trap.
public enum WireNumbers {
    /// Milliseconds as nanoseconds for `Task.sleep`, clamped to 0 … 1 day: a delay that came
    /// from a peer (or a setting) can neither be negative nor overflow.
    public static func sleepNanoseconds(millis: Int) -> UInt64 {
        UInt64(min(max(millis, 0), 86_400_000)) * 1_000_000
    }

    /// The largest integer a JSON number carries exactly (2^53 − 1). Counters (`seq`,
    /// `lastSeq`, `clientSeq`, cursors) are within 0...maxSafeInteger.
    public static let maxSafeInteger = 9_007_199_254_740_991

    /// Timestamps are epoch milliseconds from 1970-01-01 to 9999-12-31T23:59:59.999Z.
    public static let timestampRange: ClosedRange<Int64> = 0...253_402_300_799_999

    /// No timeout of any kind may exceed this (7 days), whatever the configuration says.
    public static let absoluteMaxTimeoutMs = 604_800_000

    /// An integer from its JSON literal: exact, and within ±maxSafeInteger.
    public static func integer(_ literal: String) -> Int? {
        // `magnitude`, not `abs`: abs(Int.min) traps, and "-9223372036854775808" parses as Int.min.
        if let i = Int(literal) { return i.magnitude <= UInt(maxSafeInteger) ? i : nil }
        // `1e3` and `5.0` are integers too when their value is exact.
        guard let d = Double(literal), d.isFinite, d.rounded() == d, abs(d) <= Double(maxSafeInteger) else { return nil }
        return Int(exactly: d)
    }

    /// A number as epoch milliseconds, or nil when it is not finite or out of `timestampRange`.
    public static func millis(_ d: Double) -> Int64? {
        guard d.isFinite, d >= Double(timestampRange.lowerBound), d <= Double(timestampRange.upperBound) else { return nil }
        return Int64(exactly: d.rounded(.down))
    }

    /// A duration in milliseconds from any number, or nil when not finite, negative or above `max`.
    public static func duration(_ d: Double, max: Int) -> Int? {
        guard d.isFinite, d >= 0, d <= Double(max) else { return nil }
        return Int(exactly: d.rounded(.up))
    }

    /// `a + b` clamped to Int64's range.
    public static func adding(_ a: Int64, _ b: Int64) -> Int64 {
        let (r, o) = a.addingReportingOverflow(b)
        return o ? (b > 0 ? .max : .min) : r
    }

    /// `a − b` clamped to Int64's range.
    public static func subtracting(_ a: Int64, _ b: Int64) -> Int64 {
        let (r, o) = a.subtractingReportingOverflow(b)
        return o ? (b < 0 ? .max : .min) : r
    }

    /// `a · b` clamped to UInt64's range (nanosecond arithmetic on durations).
    public static func multiplying(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (r, o) = a.multipliedReportingOverflow(by: b)
        return o ? .max : r
    }
}

/// What the decoder accepts for limits that depend on the server's configuration.
public struct InboundLimits: Sendable, Equatable {
    /// Largest `timeoutMs` of a command, and of a `waitFor…` command's own wait plus 5 s.
    public var maxCommandTimeoutMs: Int
    /// Largest `timeoutMs` of a yield.
    public var maxYieldTimeoutMs: Int

    public init(maxCommandTimeoutMs: Int = 600_000, maxYieldTimeoutMs: Int = 86_400_000) {
        self.maxCommandTimeoutMs = min(maxCommandTimeoutMs, WireNumbers.absoluteMaxTimeoutMs)
        self.maxYieldTimeoutMs = min(maxYieldTimeoutMs, WireNumbers.absoluteMaxTimeoutMs)
    }
}
