/// A command as the session handles it: canonical name, params, and the params' JSON bytes
/// when they can be relayed exactly as received.
public struct CommandRequest: Sendable {
    public var id: String?
    public var command: String
    /// The params the catalog checks (all of them when `rawParams` is nil).
    public var params: JSONObject
    /// The params exactly as received (a slice of the message), or nil when normalisation
    /// changed them and they must be written anew.
    public var rawParams: ArraySlice<UInt8>?
    public var timeoutMs: Int?
}

public struct CommandResponse: Sendable {
    public var id: String
    /// The result's JSON bytes as received.
    public var rawResult: ArraySlice<UInt8>?
    public var error: CommandError?
}

public struct HelloMessage: Sendable {
    public var protocolVersion: Int
    public var lastSeq: Int?
    public var capabilities: [String]
    public var events: [String]?
    public var sdk: JSON?
    /// A client's browser as its DevTools `/json/version` names it (`Browser`, `User-Agent`,
    /// …), for CDP discovery (docs/protocol.md section 16). Only those string fields are kept.
    public var cdpVersion: JSONObject? = nil
    public static let cdpVersionKeys: Set<String> = ["Browser", "Protocol-Version", "User-Agent", "V8-Version", "WebKit-Version"]
}

public struct YieldRequest: Sendable {
    public var id: String?
    public var conditions: [JSON]
    public var optional: Bool
    public var timeoutMs: Int?
    public var message: String?
}

/// A message from a worker or client, decoded and checked.
public enum PeerMessage: Sendable {
    case hello(HelloMessage)
    case command(CommandRequest)
    case cancel(id: String)
    case yield(YieldRequest)
    case complete(result: JSON?)
    case fail(error: JSON?)
    case commandResponse(CommandResponse)
    /// `client.events` or an activity stream, already turned into events.
    case telemetry(clientSeq: Int?, events: [TelemetryEvent])
    /// `client.cdp`: a frame from the client's browser for a CDP channel, as sent and as
    /// parsed (checked to be one JSON object; the traffic log writes it from the parsed value).
    case cdp(channel: Int, data: String, frame: JSON)
    /// `client.cdp_close`: the client's side of a CDP channel is gone.
    case cdpClose(channel: Int, reason: String?)
}

/// What can be wrong with an inbound message, and what the server does about it.
public enum InboundError: Error, Equatable, Sendable {
    /// Invalid JSON, not an object, or no string `type`: close 4000.
    case invalidEnvelope(String)
    /// `server.error` unknown_message_type.
    case unknownType(String)
    /// `server.error` invalid_message.
    case invalidMessage(String, id: String?)
    /// `server.error` invalid_command with issues.
    case invalidCommand(id: String?, issues: [ValidationIssue])
}

public enum InboundDecoder {
    public static let maxEventsPerBatch = 1000

    static let workerTypes: Set<String> = ["worker.hello", "worker.command", "worker.cancel", "worker.yield_to_user", "worker.complete", "worker.fail"]
    static let clientTypes: Set<String> = ["client.hello", "client.command_response", "client.events", "client.console_activity",
                                           "client.network_activity", "client.sdk_log", "client.cdp", "client.cdp_close"]

