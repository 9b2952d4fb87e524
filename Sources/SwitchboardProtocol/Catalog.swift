/// The command catalog (docs/protocol.md section 5.3): names, parameters and their rules, as a
/// table, plus the normalisation of legacy shapes (section 5.1).
public enum CommandCatalog {
    enum Kind {
        case string, nonEmptyString, number, nonNegativeNumber, positiveInteger, bool, stringArray
        case oneOf([String])
        case url
        case regex
        case unitInterval
        case max(Double)
        /// A wait in ms: a non-negative number no larger than the server's command maximum.
        case timeout
    }

    struct Param {
        var name: String
        var kind: Kind
        var required = false
    }

    enum Target { case none, required, optional }

    struct Spec {
        var target: Target
        var params: [Param]
        var atLeastOne: [String] = []
    }

    static let timeout = Param(name: "timeout", kind: .timeout)

    static let specs: [String: Spec] = [
        "navigate": Spec(target: .none, params: [Param(name: "url", kind: .url, required: true),
                                                  Param(name: "waitUntil", kind: .oneOf(["load", "domcontentloaded", "networkidle"]))]),
        "reload": Spec(target: .none, params: []),
        "goBack": Spec(target: .none, params: []),
        "goForward": Spec(target: .none, params: []),
        "waitForNavigation": Spec(target: .none, params: [Param(name: "urlPattern", kind: .regex, required: true), timeout]),
        "click": Spec(target: .required, params: [Param(name: "button", kind: .oneOf(["left", "right", "middle"])),
                                                   Param(name: "clickCount", kind: .positiveInteger)]),
        "fill": Spec(target: .required, params: [Param(name: "value", kind: .string, required: true)]),
        "type": Spec(target: .required, params: [Param(name: "text", kind: .string, required: true),
                                                  Param(name: "delayMs", kind: .max(60_000))]),
        "select": Spec(target: .required, params: [Param(name: "values", kind: .stringArray, required: true)]),
        "hover": Spec(target: .required, params: []),
        "press": Spec(target: .optional, params: [Param(name: "key", kind: .nonEmptyString, required: true)]),
        "scroll": Spec(target: .optional, params: [Param(name: "direction", kind: .oneOf(["up", "down"])),
                                                    Param(name: "amount", kind: .number)]),
        "waitForSelector": Spec(target: .required, params: [Param(name: "state", kind: .oneOf(["attached", "visible", "hidden", "detached"])), timeout]),
        "getAttribute": Spec(target: .required, params: [Param(name: "name", kind: .nonEmptyString, required: true)]),
        "textContent": Spec(target: .required, params: []),
        "innerHTML": Spec(target: .required, params: []),
        "isVisible": Spec(target: .required, params: []),
        "evaluate": Spec(target: .none, params: [Param(name: "expression", kind: .nonEmptyString, required: true)]),
        "url": Spec(target: .none, params: []),
        "title": Spec(target: .none, params: []),
        "content": Spec(target: .none, params: []),
        "screenshot": Spec(target: .none, params: [Param(name: "format", kind: .oneOf(["png", "jpeg"])),
                                                    Param(name: "quality", kind: .max(100)),
                                                    Param(name: "fullPage", kind: .bool)]),
        "extract": Spec(target: .none, params: [Param(name: "selector", kind: .nonEmptyString)]),
        "waitForNetworkIdle": Spec(target: .none, params: [Param(name: "idleMs", kind: .timeout), timeout]),
        "waitForTimeout": Spec(target: .none, params: [Param(name: "ms", kind: .max(60_000), required: true)]),
        "updateStatus": Spec(target: .none, params: [Param(name: "heading", kind: .string), Param(name: "subheading", kind: .string),
                                                      Param(name: "progress", kind: .unitInterval)],
                             atLeastOne: ["heading", "subheading", "progress"]),
    ]

    /// The params of `command` the catalog looks at (targets included); others are only relayed.
    public static func paramNames(_ command: String) -> Set<String> { paramNameSets[command] ?? [] }

    /// `paramNames` of every command, made once.
    private static let paramNameSets: [String: Set<String>] = specs.reduce(into: [:]) { sets, entry in
        var names = Set(entry.value.params.map(\.name))
        if entry.value.target != .none { names.formUnion(["selector", "uid"]) }
        if entry.key == "select" { names.insert("value") }
        sets[entry.key] = names
    }

    /// Every canonical command name.
    public static var names: [String] { specs.keys.sorted() }

    /// Legacy names mapped to canonical ones.
    public static let aliases = ["wait": "waitForSelector"]

    public static func canonicalName(_ name: String) -> String { aliases[name] ?? name }

    /// The relay timeout of a command (section 5.2): `timeoutMs` if given, else the command's
    /// own wait (`timeout`, or `ms` for waitForTimeout) plus 5 s for `waitFor*` commands, else
    /// the session's default. Never above `limit` (validation refuses larger values first).
    public static func effectiveTimeout(command: String, params: JSONObject, timeoutMs: Int?, sessionDefault: Int,
                                        limit: Int = WireNumbers.absoluteMaxTimeoutMs) -> Int {
        if let timeoutMs { return min(timeoutMs, limit) }
        if command.hasPrefix("waitFor") {
            let own = command == "waitForTimeout" ? params["ms"]?.doubleValue : params["timeout"]?.doubleValue
            if let own, let ms = WireNumbers.duration(own, max: limit) { return min(ms + 5_000, limit) }
        }
        return min(sessionDefault, limit)
    }

