import Foundation
import Testing
import Switchboard
import SwitchboardProtocol
import WebSocketClient

/// The whole system end to end: a worker written with the SDK, `switchboard serve`, and the
/// reference client `switchboard-browser` driving real Chromium against a local test site.
@Suite(.serialized) struct BrowserEndToEndTests {
    struct Rig {
        let site: TestProcess
        let siteURL: String
        let server: ServerProcess
        let session: CreateSessionResponse
        var browser: TestProcess
        let worker: WorkerConnection
        let state: String
    }

    static func startBrowser(_ session: CreateSessionResponse, state: String, extra: [String] = [], wrapper: [String] = []) throws -> TestProcess {
        try TestProcess(wrapper + [TestProcess.product("switchboard-browser"), "--url", session.websocketUrl, "--token", session.clientToken,
                                   "--state", state] + extra, ready: "browser ready")
    }

    func rig(workerEvents: [String] = [], browserExtra: [String] = [], wrapper: [String] = []) async throws -> Rig {
        let site = try TestProcess(["python3", TestProcess.repository.appendingPathComponent("Tests/Site/testsite.py").path, "--port", "0"],
                                   ready: "listening on")
        let siteURL = "http://127.0.0.1:" + (site.match(#"listening on http://127\.0\.0\.1:(\d+)"#) ?? "0")
        let server = try ServerProcess()
        let session = try await server.api.createSession(config: SessionConfig(commandTimeoutMs: 20_000))
        let state = ServerProcess.temporaryDirectory() + "/client-state.json"
        let browser = try Self.startBrowser(session, state: state, extra: browserExtra, wrapper: wrapper)
        let worker = try await WorkerConnection.connect(websocketURL: session.websocketUrl, token: session.workerToken,
                                                        options: WorkerOptions(connection: SDKIntegrationTests.fastReconnect(), events: workerEvents))
        return Rig(site: site, siteURL: siteURL, server: server, session: session, browser: browser, worker: worker, state: state)
    }

    func stop(_ r: Rig) {
        r.browser.stop()
        r.server.stop()
        r.site.stop()
    }

    func siteCount(_ r: Rig) async throws -> Int {
        let data = try await URLSessionless.get(r.siteURL + "/api/count")
        return (try? JSONParser.parse(data))?["count"]?.intValue ?? -1
    }

    @Test func everyCommandAgainstARealPage() async throws {
        let r = try await rig()
        defer { stop(r) }
        let w = r.worker
        let nav = try await w.navigate(r.siteURL + "/login", waitUntil: .load)
        #expect(nav.url == r.siteURL + "/login" && nav.status == 200)
        #expect(try await w.title() == "Sign in - Example")
        // fill is seen by the page's own input listener.
        try await w.fill(.selector("#email"), "user@example.test")
        #expect(try await w.textContent(.selector("#echo")) == "typed:user@example.test")
        try await w.type(.selector("#password"), "s3cret!", delayMs: 5)
        let typed = try await w.evaluate("return document.getElementById('password').value")
        #expect(typed.value == .string("s3cret!"))
        try await w.click(.selector("#signin"))
        #expect(try await w.waitForNavigation(urlPattern: "/dashboard$", timeoutMs: 10_000).url == r.siteURL + "/dashboard")
        #expect(try await w.url() == r.siteURL + "/dashboard")
        // The page inserts an element 400 ms after loading (the layout moves): wait for it.
        try await w.waitForSelector(.selector("#delayed"), state: .visible, timeoutMs: 5_000)
        #expect(try await w.content().contains("<h1>Dashboard</h1>"))
        #expect(try await w.getAttribute(.selector("#applink"), "href") == "/app")
        #expect(try await w.getAttribute(.selector("#applink"), "data-none") == nil)
        #expect(try await w.innerHTML(.selector("p")).contains("<strong>account</strong>"))
        #expect(try await w.isVisible(.selector("#count")))
        #expect(try await !w.isVisible(.selector("#nothing-here")))
        #expect(try await w.select(.selector("#color"), values: ["green"]) == ["green"])
        #expect(try await w.select(.selector("#many"), values: ["a", "c"]) == ["a", "c"])
        try await w.hover(.selector("#hoverme"))
        #expect(try await w.textContent(.selector("#hoverme")) == "hovered")
        try await w.fill(.selector("#notes"), "line")
        try await w.fill(.selector("#editor"), "new text")
        #expect(try await w.textContent(.selector("#editor")) == "new text")
        try await w.press("x", on: .selector("#notes"))
        #expect(try await w.title() == "Dashboard:x")
        try await w.click(.selector("#inc"))
        try await w.click(.selector("#inc"))
        try await w.waitForSelector(.selector("#count"), timeoutMs: 1000)
        #expect(try await siteCount(r) == 2)
        try await w.scroll("down", amount: 800)
        #expect((try await w.evaluate("return window.scrollY").value?.doubleValue ?? 0) > 0)
        try await w.scroll(to: .selector("#bottom"))
        #expect(try await w.evaluate("const r = document.getElementById('bottom').getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight").value == .bool(true))
        // A disabled button is not clicked: the command times out waiting for it.
        do { try await w.click(.selector("#off"), timeoutMs: 1_500); Issue.record("clicked a disabled button") } catch let e as SwitchboardError {
            #expect(e.code == "timeout")
        }
        do { try await w.click(.selector("#missing"), timeoutMs: 1_500); Issue.record("clicked nothing") } catch let e as SwitchboardError {
            #expect(e.code == "element_not_found")
        }
        // evaluate: values, promises, descriptions, truncation, exceptions.
        #expect(try await w.evaluate("return {a: [1, 'two', null]}").value == .object(["a": .array([.int(1), .string("two"), .null])]))
        #expect(try await w.evaluate("return await new Promise(r => setTimeout(() => r(7), 50))").value == .int(7))
        let fn = try await w.evaluate("return () => 1")
        #expect(fn.type == "function" && fn.description != nil)
        #expect(try await w.evaluate("return document.body").type == "node")
        let big = try await w.evaluate("return 'x'.repeat(20000)")
        #expect(big.truncated == true && (big.preview?.count ?? 0) <= 8192)
        #expect(try await w.evaluate("return undefined").type == "undefined")
        do { _ = try await w.evaluate("throw new Error('boom')"); Issue.record("no error") } catch let e as SwitchboardError {
            #expect(e.code == "evaluation_failed")
        }
        // Screenshots decode to images of the page's size.
        let shot = try await w.screenshot()
        let png = shot.bytes
        #expect(png.prefix(8) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(Self.pngSize(png).map { $0.0 == shot.width && $0.1 == shot.height } == true)
        let full = try await w.screenshot(format: "jpeg", quality: 70, fullPage: true)
        #expect(full.bytes.prefix(2) == [0xFF, 0xD8] && (full.height ?? 0) > 3000)
        // extract: text, markdown without the footer, elements with uids that commands take.
        let page = try await w.extract()
        #expect(page.text.contains("Welcome back") && page.markdown.contains("# Dashboard") && !page.markdown.contains("Footer text"))
        #expect(page.markdown.contains("| Plan | Price |"))
        #expect(page.obstacle == nil)
        let add = try #require(page.elements.first { $0.name == "Add one" })
        try await w.click(.uid(add.uid))
        try await w.waitForTimeout(300)
        #expect(try await siteCount(r) == 3)
        // Navigation history and the single-page app.
        let app = try #require(page.elements.first { $0.name == "Open the app" })
        try await w.click(.uid(app.uid))
        #expect(try await w.waitForNavigation(urlPattern: "/app$").url == r.siteURL + "/app")
        // The uids of the previous page are stale now.
        do { try await w.click(.uid(add.uid)); Issue.record("a stale uid was clicked") } catch let e as SwitchboardError {
            #expect(e.code == "element_stale")
        }
        try await w.click(.selector("#to-settings"))
        #expect(try await w.waitForNavigation(urlPattern: "/app/settings$").url.hasSuffix("/app/settings"))
        try await w.waitForNetworkIdle(idleMs: 200, timeoutMs: 5_000)
        #expect(try await w.goBack().url == r.siteURL + "/app")
        #expect(try await w.goForward().url == r.siteURL + "/app/settings")
        #expect(try await w.reload().url == r.siteURL + "/app/settings")
        #expect(try await w.textContent(.selector("#where")) == "settings")
        // A dialog opened by the page is dismissed; evaluate cannot hang on one.
        _ = try await w.navigate(r.siteURL + "/dialogs")
        try await w.click(.selector("#alert"))
        try await w.waitForSelector(.selector("#after"), timeoutMs: 5_000)
        #expect(try await w.textContent(.selector("#after")) == "dismissed")
        #expect(try await w.evaluate("alert('x'); confirm('y'); return 5").value == .int(5))
        // A slow page, waited for; navigation to nowhere fails as navigation_failed.
        #expect(try await w.navigate(r.siteURL + "/slow", waitUntil: .domcontentloaded).status == 200)
        do { _ = try await w.navigate("http://127.0.0.1:9/"); Issue.record("navigated to a closed port") } catch let e as SwitchboardError {
            #expect(e.code == "navigation_failed")
        }
        // A click waits until nothing covers its target (an overlay that goes away), and a
        // target that stays covered is never clicked through.
        _ = try await w.navigate(r.siteURL + "/overlay")
        let before = try await siteCount(r)
        try await w.click(.selector("#under"))
        try await w.waitForTimeout(300)
        #expect(try await siteCount(r) == before + 1)
        do { try await w.click(.selector("#buried"), timeoutMs: 1_500); Issue.record("clicked through a cover") } catch let e as SwitchboardError {
            guard case .command("timeout", let message) = e else { Issue.record("\(e)"); return }
            #expect(message?.contains("covered by div") == true)
        }
        try await w.press("Tab")
        try await w.updateStatus(heading: "Done", progress: 1)
        #expect(try await w.evaluate("return navigator.webdriver").value == .bool(false))
        try await w.complete()
    }

    @Test func obstaclesOfRealPages() async throws {
        let r = try await rig()
        defer { stop(r) }
        let w = r.worker
        for (path, type, confidence) in [("/login", "auth_wall", "high"), ("/captcha", "captcha", "high"), ("/forbidden", "access_denied", "high")] {
            _ = try await w.navigate(r.siteURL + path)
            let page = try await w.extract()
            #expect(page.obstacle?.type == type && page.obstacle?.confidence == confidence, "\(path): \(String(describing: page.obstacle))")
        }
        _ = try await w.navigate(r.siteURL + "/")
        #expect(try await w.extract().obstacle == nil)
        try await w.complete()
    }

    @Test func yieldsResolveOnRealActivity() async throws {
        let r = try await rig(workerEvents: ["navigation"])
        defer { stop(r) }
        let w = r.worker
        // A real navigation (the page moves on by itself, as a user signing in would).
        _ = try await w.navigate(r.siteURL + "/redirect-soon")
        let nav = try await w.yieldToUser([.url("/dashboard$")], message: "Please sign in", timeoutMs: 15_000)
        #expect(nav.matched && nav.event?.payload?["url"]?.stringValue == r.siteURL + "/dashboard")
        // A real network response with the body the worker wants.
        _ = try await w.navigate(r.siteURL + "/poll")
        let net = try await w.yieldToUser([.networkResponse(urlContains: "/api/status", bodyContains: "\"ready\": true", captureBody: true)],
                                          timeoutMs: 15_000)
        #expect(net.matched && (net.body ?? "").contains("\"ready\": true"))
        // A selector condition watched in the page by the client.
        _ = try await w.navigate(r.siteURL + "/later")
        let sel = try await w.yieldToUser([.url("/never$"), .selector("#welcome")], timeoutMs: 15_000)
        #expect(sel.matched && sel.conditionIndex == 1)
        // The telemetry is stored and readable over REST.
        let events = try await r.server.api.events(of: r.session.sessionId, after: 0, limit: 1000, types: ["navigation", "net.response"])
        #expect(events.events.contains { $0.type == "navigation" && $0.payload?["url"]?.stringValue == r.siteURL + "/dashboard" })
        #expect(events.events.contains { $0.type == "net.response" && ($0.payload?["url"]?.stringValue ?? "").hasSuffix("/api/status") })
        try await w.complete()
    }

    @Test func aKilledClientResumesWithoutRunningACommandTwice() async throws {
        var r = try await rig()
        defer { stop(r) }
        let w = r.worker
        _ = try await w.navigate(r.siteURL + "/dashboard")
        try await w.click(.selector("#inc"))
        try await w.waitForTimeout(200)
        #expect(try await siteCount(r) == 1)
        // A command that counts, then takes its time: the client dies in the middle.
        let slow = Task { try await w.evaluate("await fetch('/api/count', {method: 'POST'}); await new Promise(r => setTimeout(r, 5000)); return 1") }
        let deadline = Date().addingTimeInterval(10)
        while try await siteCount(r) < 2 && Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
        r.browser.kill()
        r.browser = try Self.startBrowser(r.session, state: r.state)
        // The restarted client answers the re-delivered command without running it again.
        do { _ = try await slow.value; Issue.record("the interrupted command reported success") } catch let e as SwitchboardError {
            #expect(e.code == "command_failed")
        }
        #expect(try await siteCount(r) == 2)
        // And the flow goes on in the new browser.
        _ = try await w.navigate(r.siteURL + "/dashboard")
        try await w.click(.selector("#inc"))
        try await w.waitForTimeout(200)
        #expect(try await siteCount(r) == 3)
        try await w.complete()
    }

    @Test func aHeadedBrowserShowsTheUserThePageMidYield() async throws {
        let shots = ServerProcess.temporaryDirectory()
        let r = try await rig(browserExtra: ["--headed", "--screenshots", shots], wrapper: ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24"])
        defer { stop(r) }
        let w = r.worker
        _ = try await w.navigate(r.siteURL + "/redirect-soon")
        let outcome = try await w.yieldToUser([.url("/dashboard$")], message: "Please look", timeoutMs: 20_000)
        #expect(outcome.matched)
        let files = try FileManager.default.contentsOfDirectory(atPath: shots).filter { $0.hasSuffix(".png") }
        let png = try #require(files.first.flatMap { FileManager.default.contents(atPath: shots + "/" + $0) }).map { $0 }
        #expect(png.prefix(4) == [0x89, 0x50, 0x4E, 0x47])
        let size = try #require(Self.pngSize(png))
        #expect(size.0 > 400 && size.1 > 300)
        #expect(r.browser.output.contains("browser ready (headed)"))
        try await w.complete()
    }

    /// Width and height from a PNG's IHDR chunk.
    static func pngSize(_ b: [UInt8]) -> (Int, Int)? {
        guard b.count > 24 else { return nil }
        func be(_ i: Int) -> Int { Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3]) }
        return (be(16), be(20))
    }
}

/// Plain GETs to the test site through the SDK's transport.
enum URLSessionless {
    static func get(_ url: String) async throws -> [UInt8] {
        try await HTTPClient.request("GET", url).body
    }
}