    /// Decodes one text message from `role` (worker or client). `receivedAt` (epoch ms) stamps
    /// activity entries without a time of their own.
    public static func decode(_ bytes: UnsafeRawBufferPointer, base: ArraySlice<UInt8>, role: Role, receivedAt: Int64,
                              limits: InboundLimits = InboundLimits()) -> Result<PeerMessage, InboundError> {
        // `params` and `result` are only syntax-checked here: they are relayed as the bytes
        // received, and built (in part) later only where the server must look inside.
        let parsed: (members: [(key: String, value: JSON?)], ranges: [Range<Int>])?
        do { parsed = try JSONParser.parseObject(bytes, build: { $0 != "params" && $0 != "result" }) } catch {
            return .failure(.invalidEnvelope("invalid JSON: \(error)"))
        }
        guard let (members, ranges) = parsed else { return .failure(.invalidEnvelope("a message must be a JSON object")) }
        var obj = JSONObject()
        obj.members.reserveCapacity(members.count)
        for m in members { if let v = m.value { obj.members.append((key: m.key, value: v)) } }
        guard case .string(let type)? = obj["type"] else { return .failure(.invalidEnvelope("missing string field 'type'")) }
        let allowed = role == .worker ? workerTypes : clientTypes
        guard allowed.contains(type) else { return .failure(.unknownType(type)) }
        let raw = RawMembers(members: members, ranges: ranges, base: base)
        do {
            return .success(try decode(type: type, obj, raw: raw, receivedAt: receivedAt, limits: limits))
        } catch {
            return .failure(error)
        }
    }

    public static func decode(_ bytes: [UInt8], role: Role, receivedAt: Int64 = 0, limits: InboundLimits = InboundLimits()) -> Result<PeerMessage, InboundError> {
        bytes.withUnsafeBytes { decode($0, base: bytes[...], role: role, receivedAt: receivedAt, limits: limits) }
    }

    /// An optional integer member within `min...max` (counters default to JSON's exact range).
    static func optionalInt(_ o: JSONObject, _ key: String, id: String? = nil, min: Int = 0,
                            max: Int = WireNumbers.maxSafeInteger) throws(InboundError) -> Int? {
        guard let v = o[key], !v.isNull else { return nil }
        guard let i = v.intValue, i >= min, i <= max else { throw .invalidMessage("'\(key)' must be an integer from \(min) to \(max)", id: id) }
        return i
    }

    static func id(_ o: JSONObject, required: Bool) throws(InboundError) -> String? {
        guard let v = o["id"], !v.isNull else {
            if required { throw .invalidMessage("'id' is required", id: nil) }
            return nil
        }
        guard let s = v.stringValue, (1...128).contains(s.count), !s.utf8.contains(0) else {
            throw .invalidMessage("'id' must be a string of 1 to 128 characters without U+0000", id: nil)
        }
        return s
    }

