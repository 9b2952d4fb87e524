import Foundation
import Testing
import Switchboard
import SwitchboardProtocol

/// Both roles of the SDK against a real `switchboard serve` on loopback.
@Suite(.serialized) struct SDKIntegrationTests {
    /// A session with a worker and a scripted client connected.
    struct Pair {
        let server: ServerProcess
        let session: CreateSessionResponse
        let worker: WorkerConnection
        let client: ClientConnection
        let browser: ScriptedBrowser
    }

    static func fastReconnect() -> ConnectionOptions {
        ConnectionOptions(backoff: Backoff(baseMs: 20, maxMs: 200))
    }

    func pair(_ server: ServerProcess, workerEvents: [String] = [], url: ((String) -> String)? = nil,
              transport: TransportOptions = TransportOptions()) async throws -> Pair {
        let session = try await server.api.createSession(metadata: ["test": .string("sdk")])
        let browser = ScriptedBrowser()
        var co = ClientOptions(connection: Self.fastReconnect())
        co.connection.transport = transport
        let wsURL = url?(session.websocketUrl) ?? session.websocketUrl
        let client = try await ClientConnection.connect(websocketURL: wsURL, token: session.clientToken, executor: browser, options: co)
        var wo = WorkerOptions(connection: Self.fastReconnect(), events: workerEvents)
        wo.connection.transport = transport
        let worker = try await WorkerConnection.connect(websocketURL: wsURL, token: session.workerToken, options: wo)
        return Pair(server: server, session: session, worker: worker, client: client, browser: browser)
    }

