/// The fast encoders of the messages the server sends, next to their Codable definitions
/// (Messages.swift). The server writes `{"type":…,"seq":…` itself (the seq is taken when the
/// message is built) and then calls one of these for the remaining members, each written as
/// `,"key":value`. `ServerWireTests` decodes every one of them with the Codable types and
/// back, so the two definitions cannot drift apart.

extension ServerCommand {
    /// `server.command`: `params` are written from `rawParams` (the worker's bytes, already
    /// validated) when given, else from `params`.
    public static func writeFields(_ w: inout JSONWriter, id: String, command: String, params: JSONObject,
                                   rawParams: ArraySlice<UInt8>? = nil, timeoutMs: Int) {
        w.raw(",\"id\":"); w.write(string: id)
        w.raw(",\"command\":"); w.write(string: command)
        w.raw(",\"params\":")
        if let rawParams { w.raw(rawParams) } else { w.write(object: params) }
        w.raw(",\"timeoutMs\":"); w.int(timeoutMs)
    }
}

extension ServerCommandResult {
    /// `server.command_result`: either `error` or a result (raw bytes, a value, or null).
    public static func writeFields(_ w: inout JSONWriter, id: String, command: String, result: JSON? = nil,
                                   rawResult: ArraySlice<UInt8>? = nil, error: CommandError? = nil, durationMs: Int) {
        w.raw(",\"id\":"); w.write(string: id)
        w.raw(",\"command\":"); w.write(string: command)
        if let error {
            w.raw(",\"error\":")
            var eo: JSONObject = ["code": .string(error.code)]
            if let m = error.message { eo["message"] = .string(m) }
            w.write(object: eo)
        } else {
            w.raw(",\"result\":")
            if let rawResult { w.raw(rawResult) } else if let result { w.write(result) } else { w.raw("null") }
        }
        w.raw(",\"durationMs\":"); w.int(durationMs)
    }
}

extension ServerCancel {
    public static func writeFields(_ w: inout JSONWriter, id: String) {
        w.raw(",\"id\":"); w.write(string: id)
    }
}

extension ServerSetInteractive {
    /// `server.set_interactive`: `conditions` (the client's share, with their indexes) and
    /// `message` only when interactive.
    public static func writeFields(_ w: inout JSONWriter, interactive: Bool, yieldId: String, message: String? = nil,
                                   conditions: [JSON]? = nil) {
        w.raw(interactive ? ",\"interactive\":true,\"yieldId\":" : ",\"interactive\":false,\"yieldId\":")
        w.write(string: yieldId)
        if let message { w.raw(",\"message\":"); w.write(string: message) }
        if let conditions { w.raw(",\"conditions\":"); w.write(.array(conditions)) }
    }
}

extension ServerCDPOpen {
    public static func writeFields(_ w: inout JSONWriter, channel: Int) {
        w.raw(",\"channel\":"); w.int(channel)
    }
}

extension ServerCDPFrame {
    /// `server.cdp`: `frame` is the worker's text frame (valid UTF-8), written as a string.
    public static func writeFields(_ w: inout JSONWriter, channel: Int, frame: UnsafeBufferPointer<UInt8>) {
        w.raw(",\"channel\":"); w.int(channel)
        w.raw(",\"data\":"); w.write(utf8String: frame)
    }
}

extension ServerCDPClose {
    public static func writeFields(_ w: inout JSONWriter, channel: Int, reason: String) {
        w.raw(",\"channel\":"); w.int(channel)
        w.raw(",\"reason\":"); w.write(string: reason)
    }
}

extension ServerAck {
    public static func writeFields(_ w: inout JSONWriter, clientSeq: Int) {
        w.raw(",\"clientSeq\":"); w.int(clientSeq)
    }
}

extension ServerEvent {
    /// `server.event`: one stored event (with its `eventSeq` and `serverTs`).
    public static func writeFields(_ w: inout JSONWriter, event: JSON) {
        w.raw(",\"event\":"); w.write(event)
    }
}

extension ServerError {
    public static func writeFields(_ w: inout JSONWriter, code: ErrorCode, message: String, id: String? = nil,
                                   details: JSONObject? = nil) {
        w.raw(",\"code\":"); w.write(string: code.rawValue)
        w.raw(",\"message\":"); w.write(string: message)
        if let id { w.raw(",\"id\":"); w.write(string: id) }
        if let details { w.raw(",\"details\":"); w.write(object: details) }
    }
}