    static func decode(type: String, _ o: JSONObject, raw: RawMembers, receivedAt: Int64, limits: InboundLimits) throws(InboundError) -> PeerMessage {
        switch type {
        case "worker.hello", "client.hello":
            let version = try optionalInt(o, "protocolVersion") ?? ProtocolVersion.current
            let lastSeq = try optionalInt(o, "lastSeq")
            var caps: [String] = []
            if let c = o["capabilities"], !c.isNull {
                guard let a = c.arrayValue, a.allSatisfy({ $0.stringValue != nil }) else { throw .invalidMessage("'capabilities' must be an array of strings", id: nil) }
                caps = a.compactMap(\.stringValue)
            }
            var events: [String]? = nil
            if let e = o["events"], !e.isNull {
                guard let a = e.arrayValue, a.allSatisfy({ $0.stringValue != nil }) else { throw .invalidMessage("'events' must be an array of strings", id: nil) }
                events = a.compactMap(\.stringValue)
            }
            var cdpVersion: JSONObject? = nil
            if let v = o["cdpVersion"], !v.isNull {
                guard let vo = v.objectValue else { throw .invalidMessage("'cdpVersion' must be an object", id: nil) }
                cdpVersion = JSONObject(vo.members.compactMap { m in
                    guard HelloMessage.cdpVersionKeys.contains(m.key), let s = m.value.stringValue else { return nil }
                    return (m.key, .string(String(s.prefix(256))))
                })
            }
            return .hello(HelloMessage(protocolVersion: version, lastSeq: lastSeq, capabilities: caps, events: events, sdk: o["sdk"],
                                       cdpVersion: cdpVersion))

        case "worker.command":
            let cid = try id(o, required: false)
            let timeoutMs = try optionalInt(o, "timeoutMs", id: cid, min: 1, max: limits.maxCommandTimeoutMs)
            var name: String
            var params: JSONObject
            var rawParams: ArraySlice<UInt8>? = nil
            switch o["command"] {
            case .string(let s)?:
                name = CommandCatalog.canonicalName(s)
                if let slice = raw["params"], !raw.isNull(slice) {
                    // Build only the params the catalog checks; the rest are relayed untouched.
                    let wanted = CommandCatalog.paramNames(name)
                    let built = slice.withUnsafeBytes { b in Result { () throws(JSONParseError) in try JSONParser.parseObject(b, build: { wanted.contains($0) }) } }
                    guard case .success(let members?) = built else {
                        throw .invalidCommand(id: cid, issues: [ValidationIssue(path: "params", message: "must be an object")])
                    }
                    params = JSONObject()
                    params.members.reserveCapacity(members.members.count)
                    for m in members.members { if let v = m.value { params.members.append((key: m.key, value: v)) } }
                    rawParams = slice
                } else {
                    params = JSONObject()
                }
            case .object(let inner)?:
                // Older shapes: {"action": "click", ...} or {"type": "click", ...}; the other keys are params.
                guard let n = (inner["action"] ?? inner["type"])?.stringValue else {
                    throw .invalidCommand(id: cid, issues: [ValidationIssue(path: "command.action", message: "required")])
                }
                name = n
                params = JSONObject(inner.members.filter { $0.key != "action" && $0.key != "type" }.map { ($0.key, $0.value) })
            default:
                throw .invalidCommand(id: cid, issues: [ValidationIssue(path: "command", message: "required: a command name")])
            }
            name = CommandCatalog.canonicalName(name)
            if CommandCatalog.normalizedParams(command: name, params: params) != nil {
                // Rewritten params go out as a new object: build all of them first.
                let full = rawParams.flatMap { (try? JSONParser.parse(Array($0)))?.objectValue } ?? params
                params = CommandCatalog.normalizedParams(command: name, params: full) ?? full
                rawParams = nil
            }
            let issues = CommandCatalog.validate(command: name, params: params, limits: limits)
            guard issues.isEmpty else { throw .invalidCommand(id: cid, issues: issues) }
            return .command(CommandRequest(id: cid, command: name, params: params, rawParams: rawParams, timeoutMs: timeoutMs))

        case "worker.cancel":
            return .cancel(id: try id(o, required: true)!)

        case "worker.yield_to_user":
            let yid = try id(o, required: false)
            guard let conds = o["conditions"]?.arrayValue, !conds.isEmpty else {
                throw .invalidCommand(id: yid, issues: [ValidationIssue(path: "conditions", message: "required: a non-empty array")])
            }
            let issues = YieldConditions.validate(conds)
            guard issues.isEmpty else { throw .invalidCommand(id: yid, issues: issues) }
            var optional = false
            if let v = o["optional"], !v.isNull {
                guard let b = v.boolValue else { throw .invalidMessage("'optional' must be a boolean", id: yid) }
                optional = b
            }
            let message = o["message"]?.stringValue
            return .yield(YieldRequest(id: yid, conditions: conds, optional: optional,
                                       timeoutMs: try optionalInt(o, "timeoutMs", id: yid, min: 1, max: limits.maxYieldTimeoutMs), message: message))

        case "worker.complete":
            return .complete(result: raw.full("result"))

        case "worker.fail":
            return .fail(error: o["error"])

        case "client.command_response":
            let rid = try id(o, required: true)!
            var error: CommandError? = nil
            switch o["error"] {
            case nil, .null?: break
            case .string(let m)?: error = CommandError(code: ResultErrorCode.commandFailed, message: m)
            case .object(let e)?:
                error = CommandError(code: e["code"]?.stringValue ?? ResultErrorCode.commandFailed, message: e["message"]?.stringValue)
            default: throw .invalidMessage("'error' must be an object or a string", id: rid)
            }
            return .commandResponse(CommandResponse(id: rid, rawResult: error == nil ? raw["result"] : nil, error: error))

        case "client.events":
            let clientSeq = try optionalInt(o, "clientSeq", min: 1)
            guard let list = o["events"]?.arrayValue else { throw .invalidMessage("'events' must be an array", id: nil) }
            guard list.count <= maxEventsPerBatch else { throw .invalidMessage("at most \(maxEventsPerBatch) events per batch", id: nil) }
            var events: [TelemetryEvent] = []
            events.reserveCapacity(list.count)
            for (k, e) in list.enumerated() {
                guard let eo = e.objectValue, let t = eo["type"]?.stringValue else { throw .invalidMessage("events[\(k)] must be an object with a string type", id: nil) }
                events.append(try normalizeEvent(type: t, eo, receivedAt: receivedAt, path: "events[\(k)]"))
            }
            return .telemetry(clientSeq: clientSeq, events: events)

        case "client.console_activity", "client.network_activity", "client.sdk_log":
            let clientSeq = try optionalInt(o, "clientSeq", min: 1)
            guard let list = o["entries"]?.arrayValue else { throw .invalidMessage("'entries' must be an array", id: nil) }
            guard list.count <= maxEventsPerBatch else { throw .invalidMessage("at most \(maxEventsPerBatch) entries per batch", id: nil) }
            var events: [TelemetryEvent] = []
            for (k, e) in list.enumerated() {
                guard let eo = e.objectValue else { throw .invalidMessage("entries[\(k)] must be an object", id: nil) }
                let t: String
                switch type {
                case "client.console_activity": t = "console"
                case "client.network_activity": t = eo["status"] != nil ? "net.response" : "net.request"
                default: t = "sdk.log"
                }
                var payload = eo
                payload["ts"] = nil
                events.append(TelemetryEvent(type: t, ts: try timestamp(eo["ts"], path: "entries[\(k)].ts") ?? receivedAt, source: "client", payload: payload))
            }
            return .telemetry(clientSeq: clientSeq, events: events)

        case "client.cdp", "client.cdp_close":
            guard let channel = try optionalInt(o, "channel", min: 1) else { throw .invalidMessage("'channel' is required", id: nil) }
            if type == "client.cdp_close" {
                guard o["reason"] == nil || o["reason"]!.isNull || o["reason"]!.stringValue != nil else {
                    throw .invalidMessage("'reason' must be a string", id: nil)
                }
                return .cdpClose(channel: channel, reason: o["reason"]?.stringValue.map { String($0.prefix(200)) })
            }
            // The worker's CDP client gets only JSON objects, whatever a device sends.
            guard var data = o["data"]?.stringValue,
                  let frame = data.withUTF8({ try? JSONParser.parse(UnsafeRawBufferPointer($0)) }), frame.objectValue != nil else {
                throw .invalidMessage("'data' must be a string holding one CDP frame (a JSON object)", id: nil)
            }
            return .cdp(channel: channel, data: data, frame: frame)

        default:
            throw .unknownType(type)
        }
    }