    /// Rewrites legacy params into canonical ones (`select` with a string `value`).
    /// Returns nil when nothing changes, so relayed bytes can stay untouched.
    public static func normalizedParams(command: String, params: JSONObject) -> JSONObject? {
        if command == "select", params["values"] == nil, case .string(let v)? = params["value"] {
            var p = params
            p["value"] = nil
            p["values"] = .array([.string(v)])
            return p
        }
        return nil
    }

    /// Checks a (canonical) command and its params. Unknown extra params are allowed.
    public static func validate(command: String, params: JSONObject, limits: InboundLimits = InboundLimits()) -> [ValidationIssue] {
        guard let spec = specs[command] else {
            return [ValidationIssue(path: "command", message: "unknown command '\(command)'")]
        }
        var issues: [ValidationIssue] = []
        switch spec.target {
        case .none: break
        case .required, .optional:
            let sel = params["selector"], uid = params["uid"]
            if sel != nil && uid != nil {
                issues.append(ValidationIssue(path: "params", message: "give exactly one of selector or uid, not both"))
            } else if sel == nil && uid == nil {
                if spec.target == .required { issues.append(ValidationIssue(path: "params.selector", message: "required (or uid)")) }
            } else if let sel {
                if sel.stringValue?.isEmpty != false { issues.append(ValidationIssue(path: "params.selector", message: "must be a non-empty string")) }
            } else if let uid {
                if uid.stringValue?.isEmpty != false { issues.append(ValidationIssue(path: "params.uid", message: "must be a non-empty string")) }
            }
        }
        for p in spec.params {
            guard let v = params[p.name], !(v.isNull && !p.required) else {
                if p.required { issues.append(ValidationIssue(path: "params.\(p.name)", message: "required")) }
                continue
            }
            if let m = check(v, p.kind, limits: limits) { issues.append(ValidationIssue(path: "params.\(p.name)", message: m)) }
        }
        if !spec.atLeastOne.isEmpty && !spec.atLeastOne.contains(where: { params[$0] != nil }) {
            issues.append(ValidationIssue(path: "params", message: "give at least one of \(spec.atLeastOne.joined(separator: ", "))"))
        }
        return issues
    }

    static func check(_ v: JSON, _ kind: Kind, limits: InboundLimits) -> String? {
        switch kind {
        case .string: return v.stringValue == nil ? "must be a string" : nil
        case .nonEmptyString: return (v.stringValue?.isEmpty ?? true) ? "must be a non-empty string" : nil
        case .number: return v.doubleValue == nil ? "must be a number" : nil
        case .nonNegativeNumber:
            guard let d = v.doubleValue else { return "must be a number" }
            return d < 0 ? "must not be negative" : nil
        case .positiveInteger:
            guard let i = v.intValue else { return "must be an integer" }
            return i < 1 || i > 1000 ? "must be an integer from 1 to 1000" : nil
        case .bool: return v.boolValue == nil ? "must be a boolean" : nil
        case .stringArray:
            guard let a = v.arrayValue, a.allSatisfy({ $0.stringValue != nil }) else { return "must be an array of strings" }
            return nil
        case .oneOf(let options):
            guard let s = v.stringValue, options.contains(s) else { return "must be one of \(options.joined(separator: ", "))" }
            return nil
        case .url:
            guard let s = v.stringValue else { return "must be a string" }
            let lower = s.lowercased()
            let ok = ["http://", "https://", "about:", "data:"].contains { lower.hasPrefix($0) } && s.count > 6
            return ok ? nil : "must be an http, https, about or data URL"
        case .regex:
            guard let s = v.stringValue else { return "must be a string" }
            return PatternCheck.isValid(s) ? nil : "is not a valid regular expression"
        case .unitInterval:
            guard let d = v.doubleValue else { return "must be a number" }
            return (0...1).contains(d) ? nil : "must be between 0 and 1"
        case .max(let limit):
            guard let d = v.doubleValue else { return "must be a number" }
            return d < 0 || d > limit ? "must be between 0 and \(Int(limit))" : nil
        case .timeout:
            guard let d = v.doubleValue else { return "must be a number" }
            // The relay waits 5 s longer than the command's own wait.
            let most = max(0, limits.maxCommandTimeoutMs - 5_000)
            return d < 0 || d > Double(most) ? "must be between 0 and \(most)" : nil
        }
    }
}

/// Worker-supplied regular expressions are `Pattern`s: linear-time, bounded work.
public enum PatternCheck {
    /// Patterns longer than this are refused (they are compiled on every yield).
    public static let maxLength = 4_096
    public static func isValid(_ pattern: String) -> Bool {
        pattern.utf8.count <= maxLength && (try? Pattern(pattern)) != nil
    }
}
