/// A JSON value. Numbers keep their literal text so that relayed values are written back
/// exactly as they came. Objects keep member order.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSON])
    case object(JSONObject)

    public static func int(_ v: Int) -> JSON { .number(String(v)) }
    public static func int64(_ v: Int64) -> JSON { .number(String(v)) }
    public static func double(_ v: Double) -> JSON {
        if v.rounded() == v, abs(v) < 1e15, let i = Int64(exactly: v) { return .number(String(i)) }
        return v.isFinite ? .number(String(v)) : .null
    }

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var objectValue: JSONObject? { if case .object(let o) = self { return o }; return nil }
    public var arrayValue: [JSON]? { if case .array(let a) = self { return a }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }
    /// The value as a finite double (a literal beyond Double's range is not a usable number).
    public var doubleValue: Double? {
        guard case .number(let n) = self, let d = Double(n), d.isFinite else { return nil }
        return d
    }
    /// The value as an integer, when it is a number with no fractional part within
    /// ±2^53 − 1 (`WireNumbers.integer`): larger values are not exact in JSON and are refused.
    public var intValue: Int? {
        guard case .number(let n) = self else { return nil }
        return WireNumbers.integer(n)
    }

    public subscript(key: String) -> JSON? { objectValue?[key] }

    /// Bytes of the value written as JSON, approximately (escapes not counted): what byte
    /// budgets on parsed values count.
    public var estimatedSize: Int {
        switch self {
        case .null, .bool: return 5
        case .number(let n): return n.utf8.count
        case .string(let s): return s.utf8.count + 2
        case .array(let a): return a.reduce(2) { $0 + $1.estimatedSize + 1 }
        case .object(let o): return o.members.reduce(2) { $0 + $1.key.utf8.count + 4 + $1.value.estimatedSize }
        }
    }

    /// The JSON type name, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y || (Double(x) != nil && Double(x) == Double(y))
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)): return x == y
        default: return false
        }
    }
}

/// An ordered JSON object. Lookups are linear: protocol objects are small.
public struct JSONObject: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral {
    public var members: [(key: String, value: JSON)]

    public init() { members = [] }
    public init(_ members: [(String, JSON)]) { self.members = members.map { (key: $0.0, value: $0.1) } }
    public typealias Key = String
    public typealias Value = JSON
    public init(dictionaryLiteral elements: (String, JSON)...) { self.init(elements) }

    public subscript(key: String) -> JSON? {
        get {
            for m in members where m.key == key { return m.value }
            return nil
        }
        set {
            if let i = members.firstIndex(where: { $0.key == key }) {
                if let newValue { members[i].value = newValue } else { members.remove(at: i) }
            } else if let newValue {
                members.append((key: key, value: newValue))
            }
        }
    }

    public var keys: [String] { members.map(\.key) }
    public var isEmpty: Bool { members.isEmpty }
    public var count: Int { members.count }
    public func makeIterator() -> IndexingIterator<[(key: String, value: JSON)]> { members.makeIterator() }

    /// Equal when both hold the same keys with equal values, in any order.
    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        guard a.members.count == b.members.count else { return false }
        for m in a.members { guard let v = b[m.key], v == m.value else { return false } }
        return true
    }
}

// MARK: - Codable

extension JSON: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .number(String(i)) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSON].self) { self = .array(a) }
        else if let o = try? c.decode(JSONObject.self) { self = .object(o) }
        else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value") }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n):
            if let i = Int64(n) { try c.encode(i) } else { try c.encode(Double(n) ?? 0) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

extension JSONObject: Codable {
    private struct CodingName: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingName.self)
        members = try c.allKeys.map { (key: $0.stringValue, value: try c.decode(JSON.self, forKey: $0)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingName.self)
        for m in members { try c.encode(m.value, forKey: CodingName(stringValue: m.key)) }
    }
}