    /// Accepts the canonical `{type, ts, source, payload}` and the older flat shape.
    static func normalizeEvent(type: String, _ o: JSONObject, receivedAt: Int64, path: String) throws(InboundError) -> TelemetryEvent {
        let ts = try timestamp(o["ts"], path: "\(path).ts") ?? receivedAt
        let source = o["source"]?.stringValue ?? "client"
        // Types and sources are stored as text, which PostgreSQL cannot hold a NUL in.
        guard !type.utf8.contains(0), !source.utf8.contains(0) else {
            throw .invalidMessage("\(path): type and source must not contain U+0000", id: nil)
        }
        if let p = o["payload"]?.objectValue {
            return TelemetryEvent(type: type, ts: ts, source: source, payload: p)
        }
        let rest = JSONObject(o.members.filter { !["type", "ts", "source", "payload"].contains($0.key) }.map { ($0.key, $0.value) })
        return TelemetryEvent(type: type, ts: ts, source: source, payload: rest)
    }

    /// Epoch milliseconds from a number or an ISO-8601 string; nil when absent. A value that
    /// is not a time in `WireNumbers.timestampRange` is an `invalid_message`.
    public static func timestamp(_ v: JSON?, path: String = "ts") throws(InboundError) -> Int64? {
        let ms: Int64?
        switch v {
        case nil, .null?: return nil
        case .number?: ms = v?.doubleValue.flatMap(WireNumbers.millis)
        case .string(let s)?: ms = ISO8601.parse(s).flatMap { WireNumbers.timestampRange.contains($0) ? $0 : nil }
        default: ms = nil
        }
        guard let ms else {
            throw .invalidMessage("'\(path)' must be epoch milliseconds or an ISO-8601 time between 1970 and 9999", id: nil)
        }
        return ms
    }
}

