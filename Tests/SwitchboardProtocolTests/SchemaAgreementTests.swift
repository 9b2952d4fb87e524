import Foundation
import Testing
@testable import SwitchboardProtocol

/// docs/schemas/switchboard.json (the contract client teams generate code from) and the Swift
/// definitions agree: the same members, the same required ones, the same JSON types and the
/// same enum values. The integration tests check live traffic against the same schemas.
@Suite struct SchemaAgreementTests {
    static let defs: JSONObject = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/schemas/switchboard.json")
        let bytes = (try? Data(contentsOf: url)).map { Array($0) } ?? []
        return (try? JSONParser.parse(bytes))?["$defs"]?.objectValue ?? [:]
    }()

    /// Every Codable message and shape with the name of its schema, as an instance whose
    /// optional members are all set (so Mirror sees the wrapped types).
    static let cases: [(String, any Sendable)] = {
        let cond = YieldCondition(type: "url", pattern: "p", url: "u", urlContains: "c", method: "GET", successfulOnly: true,
                                  bodyContains: "b", captureBody: true, selector: "s", state: "visible", index: 1)
        let event = TelemetryEvent(type: "navigation", ts: 1, source: "client", payload: [:])
        let pending = PendingInfo(id: "c1", kind: "command", command: "click")
        let error = CommandError(code: "timeout", message: "m")
        let hello = ServerHello(currentSeq: 1, sessionId: "s", role: .client, serverVersion: "1", phase: .active, workerConnected: true,
                                clientConnected: true, interactive: false, pending: pending, expiresAt: 1, metadata: [:], lastClientSeq: 1,
                                yieldId: "y", eventFilter: .null, capture: .null, debug: false, injectionScripts: [])
        return [
            ("worker.hello", WorkerHello(sdk: SDKInfo(name: "n", version: "v"), lastSeq: 1, events: [])),
            ("client.hello", ClientHello(sdk: SDKInfo(name: "n", version: "v"), lastSeq: 1, capabilities: [], cdpVersion: [:])),
            ("worker.command", WorkerCommand(id: "c", command: "click", params: [:], timeoutMs: 1)),
            ("worker.cancel", WorkerCancel(id: "c")),
            ("worker.yield_to_user", WorkerYieldToUser(id: "y", conditions: [cond], optional: true, timeoutMs: 1, message: "m")),
            ("worker.complete", WorkerComplete(result: .null)),
            ("worker.fail", WorkerFail(error: .null)),
            ("client.command_response", ClientCommandResponse(id: "c", result: .null, error: error)),
            ("client.events", ClientEvents(clientSeq: 1, events: [event])),
            ("client.cdp", ClientCDP(channel: 1, data: "{}")),
            ("client.cdp_close", ClientCDPClose(channel: 1, reason: "r")),
            ("server.hello", hello),
            ("server.command", ServerCommand(seq: 1, id: "c", command: "click", params: [:], timeoutMs: 1)),
            ("server.command_result", ServerCommandResult(seq: 1, id: "c", command: "click", result: .null, error: error, durationMs: 1)),
            ("server.cancel", ServerCancel(seq: 1, id: "c")),
            ("server.set_interactive", ServerSetInteractive(seq: 1, interactive: true, yieldId: "y", message: "m", conditions: [cond])),
            ("server.ack", ServerAck(seq: 1, clientSeq: 1)),
            ("server.event", ServerEvent(seq: 1, event: event)),
            ("server.error", ServerError(seq: 1, code: .internalError, message: "m", id: "c", details: [:])),
            ("server.session_end", ServerSessionEnd(seq: 1, phase: .complete, reason: .cancelled, result: .null, error: .null)),
            ("server.replay", ServerReplay(fromSeq: 1, toSeq: 1, complete: true, messages: [])),
            ("server.cdp_open", ServerCDPOpen(channel: 1)),
            ("server.cdp", ServerCDPFrame(channel: 1, data: "{}")),
            ("server.cdp_close", ServerCDPClose(channel: 1, reason: "r")),
            ("YieldCondition", cond),
            ("TelemetryEvent", { var e = event; e.eventSeq = 1; e.serverTs = 1; return e }()),
            ("PendingInfo", pending),
            ("CommandError", error),
            ("SDKInfo", SDKInfo(name: "n", version: "v")),
            ("ValidationIssue", ValidationIssue(path: "p", message: "m")),
            ("SessionInfo", SessionInfo(sessionId: "s", phase: .active, reason: .cancelled, createdAt: 1, expiresAt: 1, workerConnected: true,
                                        clientConnected: true, interactive: false, pending: pending, metadata: [:], result: .null, error: .null,
                                        counts: SessionCounts(commands: 1, events: 1))),
            ("CreateSessionResponse", CreateSessionResponse(sessionId: "s", workerToken: "w", clientToken: "c", websocketUrl: "ws://x",
                                                            expiresAt: 1, phase: .created)),
            ("EventPage", EventPage(events: [], next: 1)),
            ("JournalPage", JournalPage(entries: [], next: 1)),
            ("JournalRecord", JournalRecord(n: 1, direction: "server", ts: "t", message: .null)),
        ]
    }()

    func def(_ name: String) -> JSONObject? { Self.defs[name]?.objectValue }

    /// A definition's properties and required members, through `allOf` references.
    func shape(_ name: String) -> (properties: JSONObject, required: Set<String>) {
        guard let d = def(name) else { return ([:], []) }
        var props = d["properties"]?.objectValue ?? [:]
        var required = Set((d["required"]?.arrayValue ?? []).compactMap(\.stringValue))
        for part in d["allOf"]?.arrayValue ?? [] {
            if let r = part["$ref"]?.stringValue, let inner = r.split(separator: "/").last {
                let s = shape(String(inner))
                for m in s.properties.members where props[m.key] == nil { props[m.key] = m.value }
                required.formUnion(s.required)
            }
        }
        return (props, required)
    }

    /// The JSON type a schema property allows (nil: any, or not one simple type).
    func jsonType(_ p: JSON) -> String? {
        if let t = p["type"]?.stringValue { return t }
        if let ts = p["type"]?.arrayValue { return ts.compactMap(\.stringValue).first { $0 != "null" } }
        if p["const"]?.stringValue != nil { return "string" }
        if let r = p["$ref"]?.stringValue, let name = r.split(separator: "/").last, let d = def(String(name)) {
            if d["enum"] != nil { return "string" }
            return jsonType(.object(d))
        }
        if let options = p["oneOf"]?.arrayValue {
            let types = Set(options.compactMap(jsonType).filter { $0 != "null" })
            return types.count == 1 ? types.first : nil
        }
        return nil
    }

    /// The JSON type of a Swift member's value type (nil: any JSON value).
    func jsonType(swift value: Any) -> String? {
        switch value {
        case is Int, is Int64: return "integer"
        case is String, is Phase, is Role, is ErrorCode, is EndReason: return "string"
        case is Bool: return "boolean"
        case is JSONObject, is [String: String], is SDKInfo, is PendingInfo, is CommandError, is TelemetryEvent, is SessionCounts: return "object"
        case is JSON: return nil
        case is [Any]: return "array"
        default: return "object"
        }
    }

    @Test func everySwiftShapeMatchesItsSchema() throws {
        #expect(Self.defs.members.count > 40, "docs/schemas/switchboard.json was not read")
        for (name, instance) in Self.cases {
            guard def(name) != nil else { Issue.record("no schema \(name)"); continue }
            let (props, required) = shape(name)
            var swiftMembers: [String: (optional: Bool, value: Any)] = [:]
            for child in Mirror(reflecting: instance).children {
                guard let label = child.label else { continue }
                let m = Mirror(reflecting: child.value)
                if m.displayStyle == .optional {
                    swiftMembers[label] = (true, m.children.first?.value ?? child.value)
                } else {
                    swiftMembers[label] = (false, child.value)
                }
            }
            #expect(Set(swiftMembers.keys) == Set(props.members.map(\.key)), "\(name): Swift \(swiftMembers.keys.sorted()) vs schema \(props.members.map(\.key).sorted())")
            for (label, member) in swiftMembers {
                if !member.optional { #expect(required.contains(label), "\(name).\(label) is required in Swift but not in the schema") }
                guard let p = props[label] else { continue }
                if let want = jsonType(swift: member.value), let have = jsonType(p) {
                    #expect(want == have || (want == "integer" && have == "number"), "\(name).\(label): Swift \(want), schema \(have)")
                }
            }
            for r in required { #expect(swiftMembers[r] != nil, "\(name).\(r) is required in the schema but not a Swift member") }
        }
    }

    @Test func enumsMatch() {
        func values(_ name: String) -> Set<String> { Set((def(name)?["enum"]?.arrayValue ?? []).compactMap(\.stringValue)) }
        #expect(values("Phase") == Set(Phase.allCases.map(\.rawValue)))
        #expect(values("Role") == Set(Role.allCases.map(\.rawValue)))
        #expect(values("ErrorCode") == Set(ErrorCode.allCases.map(\.rawValue)))
        #expect(values("EndReason") == Set(EndReason.allCases.map(\.rawValue)))
    }

    @Test func everyMessageTypeTheServerDecodesHasASchema() {
        for t in InboundDecoder.workerTypes.union(InboundDecoder.clientTypes) { #expect(def(t) != nil, "no schema for \(t)") }
        let peerSchemas = Self.defs.members.map(\.key).filter { $0.hasPrefix("worker.") || $0.hasPrefix("client.") }
        for t in peerSchemas { #expect(InboundDecoder.workerTypes.contains(t) || InboundDecoder.clientTypes.contains(t), "\(t) is documented but not decoded") }
    }
}

/// The catalog's params in docs/schemas/switchboard.json (`params.NAME`, checked live on every
/// `server.command`) and `CommandCatalog` agree: the same commands, members, required members,
/// JSON types and allowed values; every command has a documented result (`result.NAME`).
@Suite struct CatalogSchemaTests {
    func def(_ name: String) -> JSONObject? { SchemaAgreementTests.defs[name]?.objectValue }

    @Test func everyCommandsParamsMatchTheCatalog() throws {
        let documented = Set(SchemaAgreementTests.defs.members.map(\.key).filter { $0.hasPrefix("params.") }.map { String($0.dropFirst(7)) })
        #expect(documented == Set(CommandCatalog.names))
        let commandEnum = Set((def("server.command")?["properties"]?["command"]?["enum"]?.arrayValue ?? []).compactMap(\.stringValue))
        #expect(commandEnum == Set(CommandCatalog.names))
        for (name, spec) in CommandCatalog.specs {
            guard let schema = def("params.\(name)") else { Issue.record("no params.\(name)"); continue }
            #expect(def("result.\(name)") != nil, "no result.\(name)")
            let props = schema["properties"]?.objectValue ?? [:]
            var expected = Set(spec.params.map(\.name))
            if spec.target != .none { expected.formUnion(["selector", "uid"]) }
            #expect(Set(props.members.map(\.key)) == expected, "params.\(name)")
            let required = Set((schema["required"]?.arrayValue ?? []).compactMap(\.stringValue))
            #expect(required == Set(spec.params.filter(\.required).map(\.name)), "params.\(name) required")
            // Exactly one of selector or uid when a target is required; at most one when optional.
            #expect((schema["oneOf"]?.arrayValue?.count ?? 0) == (spec.target == .required ? 2 : spec.target == .optional ? 3 : 0), "params.\(name) target")
            for p in spec.params {
                guard let ps = props[p.name] else { continue }
                switch p.kind {
                case .string, .nonEmptyString, .url, .regex: #expect(ps["type"]?.stringValue == "string", "params.\(name).\(p.name)")
                case .number, .nonNegativeNumber, .unitInterval, .max, .timeout: #expect(ps["type"]?.stringValue == "number", "params.\(name).\(p.name)")
                case .positiveInteger: #expect(ps["type"]?.stringValue == "integer", "params.\(name).\(p.name)")
                case .bool: #expect(ps["type"]?.stringValue == "boolean", "params.\(name).\(p.name)")
                case .stringArray: #expect(ps["type"]?.stringValue == "array", "params.\(name).\(p.name)")
                case .oneOf(let options):
                    #expect(Set((ps["enum"]?.arrayValue ?? []).compactMap(\.stringValue)) == Set(options), "params.\(name).\(p.name)")
                }
                if case .max(let limit) = p.kind { #expect(ps["maximum"]?.doubleValue == limit, "params.\(name).\(p.name) maximum") }
            }
        }
    }
}
