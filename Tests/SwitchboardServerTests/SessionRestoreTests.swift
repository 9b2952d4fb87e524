import Testing
@testable import SocketServer
@testable import SwitchboardProtocol
@testable import SwitchboardServer
import WebSocketCore

/// A session driven without sockets (fake connections, a fake store, a loop driven by hand),
/// killed and restored from what its store committed.
@Suite struct SessionRestoreTests {
    final class World {
        let loop: EventLoop
        let store: FakeStore
        let log: TrafficLog
        var relay: Relay
        var sessionId = ""
        let ledgers: [Role: Ledger] = [.worker: Ledger(), .client: Ledger()]

        static var settings: RelaySettings {
            var s = RelaySettings()
            s.apiKeys = ["k"]
            return s
        }

        init() throws {
            loop = try EventLoop(selector: NullSelector(), readBufferSize: 4096)
            loop.adoptCurrentThread()
            store = FakeStore(loop: loop)
            log = try TrafficLog(options: .init(path: "/dev/null"))
            relay = Relay(loop: loop, settings: World.settings, log: log, store: store)
            try relay.restore()
            var answer: HTTPResponse?
            relay.route(HTTPRequest(method: "POST", target: "/v1/sessions", version: "HTTP/1.1",
                                    headers: HTTPHeaders([("Authorization", "Bearer k"), ("Host", "x")]),
                                    body: Array(#"{"config":{"disconnectGracePeriodMs":600000}}"#.utf8))) { answer = $0 }
            commit()
            sessionId = try #require(answer.flatMap { try? JSONParser.parse($0.body) }?["sessionId"]?.stringValue)
        }

        var session: Session { relay.session(sessionId)! }

        func commit() { store.commit(); loop.runPending() }

        /// A peer that connects and says hello.
        func connect(_ role: Role, lastSeq: Int? = nil, commit: Bool = true) -> (Peer, FakeConnection) {
            let c = FakeConnection(role: role, ledger: ledgers[role])
            let peer = session.assumeIsolated { $0.attach(c, role: role) }
            var hello: JSONObject = ["type": .string("\(role.rawValue).hello"), "protocolVersion": .int(1)]
            if let lastSeq { hello["lastSeq"] = .int(lastSeq) }
            send(peer, .object(hello), commit: commit)
            return (peer, c)
        }

        func send(_ peer: Peer, _ message: JSON, commit: Bool = true) {
            session.assumeIsolated { $0.receive(ReceivedMessage(payload: JSONWriter.serialize(message)), from: peer) }
            if commit { self.commit() }
        }

        /// The process dies: what was not committed is lost, timers and sockets with it.
        func crashAndRestore() throws {
            store.crash()
            loop.cancelAllTimers()
            loop.runPending()
            relay = Relay(loop: loop, settings: World.settings, log: log, store: store)
            try relay.restore()
        }
    }

    @Test func aDeadlineThatPassedWhileTheServerWasDownFiresOnceWithFreshSeqs() throws {
        let world = try World()
        let (worker, w) = world.connect(.worker)
        let (_, c) = world.connect(.client)
        world.send(worker, .object(["type": .string("worker.command"), "id": .string("slow"), "command": .string("title"), "timeoutMs": .int(1000)]))
        let command = try #require(c.received.last { $0["type"]?.stringValue == "server.command" })
        let workerSeq = w.lastSeq
        let journalBefore = world.store.journalBy[world.sessionId]?.map(\.entry.n) ?? []

        try world.crashAndRestore()
        // Restored, nobody connected yet: the command's deadline is the first timer due.
        #expect(world.loop.fireNextTimer())
        world.commit()
        #expect(world.session.assumeIsolated { $0.pending } == nil)

        // The worker comes back: the timeout result is in its replay, with a new seq.
        let (_, w2) = world.connect(.worker, lastSeq: workerSeq)
        let replay = try #require(w2.received.first { $0["type"]?.stringValue == "server.replay" })
        #expect(replay["complete"] == .bool(true))
        let results = replay["messages"]?.arrayValue?.filter { $0["type"]?.stringValue == "server.command_result" } ?? []
        #expect(results.count == 1)
        #expect(results.first?["error"]?["code"]?.stringValue == "timeout")
        #expect((results.first?["seq"]?.intValue ?? 0) > workerSeq)
        // The client learns of the cancellation with a seq it has never seen; the command is
        // not replayed to it (it is no longer pending).
        let (_, c2) = world.connect(.client, lastSeq: command["seq"]?.intValue)
        let clientReplay = try #require(c2.received.first { $0["type"]?.stringValue == "server.replay" })
        let kinds = clientReplay["messages"]?.arrayValue?.compactMap { $0["type"]?.stringValue } ?? []
        #expect(kinds.contains("server.cancel") && !kinds.contains("server.command"))
        // The journal kept every entry written before the crash and numbered on after them
        // (FakeStore refuses a number written twice).
        let journalAfter = world.store.journalBy[world.sessionId]?.map(\.entry.n) ?? []
        #expect(Array(journalAfter.prefix(journalBefore.count)) == journalBefore)
        #expect(journalAfter.count > journalBefore.count)
        #expect(journalAfter == journalAfter.sorted())
    }

    @Test func twoRestartsWithoutACommitNeverReuseASeq() throws {
        let world = try World()
        _ = world.connect(.worker)
        try world.crashAndRestore()
        // After the first restart an error reaches the worker; nothing is committed after it.
        let (w1, c1) = world.connect(.worker, commit: false)
        world.send(w1, .object(["type": .string("worker.cancel"), "id": .string("one")]), commit: false)
        let first = try #require(c1.received.last { $0["type"]?.stringValue == "server.error" }?["seq"]?.intValue)
        try world.crashAndRestore()
        let (w2, c2) = world.connect(.worker, commit: false)
        world.send(w2, .object(["type": .string("worker.cancel"), "id": .string("two")]), commit: false)
        let second = try #require(c2.received.last { $0["type"]?.stringValue == "server.error" }?["seq"]?.intValue)
        #expect(second > first)
    }

    @Test func aCommandIsNeverReplayedBeforeItIsCommitted() throws {
        let world = try World()
        let (worker, _) = world.connect(.worker)
        let (client, c) = world.connect(.client)
        // The command is accepted but its commit has not happened yet.
        world.send(worker, .object(["type": .string("worker.command"), "id": .string("x"), "command": .string("url")]), commit: false)
        #expect(!c.received.contains { $0["type"]?.stringValue == "server.command" })
        // The client reconnects meanwhile: its replay does not carry the uncommitted command.
        world.session.assumeIsolated { $0.connectionClosed(client, code: .goingAway) }
        let (_, c2) = world.connect(.client, lastSeq: 0, commit: false)
        #expect(!c2.received.contains { $0["type"]?.stringValue == "server.replay" && ($0["messages"]?.arrayValue ?? []).contains { $0["type"]?.stringValue == "server.command" } })
        // Once committed, the replay the client waited for carries it, once.
        world.commit()
        let replays = c2.received.filter { $0["type"]?.stringValue == "server.replay" }
        #expect(replays.count == 1)
        let commands = (replays.first?["messages"]?.arrayValue ?? []).filter { $0["type"]?.stringValue == "server.command" }
        #expect(commands.map { $0["id"]?.stringValue } == ["x"])
        #expect(!c2.received.contains { $0["type"]?.stringValue == "server.command" })
    }
}

@Suite struct MemoryRetention {
    /// With `store = "memory"`, ended sessions are purged after the retention period too, and
    /// live ones are kept.
    @Test func endedSessionsArePurgedWithoutAStore() throws {
        let loop = try EventLoop(selector: NullSelector(), readBufferSize: 4096)
        loop.adoptCurrentThread()
        defer { loop.cancelAllTimers() }
        var settings = RelaySettings()
        settings.apiKeys = ["k"]
        settings.retentionMs = 0
        let relay = Relay(loop: loop, settings: settings, log: try TrafficLog(options: .init(path: "/dev/null")), store: nil)
        func call(_ method: String, _ target: String) -> JSON? {
            var answer: HTTPResponse?
            relay.route(HTTPRequest(method: method, target: target, version: "HTTP/1.1",
                                    headers: HTTPHeaders([("Authorization", "Bearer k"), ("Host", "x")]), body: [])) { answer = $0 }
            return answer.flatMap { try? JSONParser.parse($0.body) }
        }
        let ended = try #require(call("POST", "/v1/sessions")?["sessionId"]?.stringValue)
        let live = try #require(call("POST", "/v1/sessions")?["sessionId"]?.stringValue)
        _ = call("DELETE", "/v1/sessions/\(ended)")
        relay.purge()
        #expect(relay.session(ended) == nil)
        #expect(relay.session(live) != nil)
    }
}