/// Byte ranges of a message's top-level members, for values relayed or parsed on demand.
public struct RawMembers {
    let members: [(key: String, value: JSON?)]
    let ranges: [Range<Int>]
    let base: ArraySlice<UInt8>

    /// The bytes of member `key` (the last one, if repeated).
    subscript(key: String) -> ArraySlice<UInt8>? {
        guard let i = members.lastIndex(where: { $0.key == key }) else { return nil }
        let r = ranges[i]
        return base[(base.startIndex + r.lowerBound)..<(base.startIndex + r.upperBound)]
    }

    func isNull(_ slice: ArraySlice<UInt8>) -> Bool { slice.elementsEqual("null".utf8) }

    /// Member `key` as a built value.
    func full(_ key: String) -> JSON? {
        guard let slice = self[key] else { return nil }
        return try? JSONParser.parse(Array(slice))
    }
}

/// Validation of yield conditions (docs/protocol.md section 6).
public enum YieldConditions {
    public static func validate(_ conditions: [JSON]) -> [ValidationIssue] {
        var issues: [ValidationIssue] = []
        for (k, c) in conditions.enumerated() {
            let path = "conditions[\(k)]"
            guard let o = c.objectValue, let type = o["type"]?.stringValue else {
                issues.append(ValidationIssue(path: path, message: "must be an object with a string type")); continue
            }
            func regex(_ key: String, required: Bool) {
                guard let v = o[key], !v.isNull else {
                    if required { issues.append(ValidationIssue(path: "\(path).\(key)", message: "required")) }
                    return
                }
                guard let s = v.stringValue else { issues.append(ValidationIssue(path: "\(path).\(key)", message: "must be a string")); return }
                if !PatternCheck.isValid(s) { issues.append(ValidationIssue(path: "\(path).\(key)", message: "is not a valid regular expression")) }
            }
            switch type {
            case "url": regex("pattern", required: true)
            case "networkRequest":
                regex("url", required: false)
                for key in ["urlContains", "method", "bodyContains"] where o[key] != nil && o[key]?.stringValue == nil {
                    issues.append(ValidationIssue(path: "\(path).\(key)", message: "must be a string"))
                }
                for key in ["successfulOnly", "captureBody"] where o[key] != nil && o[key]?.boolValue == nil {
                    issues.append(ValidationIssue(path: "\(path).\(key)", message: "must be a boolean"))
                }
            case "selector":
                if o["selector"]?.stringValue?.isEmpty ?? true { issues.append(ValidationIssue(path: "\(path).selector", message: "required: a non-empty string")) }
                if let st = o["state"], !["visible", "attached", "hidden", "detached"].contains(st.stringValue ?? "") {
                    issues.append(ValidationIssue(path: "\(path).state", message: "must be one of visible, attached, hidden, detached"))
                }
            default:
                issues.append(ValidationIssue(path: "\(path).type", message: "must be one of url, networkRequest, selector"))
            }
        }
        return issues
    }
}

