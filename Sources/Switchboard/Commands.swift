import Foundation
import SwitchboardProtocol

/// The element a command acts on: a CSS selector, or a `uid` from the latest `extract`.
public enum Target: Sendable, Equatable {
    case selector(String)
    case uid(String)

    var params: JSONObject {
        switch self {
        case .selector(let s): return ["selector": .string(s)]
        case .uid(let u): return ["uid": .string(u)]
        }
    }
}

/// When `navigate` counts as done.
public enum WaitUntil: String, Sendable { case load, domcontentloaded, networkidle }

/// The state `waitForSelector` waits for.
public enum ElementState: String, Sendable { case attached, visible, hidden, detached }

/// The result of `navigate`.
public struct NavigationResult: Codable, Sendable, Equatable {
    /// The URL the page ended up at.
    public var url: String
    /// The main document's HTTP status, when there was one.
    public var status: Int?
    public init(url: String, status: Int? = nil) { self.url = url; self.status = status }
}

/// The result of `reload`, `goBack`, `goForward`, `waitForNavigation`: the page's URL.
public struct URLResult: Codable, Sendable, Equatable { public var url: String }

struct ValueResult<T: Codable & Sendable>: Codable, Sendable { var value: T }
struct SelectedResult: Codable, Sendable { var selected: [String] }

/// The result of `evaluate`: a JSON-serialisable value, or a description of one that is not,
/// or a preview of one too large to send.
public struct EvaluationResult: Codable, Sendable, Equatable {
    /// The JavaScript type (`number`, `string`, `object`, `undefined`, …).
    public var type: String
    /// The value, when it is JSON-serialisable.
    public var value: JSON?
    /// A description of a value that is not serialisable (a function, a DOM node).
    public var description: String?
    /// True when the value was too large and only `preview` is given.
    public var truncated: Bool?
    /// The start of a value too large to send.
    public var preview: String?
    public init(type: String, value: JSON? = nil, description: String? = nil, truncated: Bool? = nil, preview: String? = nil) {
        self.type = type; self.value = value; self.description = description; self.truncated = truncated; self.preview = preview
    }
}

/// The result of `screenshot`.
public struct Screenshot: Codable, Sendable {
    /// Base64 of the image.
    public var data: String
    /// `png` or `jpeg`.
    public var format: String
    /// Width in pixels.
    public var width: Int?
    /// Height in pixels.
    public var height: Int?
    /// The image bytes.
    public var bytes: [UInt8] { Data(base64Encoded: data).map(Array.init) ?? [] }
}

/// An interactive element found by `extract`, addressable by `uid`.
public struct ExtractedElement: Codable, Sendable, Equatable {
    /// Pass as `Target.uid` to later commands.
    public var uid: String
    /// The ARIA role (`button`, `link`, `textbox`, …).
    public var role: String
    /// The accessible name.
    public var name: String?
    /// The current value of a form field.
    public var value: String?
    /// Whether it is visible now.
    public var visible: Bool?
}

/// Something in the page that needs the user (docs/protocol.md section 5.3).
public struct Obstacle: Codable, Sendable, Equatable {
    /// `auth_wall`, `captcha` or `access_denied`.
    public var type: String
    /// `low` or `high`.
    public var confidence: String
    /// What the user is asked to do.
    public var message: String?
}

/// The result of `extract`.
public struct Extraction: Codable, Sendable {
    /// The page's inner text (cut at 50 KB).
    public var text: String
    /// The page as Markdown without navigation, footer, asides and overlays (cut at 30 KB).
    public var markdown: String
    /// The interactive elements, with `uid`s.
    public var elements: [ExtractedElement]
    /// A sign-in wall, captcha or block, when the page shows one.
    public var obstacle: Obstacle?
}

/// One typed method per catalog command (docs/protocol.md section 5.3). Each takes an optional
/// `timeoutMs` for the whole command and throws `SwitchboardError`.
extension WorkerConnection {
    private func run(_ name: String, _ params: JSONObject, _ timeoutMs: Int?) async throws -> JSON {
        try await command(name, params, timeoutMs: timeoutMs)
    }

    private func merge(_ a: JSONObject, _ b: JSONObject) -> JSONObject {
        var o = a
        for m in b.members { o[m.key] = m.value }
        return o
    }