extension ServerSessionEnd {
    /// `server.session_end`: `result` for a complete session, `error` otherwise.
    public static func writeFields(_ w: inout JSONWriter, phase: Phase, reason: EndReason?, result: JSON?, error: JSON?) {
        w.raw(",\"phase\":"); w.write(string: phase.rawValue)
        w.raw(",\"reason\":"); w.write(string: reason?.rawValue ?? "")
        if phase == .complete {
            w.raw(",\"result\":"); w.write(result ?? .null)
        } else {
            w.raw(",\"error\":"); w.write(error ?? .null)
        }
    }
}

extension ServerReplay {
    /// `server.replay` around messages that are already JSON (each as it was sent).
    public static func write<S: Sequence>(_ w: inout JSONWriter, fromSeq: Int, toSeq: Int, complete: Bool, messages: S)
    where S.Element == ArraySlice<UInt8> {
        w.raw("{\"type\":\"server.replay\",\"fromSeq\":"); w.int(fromSeq)
        w.raw(",\"toSeq\":"); w.int(toSeq)
        w.raw(complete ? ",\"complete\":true,\"messages\":[" : ",\"complete\":false,\"messages\":[")
        var first = true
        for m in messages {
            if !first { w.raw(",") }
            first = false
            w.raw(m)
        }
        w.raw("]}")
    }
}

extension ServerHello {
    /// The whole `server.hello`. `pending` is written as null when there is none; the
    /// worker's and debug viewer's hello carry `metadata` (null when none), the client's
    /// `lastClientSeq` (null before its first stored batch) and its configuration.
    public func write(_ w: inout JSONWriter) {
        w.open(type: "server.hello", seq: nil)
        w.raw(",\"currentSeq\":"); w.int(currentSeq)
        w.raw(",\"sessionId\":"); w.write(string: sessionId)
        w.raw(",\"role\":"); w.write(string: role.rawValue)
        w.raw(",\"protocolVersion\":"); w.int(protocolVersion)
        w.raw(",\"serverVersion\":"); w.write(string: serverVersion)
        w.raw(",\"phase\":"); w.write(string: phase.rawValue)
        w.raw(workerConnected ? ",\"workerConnected\":true" : ",\"workerConnected\":false")
        w.raw(clientConnected ? ",\"clientConnected\":true" : ",\"clientConnected\":false")
        w.raw(interactive ? ",\"interactive\":true" : ",\"interactive\":false")
        if let yieldId { w.raw(",\"yieldId\":"); w.write(string: yieldId) }
        w.raw(",\"pending\":")
        if let p = pending {
            var po: JSONObject = ["id": .string(p.id), "kind": .string(p.kind)]
            if let c = p.command { po["command"] = .string(c) }
            w.write(object: po)
        } else {
            w.raw("null")
        }
        w.raw(",\"expiresAt\":"); w.bytes.append(contentsOf: String(expiresAt).utf8)
        if role != .client {
            w.raw(",\"metadata\":")
            if let metadata { w.write(object: metadata) } else { w.raw("null") }
        } else {
            w.raw(",\"lastClientSeq\":")
            if let lastClientSeq { w.int(lastClientSeq) } else { w.raw("null") }
            w.raw(",\"eventFilter\":"); w.write(eventFilter ?? .null)
            if let capture { w.raw(",\"capture\":"); w.write(capture) }
            if let debug { w.raw(debug ? ",\"debug\":true" : ",\"debug\":false") }
            w.raw(",\"injectionScripts\":"); w.write(.array(injectionScripts ?? []))
        }
        w.raw("}")
    }
}

extension JSONWriter {
    /// Opens a sequenced server message: `{"type":"…","seq":n`. The fields and `}` follow.
    public mutating func open(type: StaticString, seq: Int?) {
        raw("{\"type\":\""); raw(type); raw("\"")
        if let seq { raw(",\"seq\":"); int(seq) }
    }

    /// A whole message (the server's, or `client.cdp`): `type`, `seq` when given, then the members `fields` writes.
    public static func message(type: StaticString, seq: Int? = nil, _ fields: (inout JSONWriter) -> Void) -> [UInt8] {
        var w = JSONWriter()
        w.open(type: type, seq: seq)
        fields(&w)
        w.raw("}")
        return w.bytes
    }
}

extension ClientCDP {
    /// `client.cdp` written directly: a frame can be megabytes (a screenshot).
    public static func message(channel: Int, data: String) -> [UInt8] {
        JSONWriter.message(type: "client.cdp") { w in
            w.raw(",\"channel\":"); w.int(channel)
            w.raw(",\"data\":"); w.write(string: data)
        }
    }
}