/// ISO-8601 timestamps (`2026-01-01T00:00:00.000Z`, with or without fraction, `Z` or offset).
public enum ISO8601 {
    public static func parse(_ s: String) -> Int64? {
        let b = Array(s.utf8)
        func num(_ from: Int, _ len: Int) -> Int? {
            guard from + len <= b.count else { return nil }
            var v = 0
            for k in from..<(from + len) { guard b[k] >= 48 && b[k] <= 57 else { return nil }; v = v * 10 + Int(b[k] - 48) }
            return v
        }
        guard b.count >= 19, let y = num(0, 4), b[4] == 45, let mo = num(5, 2), b[7] == 45, let d = num(8, 2),
              b[10] == 84 || b[10] == 116 || b[10] == 32, let h = num(11, 2), b[13] == 58, let mi = num(14, 2), b[16] == 58, let sec = num(17, 2),
              (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, sec < 61 else { return nil }
        var i = 19
        var ms = 0
        if i < b.count && b[i] == 46 {
            i += 1
            var digits = 0
            while i < b.count && b[i] >= 48 && b[i] <= 57 { if digits < 3 { ms = ms * 10 + Int(b[i] - 48) }; digits += 1; i += 1 }
            guard digits > 0 else { return nil }
            if digits < 3 { for _ in digits..<3 { ms *= 10 } }
        }
        var offset = 0
        if i < b.count {
            if b[i] == 90 || b[i] == 122 { i += 1 }
            else if b[i] == 43 || b[i] == 45 {
                let sign = b[i] == 45 ? -1 : 1
                guard let oh = num(i + 1, 2) else { return nil }
                var om = 0
                if i + 3 < b.count && b[i + 3] == 58 {
                    guard let m = num(i + 4, 2) else { return nil }
                    om = m; i += 6
                } else if let m = num(i + 3, 2) {
                    om = m; i += 5
                } else {
                    i += 3
                }
                offset = sign * (oh * 60 + om)
            } else { return nil }
        }
        guard i == b.count else { return nil }
        // Days from civil (Howard Hinnant's algorithm).
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let mp = (mo + 9) % 12
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        let seconds = Int64(days) * 86400 + Int64(h * 3600 + mi * 60 + sec) - Int64(offset * 60)
        return seconds * 1000 + Int64(ms)
    }

    /// Formats epoch milliseconds as `2026-01-01T00:00:00.000Z`.
    /// The earliest and latest instants `format` writes (0000-01-01T00:00:00.000Z and
    /// 9999-12-31T23:59:59.999Z): a time outside them is written as the nearer one.
    public static let formattable: ClosedRange<Int64> = -62_167_219_200_000...253_402_300_799_999

    public static func format(_ millis: Int64) -> String { String(decoding: formatBytes(millis), as: UTF8.self) }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC, as 24 bytes (the traffic log writes one per line).
    public static func formatBytes(_ millis: Int64) -> [UInt8] {
        let t = Int(min(max(millis, formattable.lowerBound), formattable.upperBound))
        let secs = t >= 0 ? t / 1000 : (t - 999) / 1000
        let ms = t - secs * 1000
        let days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400
        let rem = secs - days * 86400
        // Civil from days (Howard Hinnant's algorithm).
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        var out: [UInt8] = Array("0000-00-00T00:00:00.000Z".utf8)
        func put(_ value: Int, at: Int, width: Int) {
            var v = value
            for k in stride(from: at + width - 1, through: at, by: -1) {
                out[k] = UInt8(truncatingIfNeeded: v % 10) &+ 48
                v /= 10
            }
        }
        put(y, at: 0, width: 4); put(m, at: 5, width: 2); put(d, at: 8, width: 2)
        put(rem / 3600, at: 11, width: 2); put(rem % 3600 / 60, at: 14, width: 2); put(rem % 60, at: 17, width: 2)
        put(ms, at: 20, width: 3)
        return out
    }
}