    /// Loads `url` in the main frame and waits for `waitUntil` (default `load`).
    @discardableResult
    public func navigate(_ url: String, waitUntil: WaitUntil? = nil, timeoutMs: Int? = nil) async throws -> NavigationResult {
        var p: JSONObject = ["url": .string(url)]
        if let waitUntil { p["waitUntil"] = .string(waitUntil.rawValue) }
        return try decodeResult(try await run("navigate", p, timeoutMs))
    }

    /// Reloads the page.
    @discardableResult
    public func reload(timeoutMs: Int? = nil) async throws -> URLResult { try decodeResult(try await run("reload", [:], timeoutMs)) }
    /// Goes back in history.
    @discardableResult
    public func goBack(timeoutMs: Int? = nil) async throws -> URLResult { try decodeResult(try await run("goBack", [:], timeoutMs)) }
    /// Goes forward in history.
    @discardableResult
    public func goForward(timeoutMs: Int? = nil) async throws -> URLResult { try decodeResult(try await run("goForward", [:], timeoutMs)) }

    /// Waits until the main frame navigates to a URL matching `urlPattern` (a regex).
    @discardableResult
    public func waitForNavigation(urlPattern: String, timeoutMs: Int? = nil) async throws -> URLResult {
        var p: JSONObject = ["urlPattern": .string(urlPattern)]
        if let timeoutMs { p["timeout"] = .int(timeoutMs) }
        return try decodeResult(try await run("waitForNavigation", p, nil))
    }

    /// Clicks the element (after it is attached, visible, stable and enabled).
    public func click(_ target: Target, button: String? = nil, clickCount: Int? = nil, timeoutMs: Int? = nil) async throws {
        var p = target.params
        if let button { p["button"] = .string(button) }
        if let clickCount { p["clickCount"] = .int(clickCount) }
        _ = try await run("click", p, timeoutMs)
    }

    /// Replaces the field's value (the value is redacted in the server's logs).
    public func fill(_ target: Target, _ value: String, timeoutMs: Int? = nil) async throws {
        _ = try await run("fill", merge(target.params, ["value": .string(value)]), timeoutMs)
    }

    /// Types `text` keystroke by keystroke.
    public func type(_ target: Target, _ text: String, delayMs: Int? = nil, timeoutMs: Int? = nil) async throws {
        var p = merge(target.params, ["text": .string(text)])
        if let delayMs { p["delayMs"] = .int(delayMs) }
        _ = try await run("type", p, timeoutMs)
    }

    /// Selects options of a `<select>` by value; returns the values now selected.
    @discardableResult
    public func select(_ target: Target, values: [String], timeoutMs: Int? = nil) async throws -> [String] {
        let r: SelectedResult = try decodeResult(try await run("select", merge(target.params, ["values": .array(values.map { .string($0) })]), timeoutMs))
        return r.selected
    }

    /// Moves the mouse over the element.
    public func hover(_ target: Target, timeoutMs: Int? = nil) async throws {
        _ = try await run("hover", target.params, timeoutMs)
    }

    /// Presses a key (`Enter`, `Tab`, `Escape`, `ArrowDown`, …), on `target` when given.
    public func press(_ key: String, on target: Target? = nil, timeoutMs: Int? = nil) async throws {
        _ = try await run("press", merge(target?.params ?? [:], ["key": .string(key)]), timeoutMs)
    }

    /// Scrolls the page by `amount` pixels.
    public func scroll(_ direction: String = "down", amount: Int? = nil, timeoutMs: Int? = nil) async throws {
        var p: JSONObject = ["direction": .string(direction)]
        if let amount { p["amount"] = .int(amount) }
        _ = try await run("scroll", p, timeoutMs)
    }

    /// Scrolls `target` into view.
    public func scroll(to target: Target, timeoutMs: Int? = nil) async throws {
        _ = try await run("scroll", target.params, timeoutMs)
    }

    /// Waits until the element reaches `state` (default `visible`).
    public func waitForSelector(_ target: Target, state: ElementState? = nil, timeoutMs: Int? = nil) async throws {
        var p = target.params
        if let state { p["state"] = .string(state.rawValue) }
        if let timeoutMs { p["timeout"] = .int(timeoutMs) }
        _ = try await run("waitForSelector", p, nil)
    }

    /// The attribute's value, or nil when the element has none.
    public func getAttribute(_ target: Target, _ name: String, timeoutMs: Int? = nil) async throws -> String? {
        let r: ValueResult<String?> = try decodeResult(try await run("getAttribute", merge(target.params, ["name": .string(name)]), timeoutMs))
        return r.value
    }