    @Test func everyCatalogCommandIsRelayedWithTypedResults() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let p = try await pair(server)
        let w = p.worker
        let nav = try await w.navigate("https://example.test/login", waitUntil: .domcontentloaded)
        #expect(nav == NavigationResult(url: "https://example.test/login", status: 200))
        #expect(try await w.reload().url == "https://example.test/")
        #expect(try await w.goBack().url == "https://example.test/")
        #expect(try await w.goForward().url == "https://example.test/")
        #expect(try await w.waitForNavigation(urlPattern: "/next$", timeoutMs: 1000).url == "https://example.test/next")
        try await w.click(.selector("#go"), button: "left", clickCount: 2)
        try await w.fill(.selector("#email"), "user@example.test")
        try await w.type(.uid("e3"), "hello", delayMs: 1)
        #expect(try await w.select(.selector("#c"), values: ["a", "b"]) == ["a", "b"])
        try await w.hover(.selector("#m"))
        try await w.press("Enter", on: .selector("#q"))
        try await w.scroll("down", amount: 300)
        try await w.scroll(to: .selector("#footer"))
        try await w.waitForSelector(.selector("#done"), state: .visible, timeoutMs: 500)
        #expect(try await w.getAttribute(.selector("#a"), "href") == "attr-href")
        #expect(try await w.getAttribute(.selector("#a"), "none") == nil)
        #expect(try await w.textContent(.selector("#t")) == "text of #t")
        #expect(try await w.innerHTML(.uid("e9")) == "text of e9")
        #expect(try await w.isVisible(.selector("#v")))
        #expect(try await w.evaluate("return 6 * 7") == EvaluationResult(type: "number", value: .int(42)))
        #expect(try await w.url() == "https://example.test/")
        #expect(try await w.title() == "Example")
        #expect(try await w.content() == "<html></html>")
        let shot = try await w.screenshot(format: "jpeg", quality: 80, fullPage: true)
        #expect(shot.format == "jpeg" && shot.width == 800 && shot.bytes.prefix(4) == [0x89, 0x50, 0x4E, 0x47])
        let page = try await w.extract()
        #expect(page.elements.first?.uid == "e1" && page.obstacle?.type == "auth_wall")
        try await w.waitForNetworkIdle(idleMs: 100, timeoutMs: 1000)
        try await w.waitForTimeout(1)
        try await w.updateStatus(heading: "Working", progress: 0.5)
        // The client saw canonical names, in order, each once.
        #expect(p.browser.executedNames == ["navigate", "reload", "goBack", "goForward", "waitForNavigation", "click", "fill", "type",
                                             "select", "hover", "press", "scroll", "scroll", "waitForSelector", "getAttribute",
                                             "getAttribute", "textContent", "innerHTML", "isVisible", "evaluate", "url", "title",
                                             "content", "screenshot", "extract", "waitForNetworkIdle", "waitForTimeout", "updateStatus"])
        // Errors carry the protocol's codes.
        await #expect(throws: SwitchboardError.self) { try await w.click(.selector("#missing")) }
        do { try await w.click(.selector("#missing")); Issue.record("no error") } catch let e as SwitchboardError {
            #expect(e.code == "element_not_found")
        }
        do { _ = try await w.navigate("ftp://example.test/"); Issue.record("no error") } catch let e as SwitchboardError {
            guard case .server(.invalidCommand, _, let details) = e else { Issue.record("\(e)"); return }
            #expect(details?["issues"]?.arrayValue?.first?["path"]?.stringValue == "params.url")
        }
        // The hello's injection scripts reached the executor.
        #expect(p.browser.configuration?.sessionId == p.session.sessionId)
        #expect((p.browser.configuration?.injectionScripts.count ?? 0) > 0)
        let end = try await w.complete(result: .object(["done": .bool(true)]))
        #expect(end.phase == .complete && end.result?["done"] == .bool(true))
        #expect(await p.client.waitForEnd()?.phase == .complete)
    }

    @Test func concurrentCallsWaitTheirTurn() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let p = try await pair(server)
        let w = p.worker
        let results = try await withThrowingTaskGroup(of: String.self) { group in
            for k in 0..<8 { group.addTask { try await w.textContent(.selector("#n\(k)")) } }
            var all: [String] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(Set(results) == Set((0..<8).map { "text of #n\($0)" }))
        try await w.complete()
    }

    @Test func yieldResolvesFromClientTelemetryAndEventsReachTheWorker() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let p = try await pair(server, workerEvents: ["navigation"])
        let browser = p.browser
        // The user "signs in" once the browser is handed over.
        let user = Task {
            guard let change = await first(browser.interactiveChanges, where: { $0.interactive }) else { return false }
            browser.telemetry?.record("navigation", payload: ["url": .string("https://example.test/dashboard"), "isMainFrame": .bool(true)])
            return change.message == "Please sign in"
        }
        let outcome = try await p.worker.yieldToUser([.url("/dashboard$"), .selector("#welcome")], message: "Please sign in", timeoutMs: 20_000)
        #expect(await user.value)
        #expect(outcome.matched && outcome.conditionIndex == 0)
        #expect(outcome.event?.payload?["url"]?.stringValue == "https://example.test/dashboard")
        // The client was made non-interactive again.
        #expect(await first(browser.interactiveChanges, where: { !$0.interactive }) != nil)
        // The worker subscribed to navigation events: the same event arrives live.
        let seen = await first(p.worker.events, where: { $0.payload?["url"]?.stringValue == "https://example.test/dashboard" })
        #expect(seen?.eventSeq != nil)
        // An optional yield that times out answers matched: false.
        let none = try await p.worker.yieldToUser([.url("/never")], optional: true, timeoutMs: 200)
        #expect(!none.matched)
        try await p.worker.complete()
    }

    @Test func telemetryIsStoredOnceAcrossCutConnections() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let proxy = CuttableProxy(to: server.port)
        defer { proxy.stop() }
        let p = try await pair(server, url: { $0.replacingOccurrences(of: ":\(server.port)/", with: ":\(proxy.port)/") })
        guard let sink = p.browser.telemetry else { Issue.record("no telemetry sink"); return }
        // 1 000 events in bursts, the connections cut three times meanwhile.
        for burst in 0..<4 {
            for k in 0..<250 { sink.record("console", payload: ["n": .int(burst * 250 + k)]) }
            await p.client.flush()
            proxy.cut()
        }
        // Everything ends up stored, each event once, in order.
        var stored: [Int] = []
        let deadline = Date().addingTimeInterval(30)
        while stored.count < 1000 && Date() < deadline {
            stored = []
            var after = 0
            while true {
                let page = try await server.api.events(of: p.session.sessionId, after: after, limit: 1000, types: ["console"])
                stored += page.events.compactMap { $0.payload?["n"]?.intValue }
                guard let next = page.next, !page.events.isEmpty else { break }
                after = next
            }
            if stored.count < 1000 { await p.client.flush(); try await Task.sleep(nanoseconds: 100_000_000) }
        }
        #expect(stored == Array(0..<1000))
        #expect(proxy.connectionCount >= 4)
        // The worker's commands work on the reconnected connections.
        #expect(try await p.worker.title() == "Example")
        try await p.worker.complete()
    }

    @Test func aWorkerCutOffMidCommandGetsItsResultOnce() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let proxy = CuttableProxy(to: server.port)
        defer { proxy.stop() }
        let session = try await server.api.createSession()
        let browser = ScriptedBrowser()
        let client = try await ClientConnection.connect(websocketURL: session.websocketUrl, token: session.clientToken, executor: browser,
                                                        options: ClientOptions(connection: Self.fastReconnect()))
        let viaProxy = session.websocketUrl.replacingOccurrences(of: ":\(server.port)/", with: ":\(proxy.port)/")
        let worker = try await WorkerConnection.connect(websocketURL: viaProxy, token: session.workerToken,
                                                        options: WorkerOptions(connection: Self.fastReconnect()))
        // The worker's connection is cut while the client runs the command (the result is
        // produced while the worker is away, or just after it is back), and again just as the
        // client answers (the result lands in the worker's replay).
        for round in 0..<6 {
            if round % 2 == 0 {
                browser.onExecute = nil
                let task = Task { try await worker.waitForTimeout(150) }
                guard await first(browser.started, where: { _ in true }) != nil else { Issue.record("not started"); return }
                proxy.cut()
                try await task.value
            } else {
                browser.onExecute = { _ in proxy.cut() }
                #expect(try await worker.title() == "Example")
            }
        }
        browser.onExecute = nil
        let names = browser.executedNames
        #expect(names.count == 6)
        #expect(proxy.connectionCount >= 7)
        try await worker.complete()
        #expect(await client.waitForEnd()?.phase == .complete)
    }

    @Test func aCommandSurvivesAServerCrashAndRunsOnce() async throws {
        let data = ServerProcess.temporaryDirectory()
        let crashing = try ServerProcess(dataDir: data)
        let p = try await pair(crashing)
        _ = try await p.worker.title()
        // The client executes the command, then the server dies before its answer arrives.
        p.browser.onExecute = { c in if c.name == "evaluate" { crashing.kill() } }
        let result = Task { try await p.worker.evaluate("return 42") }
        guard let started = await first(p.browser.started, where: { $0.name == "evaluate" }) else { Issue.record("not started"); return }
        crashing.process.waitUntilExit()
        p.browser.onExecute = nil
        let second = try ServerProcess(dataDir: data, port: crashing.port)
        defer { second.stop() }
        let value = try await result.value
        #expect(value == EvaluationResult(type: "number", value: .int(42)))
        // Re-delivered after the restart, answered from the response cache: it ran once.
        #expect(p.browser.runCount(started.id) == 1)
        // And the session goes on.
        #expect(try await p.worker.title() == "Example")
        let end = try await p.worker.complete()
        #expect(end.phase == .complete)
        #expect(await p.client.waitForEnd()?.phase == .complete)
    }

    @Test func cancellingTheTaskCancelsTheCommand() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let p = try await pair(server)
        let slow = Task { try await p.worker.waitForTimeout(30_000) }
        guard let started = await first(p.browser.started, where: { $0.name == "waitForTimeout" }) else { Issue.record("not started"); return }
        slow.cancel()
        await #expect(throws: CancellationError.self) { try await slow.value }
        // The client was told, and the slot is free again.
        #expect(try await p.worker.title() == "Example")
        #expect(p.browser.cancelled.contains(started.id))
        try await p.worker.complete()
    }

    @Test func terminalClosesStopReconnecting() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let p = try await pair(server)
        // A second worker with the same token replaces the first: 4001, and the first stops.
        let replacement = try await WorkerConnection.connect(websocketURL: p.session.websocketUrl, token: p.session.workerToken)
        let closed = await first(p.worker.states, where: { if case .closed = $0 { return true }; return false })
        #expect(closed == .closed(code: 4001, reason: closed.map { if case .closed(_, let r) = $0 { return r }; return "" } ?? ""))
        await #expect(throws: SwitchboardError.self) { _ = try await p.worker.title() }
        #expect(try await replacement.title() == "Example")
        // The session ends: session_end, close 1000, no reconnection, work refused.
        let end = try await replacement.fail(error: .string("gave up"))
        #expect(end.phase == .failed && end.reason == .workerFailed)
        #expect(await first(replacement.states, where: { $0 == .closed(code: 1000, reason: "session ended") }) != nil)
        do { _ = try await replacement.title(); Issue.record("no error") } catch let e as SwitchboardError {
            guard case .sessionEnded(.failed, .workerFailed) = e else { Issue.record("\(e)"); return }
        }
        #expect(await p.client.waitForEnd()?.phase == .failed)
        // A wrong token is refused at once with the API's error.
        do {
            _ = try await WorkerConnection.connect(websocketURL: p.session.websocketUrl, token: "wt_wrong")
            Issue.record("connected with a wrong token")
        } catch let e as SwitchboardError {
            guard case .http(401, "unauthorized", _, _) = e else { Issue.record("\(e)"); return }
        }
    }

    @Test func restCallsAndTypedErrors() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let api = server.api
        var created: [String] = []
        for k in 0..<3 {
            created.append(try await api.createSession(metadata: ["k": .int(k)], config: SessionConfig(commandTimeoutMs: 5000)).sessionId)
        }
        let one = try await api.session(created[0])
        #expect(one.phase == .created && one.metadata?["k"] == .int(0))
        let page = try await api.sessions(limit: 2)
        #expect(page.sessions.map(\.sessionId) == [created[2], created[1]] && page.next != nil)
        var all: [String] = []
        for try await s in api.allSessions(pageSize: 2) { all.append(s.sessionId) }
        #expect(all == created.reversed())
        let cancelled = try await api.cancelSession(created[1])
        #expect(cancelled.phase == .failed && cancelled.reason == .cancelled)
        #expect(try await api.sessions(phase: .failed).sessions.map(\.sessionId) == [created[1]])
        let journal = try await api.journal(of: created[1])
        #expect(journal.entries.contains { $0.message["phase"]?.stringValue == "failed" })
        do { _ = try await api.createSession(config: SessionConfig(commandTimeoutMs: -1)); Issue.record("accepted") } catch let e as SwitchboardError {
            guard case .http(400, "validation_error", _, let issues) = e else { Issue.record("\(e)"); return }
            #expect(issues.first?.path == "config.commandTimeoutMs")
        }
        do { _ = try await api.session("sess_nope"); Issue.record("found") } catch let e as SwitchboardError {
            guard case .http(404, "not_found", _, _) = e else { Issue.record("\(e)"); return }
        }
        let stranger = SwitchboardAPI(baseURL: server.baseURL, apiKey: "wrong")
        do { _ = try await stranger.sessions(); Issue.record("listed") } catch let e as SwitchboardError {
            guard case .http(401, _, _, _) = e else { Issue.record("\(e)"); return }
        }
    }

    @Test func tlsIsVerified() async throws {
        let dir = ServerProcess.temporaryDirectory()
        let cert = try makeCertificate(in: dir)
        let server = try ServerProcess(tls: cert, host: "localhost")
        defer { server.stop() }
        // Trusting the test certificate: everything works over https:// and wss://.
        var trusted = TransportOptions()
        trusted.trustedCertificatesFile = cert.cert
        let p = try await pair(server, transport: trusted)
        #expect(p.session.websocketUrl.hasPrefix("wss://"))
        #expect(try await p.worker.navigate("https://example.test/").url == "https://example.test/")
        try await p.worker.complete()
        // The system trust store alone refuses the self-signed certificate.
        let untrusted = SwitchboardAPI(baseURL: server.baseURL, apiKey: ServerProcess.apiKey)
        do { _ = try await untrusted.sessions(); Issue.record("an untrusted certificate was accepted") } catch let e as SwitchboardError {
            guard case .transport(let why) = e else { Issue.record("\(e)"); return }
            #expect(why.contains("certificate"))
        }
        // The right certificate under the wrong name is refused too.
        let wrongName = SwitchboardAPI(baseURL: "https://127.0.0.1:\(server.port)", apiKey: ServerProcess.apiKey, options: trusted)
        do { _ = try await wrongName.sessions(); Issue.record("a certificate for another name was accepted") } catch let e as SwitchboardError {
            guard case .transport = e else { Issue.record("\(e)"); return }
        }
    }
}
