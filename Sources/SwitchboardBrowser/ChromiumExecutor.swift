import CDP
import Foundation
import Switchboard
import SwitchboardProtocol

/// The reference client's executor: every catalog command in a Chromium page through the
/// DevTools protocol, with Playwright's semantics (docs/protocol.md section 5.3), and the
/// page's activity reported as telemetry.
public actor ChromiumExecutor: CommandExecutor {
    let cdp: CDPConnection
    let session: String
    private var mainFrame = ""
    private var currentURL = "about:blank"
    private var telemetry: TelemetrySink?
    private var eventTypes: Set<String>?
    /// `uid` → backend node id, from the latest `extract`; cleared by main-frame navigations.
    private var uids: [String: Int] = [:]
    private var inflight: [String: (url: String, method: String, type: String, started: Double, loader: String)] = [:]
    private var responses: [String: (status: Int, url: String, mimeType: String)] = [:]
    private var lastNetworkActivity = Date()
    private var documentStatus: [String: Int] = [:]
    private var waiters: [Int: Waiter] = [:]
    private var nextWaiter = 0
    private var conditionWatch: Task<Void, Never>?
    private let log: @Sendable (String) -> Void
    /// Called for every `set_interactive` (a headed browser takes a screenshot with it).
    private let onInteractive: (@Sendable (InteractiveChange, ChromiumExecutor) async -> Void)?

    private struct Waiter {
        var matches: @Sendable (CDPConnection.Event) -> Bool
        var continuation: CheckedContinuation<CDPConnection.Event, any Error>?
        var seen: CDPConnection.Event?
    }

    /// Relays CDP channels to the browser when set (the `cdp` capability).
    let bridge: CDPBridge?
    public nonisolated let cdpVersion: [String: String]?

    public nonisolated var capabilities: [String] { ["selectorConditions", "uid"] + (bridge == nil ? [] : ["cdp"]) }

    /// Attaches to the browser's first page (or opens one) and enables the domains it needs.
    /// With `cdpEndpoint` (the browser's DevTools WebSocket URL) it relays CDP channels.
    public static func attach(_ cdp: CDPConnection, cdpEndpoint: String? = nil, log: @escaping @Sendable (String) -> Void = { _ in },
                              onInteractive: (@Sendable (InteractiveChange, ChromiumExecutor) async -> Void)? = nil) async throws -> ChromiumExecutor {
        let targets = try await cdp.send("Target.getTargets")["targetInfos"]?.arrayValue ?? []
        var targetId = targets.first { $0["type"]?.stringValue == "page" }?["targetId"]?.stringValue
        if targetId == nil { targetId = try await cdp.send("Target.createTarget", ["url": .string("about:blank")])["targetId"]?.stringValue }
        guard let targetId else { throw CommandFailure(code: "internal_error", message: "no page target") }
        guard let session = try await cdp.send("Target.attachToTarget", ["targetId": .string(targetId), "flatten": .bool(true)])["sessionId"]?.stringValue else {
            throw CommandFailure(code: "internal_error", message: "cannot attach to the page")
        }
        var version: [String: String]? = nil
        if cdpEndpoint != nil, let v = try? await cdp.send("Browser.getVersion") {
            version = ["Browser": v["product"]?.stringValue ?? "Chrome", "Protocol-Version": v["protocolVersion"]?.stringValue ?? "1.3",
                       "User-Agent": v["userAgent"]?.stringValue ?? "", "V8-Version": v["jsVersion"]?.stringValue ?? ""]
        }
        let e = ChromiumExecutor(cdp: cdp, session: session, bridge: cdpEndpoint.map { CDPBridge(endpoint: $0, protectedTarget: targetId) },
                                 cdpVersion: version, log: log, onInteractive: onInteractive)
        await e.start()
        return e
    }

    init(cdp: CDPConnection, session: String, bridge: CDPBridge?, cdpVersion: [String: String]?, log: @escaping @Sendable (String) -> Void,
         onInteractive: (@Sendable (InteractiveChange, ChromiumExecutor) async -> Void)?) {
        self.cdp = cdp
        self.session = session
        self.bridge = bridge
        self.cdpVersion = cdpVersion
        self.log = log
        self.onInteractive = onInteractive
    }

    private func start() async {
        let events = await cdp.subscribe()
        Task { for await e in events where e.sessionId == session { await self.handle(e) } }
        for domain in ["Page.enable", "Runtime.enable", "Network.enable", "DOM.enable"] { _ = try? await page(domain) }
        _ = try? await page("Page.setLifecycleEventsEnabled", ["enabled": .bool(true)])
        _ = try? await page("Runtime.addBinding", ["name": .string("__switchboardEmit")])
        _ = try? await page("Page.addScriptToEvaluateOnNewDocument", ["source": .string(PageScripts.bridge), "runImmediately": .bool(true)])
        if let tree = try? await page("Page.getFrameTree"), let frame = tree["frameTree"]?["frame"] {
            mainFrame = frame["id"]?.stringValue ?? ""
            currentURL = frame["url"]?.stringValue ?? currentURL
        }
    }

    /// A command to the page's session.
    @discardableResult
    func page(_ method: String, _ params: JSONObject = [:], timeoutMs: Int = 30_000) async throws -> JSONObject {
        try await cdp.send(method, params, sessionId: session, timeoutMs: timeoutMs)
    }

    // MARK: CommandExecutor

    public func configure(_ configuration: ClientConfiguration, telemetry: TelemetrySink) async {
        self.telemetry = telemetry
        if let types = configuration.eventFilter?["types"]?.arrayValue { eventTypes = Set(types.compactMap(\.stringValue)) }
        for script in configuration.injectionScripts {
            _ = try? await page("Page.addScriptToEvaluateOnNewDocument", ["source": .string(script.source), "runImmediately": .bool(true)])
        }
        log("installed \(configuration.injectionScripts.count) injection script(s): \(configuration.injectionScripts.map(\.name).joined(separator: ", "))")
    }

    public func setInteractive(_ change: InteractiveChange) async {
        log(change.interactive ? "interactive: showing the browser to the user (\(change.message ?? "no message"))" : "interactive: hidden again")
        conditionWatch?.cancel()
        conditionWatch = nil
        if change.interactive {
            let selectors = change.conditions.filter { $0.type == "selector" }
            if !selectors.isEmpty { conditionWatch = Task { await self.watch(selectors, yieldId: change.yieldId) } }
        }
        await onInteractive?(change, self)
    }

    public func cdpOpen(channel: Int, outlet: CDPOutlet) async {
        guard let bridge else { await outlet.close(reason: "this client does not relay CDP"); return }
        log("CDP channel \(channel) opened by the worker")
        await bridge.open(channel: channel, outlet: outlet)
    }

    public func cdpFrame(channel: Int, data: String) async { await bridge?.frame(channel: channel, data: data) }

    public func cdpClose(channel: Int) async {
        log("CDP channel \(channel) closed")
        await bridge?.close(channel: channel)
    }

    public func sessionEnded(_ end: ServerSessionEnd) async {
        conditionWatch?.cancel()
        log("session ended: \(end.phase.rawValue) (\(end.reason.rawValue))")
    }

    public func execute(_ command: ClientCommand) async throws -> JSON {
        let deadline = Date().addingTimeInterval(Double(max(min(command.timeoutMs, 86_400_000) - 250, 100)) / 1000)
        do {
            return try await run(command, deadline: deadline)
        } catch let f as CommandFailure {
            throw f
        } catch is CancellationError {
            throw CancellationError()
        } catch let e as CDPConnection.Failure {
            if e.message.contains("did not answer") { throw CommandFailure.timeout(e.message) }
            throw CommandFailure(code: "command_failed", message: e.message)
        }
    }

    private func run(_ c: ClientCommand, deadline: Date) async throws -> JSON {
        let p = c.params
        switch c.name {
        case "navigate": return try await navigate(p["url"]?.stringValue ?? "", waitUntil: p["waitUntil"]?.stringValue ?? "load", deadline: deadline)
        case "reload":
            let loaded = expectLifecycle("load", loaderId: nil)
            try await page("Page.reload")
            _ = try await wait(loaded, until: deadline, what: "reload")
            return .object(["url": .string(try await string("location.href"))])
        case "goBack", "goForward":
            let history = try await page("Page.getNavigationHistory")
            let index = (history["currentIndex"]?.intValue ?? 0) + (c.name == "goBack" ? -1 : 1)
            guard let entries = history["entries"]?.arrayValue, entries.indices.contains(index), let id = entries[index]["id"]?.intValue else {
                return .object(["url": .string(currentURL)]) // nothing to go to: stays (as Playwright answers null)
            }
            let moved = expectNavigation()
            try await page("Page.navigateToHistoryEntry", ["entryId": .int(id)])
            _ = try await wait(moved, until: deadline, what: c.name)
            return .object(["url": .string(try await string("location.href"))])
        case "waitForNavigation":
            guard let pattern = p["urlPattern"]?.stringValue, let regex = try? Pattern(pattern) else {
                throw CommandFailure(code: "command_failed", message: "invalid urlPattern")
            }
            let limit = p["timeout"]?.intValue.map { Date().addingTimeInterval(Double($0) / 1000) } ?? deadline
            let main = mainFrame
            let moved = expect { e in
                (e.method == "Page.frameNavigated" && e.params["frame"]?["parentId"] == nil
                    && regex.matches(e.params["frame"]?["url"]?.stringValue ?? ""))
                || (e.method == "Page.navigatedWithinDocument" && e.params["frameId"]?.stringValue == main
                    && regex.matches(e.params["url"]?.stringValue ?? ""))
            }
            if regex.matches(currentURL) {
                cancel(moved)
            } else {
                _ = try await wait(moved, until: min(limit, deadline), what: "a navigation to \(pattern)")
            }
            // As Playwright does: done once the document has loaded.
            try await waitForLoad(until: min(limit, deadline))
            return .object(["url": .string(try await string("location.href"))])
        case "click":
            let (x, y) = try await actionablePoint(p, enabled: true, hit: true, deadline: deadline)
            let button = p["button"]?.stringValue ?? "left"
            let count = p["clickCount"]?.intValue ?? 1
            try await mouse("mouseMoved", x, y)
            for n in 1...min(max(1, count), 1000) {
                try await mouse("mousePressed", x, y, button: button, clickCount: n)
                try await mouse("mouseReleased", x, y, button: button, clickCount: n)
            }
            return .object(["ok": .bool(true)])
        case "hover":
            let (x, y) = try await actionablePoint(p, enabled: false, hit: true, deadline: deadline)
            try await mouse("mouseMoved", x, y)
            return .object(["ok": .bool(true)])
        case "fill":
            _ = try await actionablePoint(p, enabled: true, deadline: deadline)
            let ready = try await call(PageScripts.prepareFill, on: try await element(p, deadline: deadline)).stringValue ?? "error:unknown"
            if ready.hasPrefix("error:") { throw CommandFailure(code: "command_failed", message: String(ready.dropFirst(6))) }
            let value = p["value"]?.stringValue ?? ""
            if value.isEmpty {
                for e in KeyPress.parse("Delete")!.events { try await page("Input.dispatchKeyEvent", e) }
            } else {
                try await page("Input.insertText", ["text": .string(value)])
            }
            return .object(["ok": .bool(true)])
        case "type":
            _ = try await actionablePoint(p, enabled: true, deadline: deadline)
            _ = try await call("function () { this.focus(); }", on: try await element(p, deadline: deadline))
            let delay = p["delayMs"]?.intValue ?? 0
            for ch in p["text"]?.stringValue ?? "" {
                let press = ch == "\n" ? KeyPress.parse("Enter")!
                    : KeyPress.parse(String(ch)) ?? KeyPress(modifiers: 0, key: KeyDefinition(key: String(ch), code: "", keyCode: 0, text: String(ch)))
                for e in press.events { try await page("Input.dispatchKeyEvent", e) }
                if delay > 0 { try await Task.sleep(nanoseconds: WireNumbers.sleepNanoseconds(millis: delay)) }
            }
            return .object(["ok": .bool(true)])
        case "select":
            _ = try await actionablePoint(p, enabled: true, deadline: deadline)
            let r = try await call(PageScripts.select, on: try await element(p, deadline: deadline), arguments: [p["values"] ?? .array([])])
            if let e = r["error"]?.stringValue { throw CommandFailure(code: "command_failed", message: e) }
            return r
        case "press":
            guard let press = KeyPress.parse(p["key"]?.stringValue ?? "") else {
                throw CommandFailure(code: "command_failed", message: "unknown key \(p["key"]?.stringValue ?? "")")
            }
            if p["selector"] != nil || p["uid"] != nil {
                _ = try await call("function () { this.focus(); }", on: try await element(p, deadline: deadline))
            }
            for e in press.events { try await page("Input.dispatchKeyEvent", e) }
            return .object(["ok": .bool(true)])
        case "scroll":
            if p["selector"] != nil || p["uid"] != nil {
                _ = try await actionablePoint(p, enabled: false, deadline: deadline)
            } else {
                let amount = Double(p["amount"]?.intValue ?? 500) * (p["direction"]?.stringValue == "up" ? -1 : 1)
                let before = try await number("window.scrollY")
                try await page("Input.dispatchMouseEvent", ["type": .string("mouseWheel"), "x": .int(100), "y": .int(100),
                                                            "deltaX": .int(0), "deltaY": .double(amount)])
                // The wheel scrolls asynchronously: wait (briefly) until the position moved.
                for _ in 0..<20 where try await number("window.scrollY") == before { try await Task.sleep(nanoseconds: 10_000_000) }
            }
            return .object(["ok": .bool(true)])
        case "waitForSelector", "wait":
            let want = p["state"]?.stringValue ?? "visible"
            let limit = p["timeout"]?.intValue.map { Date().addingTimeInterval(Double($0) / 1000) } ?? deadline
            while true {
                let state = try await elementState(p)
                if state == want || (want == "attached" && state != "detached") || (want == "hidden" && state != "visible") {
                    return .object(["ok": .bool(true)])
                }
                guard Date() < min(limit, deadline) else { throw CommandFailure.timeout("the element did not become \(want)") }
                try await Task.sleep(nanoseconds: 50_000_000)
            }
        case "getAttribute":
            let v = try await call("function (n) { return this.getAttribute(n); }", on: try await element(p, deadline: deadline), arguments: [p["name"] ?? .null])
            return .object(["value": v])
        case "textContent":
            return .object(["value": try await call("function () { return this.textContent || \"\"; }", on: try await element(p, deadline: deadline))])
        case "innerHTML":
            return .object(["value": try await call("function () { return this.innerHTML; }", on: try await element(p, deadline: deadline))])
        case "isVisible":
            return .object(["value": .bool(try await elementState(p) == "visible")])
        case "evaluate": return try await evaluate(p["expression"]?.stringValue ?? "", deadline: deadline)
        case "url": return .object(["value": .string(try await string("location.href"))])
        case "title": return .object(["value": .string(try await string("document.title"))])
        case "content": return .object(["value": .string(try await string("document.documentElement ? document.documentElement.outerHTML : ''"))])
        case "screenshot": return try await screenshot(p)
        case "extract": return try await extract(selector: p["selector"]?.stringValue, deadline: deadline)
        case "waitForNetworkIdle":
            let idle = Double(p["idleMs"]?.intValue ?? 500) / 1000
            let limit = p["timeout"]?.intValue.map { Date().addingTimeInterval(Double($0) / 1000) } ?? deadline
            while !(inflight.isEmpty && Date().timeIntervalSince(lastNetworkActivity) >= idle) {
                guard Date() < min(limit, deadline) else {
                    throw CommandFailure.timeout("the network did not go idle (in flight: \(inflight.values.map(\.url).prefix(3).joined(separator: ", ")))")
                }
                try await Task.sleep(nanoseconds: 25_000_000)
            }
            return .object(["ok": .bool(true)])
        case "waitForTimeout":
            try await Task.sleep(nanoseconds: WireNumbers.sleepNanoseconds(millis: p["ms"]?.intValue ?? 0))
            return .object(["ok": .bool(true)])
        case "updateStatus":
            log("status: \(p["heading"]?.stringValue ?? "") \(p["subheading"]?.stringValue ?? "") \(p["progress"].map { JSONWriter.string($0) } ?? "")")
            return .object(["ok": .bool(true)])
        default:
            throw CommandFailure.notSupported("\(c.name) is not supported by this client")
        }
    }

    // MARK: Navigation

    private func navigate(_ url: String, waitUntil: String, deadline: Date) async throws -> JSON {
        uids = [:]
        let event = ["domcontentloaded": "DOMContentLoaded", "networkidle": "networkIdle"][waitUntil] ?? "load"
        let r = try await page("Page.navigate", ["url": .string(url)])
        if let error = r["errorText"]?.stringValue { throw CommandFailure.navigationFailed("\(url): \(error)") }
        if let loader = r["loaderId"]?.stringValue {
            let done = expectLifecycle(event, loaderId: loader)
            _ = try await wait(done, until: deadline, what: "\(event) of \(url)")
            var out: JSONObject = ["url": .string(try await string("location.href"))]
            if let status = documentStatus[loader] { out["status"] = .int(status) }
            return .object(out)
        }
        // A same-document navigation (a fragment): done at once.
        return .object(["url": .string(try await string("location.href"))])
    }

    /// Waits until the main document's `readyState` is `complete`.
    private func waitForLoad(until deadline: Date) async throws {
        while (try? await string("document.readyState")) != "complete" {
            guard Date() < deadline else { throw CommandFailure.timeout("the page did not finish loading") }
            try await Task.sleep(nanoseconds: 25_000_000)
        }
    }

    private func expectLifecycle(_ name: String, loaderId: String?) -> Int {
        let main = mainFrame
        return expect { e in
            e.method == "Page.lifecycleEvent" && e.params["name"]?.stringValue == name && e.params["frameId"]?.stringValue == main
                && (loaderId == nil || e.params["loaderId"]?.stringValue == loaderId)
        }
    }

    private func expectNavigation() -> Int {
        let main = mainFrame
        return expect { e in
            (e.method == "Page.frameNavigated" && e.params["frame"]?["parentId"] == nil)
                || (e.method == "Page.navigatedWithinDocument" && e.params["frameId"]?.stringValue == main)
        }
    }

    // MARK: Elements

    /// The element a command targets, as a remote object id (waiting until it is attached).
    private func element(_ p: JSONObject, deadline: Date) async throws -> String {
        while true {
            if let id = try await resolve(p) { return id }
            guard Date() < deadline else { throw CommandFailure.elementNotFound("no element matches \(describe(p))") }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    /// Resolves `selector` or `uid` now: nil when nothing matches. A `uid` whose node is gone
    /// (or was never handed out) is `element_stale`.
    private func resolve(_ p: JSONObject) async throws -> String? {
        if let uid = p["uid"]?.stringValue {
            guard let node = uids[uid] else { throw CommandFailure.elementStale("uid \(uid) is not from the latest extract of this page") }
            do {
                let r = try await page("DOM.resolveNode", ["backendNodeId": .int(node)])
                guard let id = r["object"]?["objectId"]?.stringValue else { throw CommandFailure.elementStale("uid \(uid) is gone") }
                let connected = try await call("function () { return this.isConnected; }", on: id)
                guard connected == .bool(true) else { throw CommandFailure.elementStale("uid \(uid) is no longer in the page") }
                return id
            } catch let e as CDPConnection.Failure {
                throw CommandFailure.elementStale("uid \(uid) is gone: \(e.message)")
            }
        }
        guard let selector = p["selector"]?.stringValue else { throw CommandFailure(code: "command_failed", message: "no target") }
        let r = try await page("Runtime.evaluate", ["expression": .string("document.querySelector(\(JSONWriter.string(.string(selector))))")])
        if r["exceptionDetails"] != nil { throw CommandFailure(code: "command_failed", message: "invalid selector \(selector)") }
        return r["result"]?["objectId"]?.stringValue
    }

    private func describe(_ p: JSONObject) -> String {
        p["selector"]?.stringValue ?? p["uid"].map { "uid " + ($0.stringValue ?? "") } ?? "the target"
    }

    /// Waits until the target is attached, visible, stable (and enabled), scrolls it into view
    /// and returns its centre.
    private func actionablePoint(_ p: JSONObject, enabled: Bool, hit: Bool = false, deadline: Date) async throws -> (Double, Double) {
        var last = "not found"
        while true {
            if let id = try await resolve(p) {
                let r = try await call(PageScripts.actionable, on: id, arguments: [.bool(enabled), .bool(hit)])
                let s = r["s"]?.stringValue ?? "detached"
                if s == "ok", let x = r["x"]?.doubleValue, let y = r["y"]?.doubleValue { return (x, y) }
                last = s == "obscured" ? "covered by \(r["by"]?.stringValue ?? "another element")" : s
            }
            guard Date() < deadline else {
                if last == "not found" { throw CommandFailure.elementNotFound("no element matches \(describe(p))") }
                throw CommandFailure.timeout("\(describe(p)) is \(last)")
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    private func elementState(_ p: JSONObject) async throws -> String {
        do {
            guard let id = try await resolve(p) else { return "detached" }
            return try await call(PageScripts.state, on: id).stringValue ?? "detached"
        } catch let f as CommandFailure where f.code == "element_stale" {
            return "detached"
        }
    }

    /// Calls `function` with `this` the object, returning its value by JSON.
    private func call(_ function: String, on objectId: String, arguments: [JSON] = []) async throws -> JSON {
        let r = try await page("Runtime.callFunctionOn", ["functionDeclaration": .string(function), "objectId": .string(objectId),
                                                         "arguments": .array(arguments.map { .object(["value": $0]) }),
                                                         "awaitPromise": .bool(true), "returnByValue": .bool(true)])
        if let e = r["exceptionDetails"] {
            throw CommandFailure(code: "command_failed", message: e["exception"]?["description"]?.stringValue ?? e["text"]?.stringValue ?? "script error")
        }
        return r["result"]?["value"] ?? .null
    }

    private func mouse(_ type: String, _ x: Double, _ y: Double, button: String = "none", clickCount: Int = 0) async throws {
        try await page("Input.dispatchMouseEvent", ["type": .string(type), "x": .double(x), "y": .double(y),
                                                    "button": .string(type == "mouseMoved" ? "none" : button), "clickCount": .int(clickCount)])
    }

    private func string(_ expression: String) async throws -> String {
        let r = try await page("Runtime.evaluate", ["expression": .string(expression), "returnByValue": .bool(true)])
        return r["result"]?["value"]?.stringValue ?? ""
    }

    private func number(_ expression: String) async throws -> Double {
        let r = try await page("Runtime.evaluate", ["expression": .string(expression), "returnByValue": .bool(true)])
        return r["result"]?["value"]?.doubleValue ?? 0
    }

    // MARK: evaluate, screenshot, extract

    private func evaluate(_ body: String, deadline: Date) async throws -> JSON {
        let ms = max(100, Self.millisLeft(until: deadline))
        let r = try await page("Runtime.evaluate", ["expression": .string(PageScripts.evaluate(body)), "awaitPromise": .bool(true),
                                                    "returnByValue": .bool(true), "userGesture": .bool(true)], timeoutMs: ms)
        if let e = r["exceptionDetails"] {
            throw CommandFailure.evaluationFailed(e["exception"]?["description"]?.stringValue ?? e["text"]?.stringValue ?? "the script threw")
        }
        return r["result"]?["value"] ?? .object(["type": .string("undefined")])
    }

    private func screenshot(_ p: JSONObject) async throws -> JSON {
        let format = p["format"]?.stringValue == "jpeg" ? "jpeg" : "png"
        let full = p["fullPage"]?.boolValue ?? false
        let metrics = try await page("Page.getLayoutMetrics")
        let viewport = metrics["cssLayoutViewport"]?.objectValue ?? [:]
        let content = metrics["cssContentSize"]?.objectValue ?? [:]
        let width = (full ? content["width"] : viewport["clientWidth"])?.doubleValue ?? 0
        let height = (full ? content["height"] : viewport["clientHeight"])?.doubleValue ?? 0
        var params: JSONObject = ["format": .string(format)]
        if format == "jpeg" { params["quality"] = .int(p["quality"]?.intValue ?? 80) }
        if full {
            params["captureBeyondViewport"] = .bool(true)
            params["clip"] = .object(["x": .int(0), "y": .int(0), "width": .double(width), "height": .double(height), "scale": .int(1)])
        }
        let r = try await page("Page.captureScreenshot", params, timeoutMs: 60_000)
        let data = r["data"]?.stringValue ?? ""
        // The image's own size (device pixels, scrollbars included), else the CSS size asked for.
        let size = Data(base64Encoded: data).flatMap { Self.imageSize(Array($0)) } ?? (Self.pixels(width), Self.pixels(height))
        return .object(["data": .string(data), "format": .string(format), "width": .int(size.0), "height": .int(size.1)])
    }

    static let interactiveRoles: Set<String> = ["button", "link", "textbox", "searchbox", "checkbox", "radio", "combobox", "listbox",
                                                "menuitem", "menuitemcheckbox", "menuitemradio", "tab", "switch", "slider", "spinbutton",
                                                "option", "treeitem"]

    private func extract(selector: String?, deadline: Date) async throws -> JSON {
        let rootId: String
        if let selector {
            rootId = try await element(["selector": .string(selector)], deadline: deadline)
        } else {
            let r = try await page("Runtime.evaluate", ["expression": .string("document.body || document.documentElement")])
            guard let id = r["result"]?["objectId"]?.stringValue else { throw CommandFailure(code: "command_failed", message: "the page has no body") }
            rootId = id
        }
        let text = Self.cut(try await call("function () { return this.innerText || \"\"; }", on: rootId).stringValue ?? "", bytes: 50 * 1024)
        let markdown = Self.cut(try await call(PageScripts.markdown, on: rootId).stringValue ?? "", bytes: 30 * 1024)
        // Interactive nodes of the accessibility tree, in document order, as uids e0, e1, …
        var nodes: [JSON]
        if selector != nil, let backend = try await page("DOM.describeNode", ["objectId": .string(rootId)])["node"]?["backendNodeId"]?.intValue {
            nodes = try await page("Accessibility.queryAXTree", ["backendNodeId": .int(backend)])["nodes"]?.arrayValue ?? []
        } else {
            nodes = try await page("Accessibility.getFullAXTree")["nodes"]?.arrayValue ?? []
        }
        uids = [:]
        var elements: [JSON] = []
        var classified: [ObstacleClassifier.Element] = []
        for n in nodes where elements.count < 200 {
            guard n["ignored"]?.boolValue != true, let role = n["role"]?["value"]?.stringValue, Self.interactiveRoles.contains(role),
                  let backend = n["backendDOMNodeId"]?.intValue else { continue }
            let uid = "e\(elements.count)"
            uids[uid] = backend
            let name = n["name"]?["value"]?.stringValue ?? ""
            var o: JSONObject = ["uid": .string(uid), "role": .string(role)]
            if !name.isEmpty { o["name"] = .string(name) }
            if let v = n["value"]?["value"], let s = v.stringValue ?? v.doubleValue.map({ String($0) }) { o["value"] = .string(s) }
            let hidden = (n["properties"]?.arrayValue ?? []).contains { $0["name"]?.stringValue == "hidden" && $0["value"]?["value"]?.boolValue == true }
            o["visible"] = .bool(!hidden)
            elements.append(.object(o))
            classified.append(.init(role: role, name: name))
        }
        var frames: [String] = []
        if let tree = try? await page("Page.getFrameTree")["frameTree"] { Self.frameURLs(tree, into: &frames) }
        let input = ObstacleClassifier.Input(url: try await string("location.href"), title: try await string("document.title"),
                                             markdown: markdown, elements: classified, frameURLs: frames)
        var out: JSONObject = ["text": .string(text), "markdown": .string(markdown), "elements": .array(elements)]
        if let obstacle = ObstacleClassifier.classify(input) { out["obstacle"] = obstacle.json }
        return .object(out)
    }

    /// A CSS size as whole pixels: 0 unless finite and within 0 … 2^30 (the page reported it).
    static func pixels(_ d: Double) -> Int {
        d.isFinite && d >= 0 && d <= 1_073_741_824 ? Int(d.rounded()) : 0
    }

    /// Milliseconds left until `deadline`, within 0 … 1 day (commands never wait longer).
    static func millisLeft(until deadline: Date) -> Int {
        Int(min(max(deadline.timeIntervalSinceNow * 1000, 0), 86_400_000))
    }

    /// Width and height of a PNG (IHDR) or a JPEG (the first SOF marker).
    static func imageSize(_ b: [UInt8]) -> (Int, Int)? {
        func be16(_ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }
        if b.count > 24, b.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return (be16(16) << 16 | be16(18), be16(20) << 16 | be16(22)) }
        guard b.count > 4, b[0] == 0xFF, b[1] == 0xD8 else { return nil }
        var i = 2
        while i + 9 < b.count {
            guard b[i] == 0xFF else { return nil }
            let marker = b[i + 1]
            if (0xC0...0xCF).contains(marker) && marker != 0xC4 && marker != 0xC8 && marker != 0xCC { return (be16(i + 7), be16(i + 5)) }
            i += 2 + be16(i + 2)
        }
        return nil
    }

    static func frameURLs(_ tree: JSON, into out: inout [String]) {
        if let url = tree["frame"]?["url"]?.stringValue { out.append(url) }
        for child in tree["childFrames"]?.arrayValue ?? [] { frameURLs(child, into: &out) }
    }

    /// `s` cut to at most `bytes` of UTF-8, on a character boundary.
    static func cut(_ s: String, bytes: Int) -> String {
        guard s.utf8.count > bytes else { return s }
        var out = ""
        var used = 0
        for ch in s {
            let n = ch.utf8.count
            if used + n > bytes { break }
            out.append(ch)
            used += n
        }
        return out
    }

    // MARK: Selector conditions

    private func watch(_ conditions: [YieldCondition], yieldId: String) async {
        while !Task.isCancelled {
            for c in conditions {
                guard let selector = c.selector else { continue }
                let state = (try? await elementState(["selector": .string(selector)])) ?? "detached"
                let want = c.state ?? "visible"
                if state == want || (want == "attached" && state != "detached") || (want == "hidden" && state != "visible") {
                    record("condition.matched", ["yieldId": .string(yieldId), "index": .int(c.index ?? 0)])
                    return
                }
            }
            try? await Task.sleep(nanoseconds: 200_000_000)
        }
    }

    // MARK: Events

    private func record(_ type: String, _ payload: JSONObject) {
        if let eventTypes, !eventTypes.contains(type), type != "condition.matched" { return }
        telemetry?.record(type, payload: payload)
    }

    private func handle(_ e: CDPConnection.Event) async {
        for (id, w) in waiters where w.seen == nil && w.matches(e) {
            if let c = w.continuation { waiters[id] = nil; c.resume(returning: e) } else { waiters[id]?.seen = e }
        }
        let p = e.params
        switch e.method {
        case "Page.frameNavigated":
            guard p["frame"]?["parentId"] == nil, let url = p["frame"]?["url"]?.stringValue else { return }
            mainFrame = p["frame"]?["id"]?.stringValue ?? mainFrame
            currentURL = url
            uids = [:]
            // Requests of the previous document are over for idleness, answered or not.
            if let loader = p["frame"]?["loaderId"]?.stringValue { inflight = inflight.filter { $0.value.loader == loader } }
            record("navigation", ["url": .string(url), "isMainFrame": .bool(true), "how": .string("load")])
        case "Page.navigatedWithinDocument":
            guard p["frameId"]?.stringValue == mainFrame, let url = p["url"]?.stringValue else { return }
            currentURL = url
            record("navigation", ["url": .string(url), "isMainFrame": .bool(true), "how": .string("history")])
        case "Page.javascriptDialogOpening":
            // Dialogs are dismissed so that nothing (an evaluate above all) can wait on one forever.
            record("console", ["level": .string("info"), "text": .string("dismissed a \(p["type"]?.stringValue ?? "") dialog: \(p["message"]?.stringValue ?? "")")])
            Task { _ = try? await self.page("Page.handleJavaScriptDialog", ["accept": .bool(false)]) }
        case "Network.requestWillBeSent":
            guard let id = p["requestId"]?.stringValue, let url = p["request"]?["url"]?.stringValue else { return }
            let method = p["request"]?["method"]?.stringValue ?? "GET"
            if p["redirectResponse"] == nil {
                inflight[id] = (url, method, p["type"]?.stringValue ?? "", Date().timeIntervalSince1970, p["loaderId"]?.stringValue ?? "")
            }
            lastNetworkActivity = Date()
            if !url.hasPrefix("data:") { record("net.request", ["requestId": .string(id), "url": .string(url), "method": .string(method)]) }
        case "Network.responseReceived":
            guard let id = p["requestId"]?.stringValue, let r = p["response"]?.objectValue else { return }
            let status = r["status"]?.intValue ?? 0
            responses[id] = (status, r["url"]?.stringValue ?? "", r["mimeType"]?.stringValue ?? "")
            if p["type"]?.stringValue == "Document", let loader = p["loaderId"]?.stringValue { documentStatus[loader] = status }
            lastNetworkActivity = Date()
        case "Network.loadingFinished", "Network.loadingFailed":
            guard let id = p["requestId"]?.stringValue else { return }
            let request = inflight.removeValue(forKey: id)
            let response = responses.removeValue(forKey: id)
            lastNetworkActivity = Date()
            guard let request, let response, !request.url.hasPrefix("data:") else { return }
            var payload: JSONObject = ["requestId": .string(id), "url": .string(response.url.isEmpty ? request.url : response.url),
                                       "method": .string(request.method), "status": .int(response.status),
                                       "durationMs": .int(Int((Date().timeIntervalSince1970 - request.started) * 1000))]
            // Bodies of documents and API calls (text, at most 64 KB) for networkRequest yields.
            let textual = response.mimeType.hasPrefix("text/") || response.mimeType.contains("json") || response.mimeType.contains("xml")
            if e.method == "Network.loadingFinished", ["XHR", "Fetch", "Document"].contains(request.type), textual,
               (p["encodedDataLength"]?.intValue ?? 0) <= 1 << 20,
               let body = try? await page("Network.getResponseBody", ["requestId": .string(id)], timeoutMs: 5_000),
               body["base64Encoded"]?.boolValue != true, let text = body["body"]?.stringValue {
                payload["body"] = .string(Self.cut(text, bytes: 64 * 1024))
            }
            record("net.response", payload)
        case "Runtime.consoleAPICalled":
            let text = (p["args"]?.arrayValue ?? []).map { a in a["value"].map { $0.stringValue ?? JSONWriter.string($0) } ?? a["description"]?.stringValue ?? "" }
            record("console", ["level": .string(p["type"]?.stringValue ?? "log"), "text": .string(Self.cut(text.joined(separator: " "), bytes: 4096))])
        case "Runtime.bindingCalled":
            guard p["name"]?.stringValue == "__switchboardEmit", let text = p["payload"]?.stringValue,
                  let event = (try? JSONParser.parse(Array(text.utf8)))?.objectValue, let type = event["type"]?.stringValue else { return }
            if let eventTypes, !eventTypes.contains(type) { return }
            telemetry?.record(TelemetryEvent(type: type, ts: event["ts"]?.intValue.map(Int64.init) ?? Int64(Date().timeIntervalSince1970 * 1000),
                                             source: "client", payload: event["payload"]?.objectValue ?? [:]))
        default:
            break
        }
    }

    // MARK: Waiting for events

    /// Starts watching for an event (before the action that causes it).
    private func expect(_ matches: @escaping @Sendable (CDPConnection.Event) -> Bool) -> Int {
        nextWaiter += 1
        waiters[nextWaiter] = Waiter(matches: matches, continuation: nil, seen: nil)
        return nextWaiter
    }

    private func cancel(_ id: Int) { waiters[id] = nil }

    /// The event `expect` watched for, or a `timeout` failure at `deadline`.
    private func wait(_ id: Int, until deadline: Date, what: String) async throws -> CDPConnection.Event {
        if let seen = waiters[id]?.seen { waiters[id] = nil; return seen }
        return try await withCheckedThrowingContinuation { c in
            waiters[id]?.continuation = c
            Task {
                try? await Task.sleep(nanoseconds: WireNumbers.sleepNanoseconds(millis: Self.millisLeft(until: deadline)))
                self.timeOut(id, what)
            }
        }
    }

    private func timeOut(_ id: Int, _ what: String) {
        guard let c = waiters[id]?.continuation else { return }
        waiters[id] = nil
        c.resume(throwing: CommandFailure.timeout("timed out waiting for \(what)"))
    }

    /// A PNG screenshot of what the user sees now (for `--headed` proof and logs).
    public func capturePNG() async throws -> [UInt8] {
        let r = try await page("Page.captureScreenshot", ["format": .string("png")])
        return r["data"]?.stringValue.flatMap { Data(base64Encoded: $0) }.map(Array.init) ?? []
    }
}