    /// The element's text content.
    public func textContent(_ target: Target, timeoutMs: Int? = nil) async throws -> String {
        let r: ValueResult<String> = try decodeResult(try await run("textContent", target.params, timeoutMs))
        return r.value
    }

    /// The element's inner HTML.
    public func innerHTML(_ target: Target, timeoutMs: Int? = nil) async throws -> String {
        let r: ValueResult<String> = try decodeResult(try await run("innerHTML", target.params, timeoutMs))
        return r.value
    }

    /// Whether the element is visible.
    public func isVisible(_ target: Target, timeoutMs: Int? = nil) async throws -> Bool {
        let r: ValueResult<Bool> = try decodeResult(try await run("isVisible", target.params, timeoutMs))
        return r.value
    }

    /// Runs `expression` as the body of a function in the page (use `return`).
    public func evaluate(_ expression: String, timeoutMs: Int? = nil) async throws -> EvaluationResult {
        try decodeResult(try await run("evaluate", ["expression": .string(expression)], timeoutMs))
    }

    /// The page's URL.
    public func url(timeoutMs: Int? = nil) async throws -> String {
        let r: ValueResult<String> = try decodeResult(try await run("url", [:], timeoutMs))
        return r.value
    }

    /// The page's title.
    public func title(timeoutMs: Int? = nil) async throws -> String {
        let r: ValueResult<String> = try decodeResult(try await run("title", [:], timeoutMs))
        return r.value
    }

    /// The page's HTML.
    public func content(timeoutMs: Int? = nil) async throws -> String {
        let r: ValueResult<String> = try decodeResult(try await run("content", [:], timeoutMs))
        return r.value
    }

    /// A screenshot of the viewport (or the whole page with `fullPage`).
    public func screenshot(format: String = "png", quality: Int? = nil, fullPage: Bool = false, timeoutMs: Int? = nil) async throws -> Screenshot {
        var p: JSONObject = ["format": .string(format), "fullPage": .bool(fullPage)]
        if let quality { p["quality"] = .int(quality) }
        return try decodeResult(try await run("screenshot", p, timeoutMs))
    }

    /// The page (or the part under `selector`) as text, Markdown and interactive elements
    /// with `uid`s for later commands.
    public func extract(selector: String? = nil, timeoutMs: Int? = nil) async throws -> Extraction {
        try decodeResult(try await run("extract", selector.map { ["selector": .string($0)] } ?? [:], timeoutMs))
    }

    /// Waits until no request has been in flight for `idleMs` (default 500).
    public func waitForNetworkIdle(idleMs: Int? = nil, timeoutMs: Int? = nil) async throws {
        var p: JSONObject = [:]
        if let idleMs { p["idleMs"] = .int(idleMs) }
        if let timeoutMs { p["timeout"] = .int(timeoutMs) }
        _ = try await run("waitForNetworkIdle", p, nil)
    }

    /// Waits `ms` milliseconds in the page (at most 60 000).
    public func waitForTimeout(_ ms: Int) async throws {
        _ = try await run("waitForTimeout", ["ms": .int(ms)], nil)
    }

    /// Shows progress to the user on the device.
    public func updateStatus(heading: String? = nil, subheading: String? = nil, progress: Double? = nil) async throws {
        var p: JSONObject = [:]
        if let heading { p["heading"] = .string(heading) }
        if let subheading { p["subheading"] = .string(subheading) }
        if let progress { p["progress"] = .double(progress) }
        _ = try await run("updateStatus", p, nil)
    }
}

extension YieldCondition {
    /// The main frame reached a URL matching `pattern` (a regex, searched).
    public static func url(_ pattern: String) -> YieldCondition { YieldCondition(type: "url", pattern: pattern) }

    /// A network response was seen (after the yield started).
    public static func networkResponse(url: String? = nil, urlContains: String? = nil, method: String? = nil,
                                       successfulOnly: Bool? = nil, bodyContains: String? = nil, captureBody: Bool? = nil) -> YieldCondition {
        YieldCondition(type: "networkRequest", url: url, urlContains: urlContains, method: method, successfulOnly: successfulOnly,
                       bodyContains: bodyContains, captureBody: captureBody)
    }

    /// An element reached `state` (evaluated by the client).
    public static func selector(_ selector: String, state: String? = nil) -> YieldCondition {
        YieldCondition(type: "selector", selector: selector, state: state)
    }
}
