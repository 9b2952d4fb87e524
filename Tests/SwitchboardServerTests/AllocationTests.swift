import CAllocationCounter
import Dispatch
import Glibc
import Testing
@testable import SocketServer
@testable import SwitchboardProtocol
@testable import SwitchboardServer
import WebSocketCore

/// Heap allocations on the relay's hot path, counted on the loop's thread (in the style of
/// swift-nio's allocation tests): a change that adds allocations to relaying a command fails
/// here. Sockets are left out (fake connections); decoding, validation, the session, the
/// outbound stream, the journal and the traffic log are in.
@Suite struct AllocationTests {
    /// A connection that keeps what it was sent without looking at it.
    final class QuietConnection: PeerConnection, @unchecked Sendable {
        let remoteAddress = "127.0.0.1:9"
        var sent = 0
        var last: OutboundMessage?
        func send(_ message: OutboundMessage, opcode: Opcode) { sent += 1; last = message }
        func sendSealed(_ message: OutboundMessage) { sent += 1; last = message }
        func close(_ code: CloseCode, reason: String) {}
        func limitMessages(to bytes: Int) {}
    }

    /// Allocations per relayed command on the loop's thread (worker.command in, server.command
    /// out, the response in, server.command_result out, each logged and journaled): 72 without
    /// a store when the budget was set. With the SQLite store the loop also builds each
    /// message's journal row and the state snapshots, queues them for the writer, holds
    /// `server.command` until its commit and releases it (the writer thread's own allocations
    /// are not counted): 97 when its budget was set.
    static let budget = 80
    static let storeBudget = 105

    @Test(.enabled(if: sb_allocations_counted() != 0, "a sanitizer build does not replace malloc"))
    func aRelayedCommandStaysWithinItsAllocationBudget() throws {
        let perCommand = try relay(store: false)
        print("allocations per relayed command: \(perCommand) (budget \(Self.budget))")
        #expect(perCommand <= Double(Self.budget), "a relayed command allocates \(perCommand) times, over the budget of \(Self.budget)")
    }

    @Test(.enabled(if: sb_allocations_counted() != 0, "a sanitizer build does not replace malloc"))
    func aDurablyRelayedCommandStaysWithinItsAllocationBudget() throws {
        let perCommand = try relay(store: true)
        print("allocations per relayed command with the SQLite store: \(perCommand) (budget \(Self.storeBudget))")
        #expect(perCommand <= Double(Self.storeBudget), "a durably relayed command allocates \(perCommand) times, over the budget of \(Self.storeBudget)")
    }

    /// Relays 300 commands through one session and returns the allocations per command after
    /// the first 100. With `store`, every `server.command` waits for its commit, as shipped.
    private func relay(store withStore: Bool) throws -> Double {
        // The store's writer hands its completions to the loop with a wake-up: the test waits on it.
        let woken = DispatchSemaphore(value: 0)
        let loop = try EventLoop(selector: NullSelector { woken.signal() }, readBufferSize: 4096)
        loop.adoptCurrentThread()
        var options = TrafficLog.Options(path: "/dev/null")
        options.maxBuffer = 1 << 30
        let log = try TrafficLog(options: options)
        var settings = RelaySettings()
        settings.apiKeys = ["k"]
        settings.ratePerSecond = 10_000_000
        settings.rateBurst = 10_000_000
        var template = Array("/tmp/switchboard-allocations-XXXXXX".utf8CString)
        let dir = try #require(mkdtemp(&template).map { String(cString: $0) })
        let path = dir + "/store.db"
        defer {
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
            rmdir(dir)
        }
        let store: SQLiteStore? = withStore ? try SQLiteStore(path: path, loop: loop) : nil
        defer { store?.close() }
        let relay = Relay(loop: loop, settings: settings, log: log, store: store)
        var answer: HTTPResponse?
        relay.route(HTTPRequest(method: "POST", target: "/v1/sessions", version: "HTTP/1.1",
                                headers: HTTPHeaders([("Authorization", "Bearer k"), ("Host", "x")]), body: [])) { answer = $0 }
        if withStore {
            // A new session is answered once its row is committed.
            loop.runPending()
            #expect(woken.wait(timeout: .now() + 10) == .success, "no commit within 10 s")
            loop.runPending()
        }
        let id = try #require(answer.flatMap { try? JSONParser.parse($0.body) }?["sessionId"]?.stringValue)
        let session = try #require(relay.session(id))
        let w = QuietConnection(), c = QuietConnection()
        let (worker, client) = session.assumeIsolated { s in (s.attach(w, role: .worker), s.attach(c, role: .client)) }
        func message(_ text: String) -> ReceivedMessage { ReceivedMessage(payload: Array(text.utf8)) }
        session.assumeIsolated { s in
            s.receive(message(#"{"type":"worker.hello","protocolVersion":1}"#), from: worker)
            s.receive(message(#"{"type":"client.hello","protocolVersion":1}"#), from: client)
        }
        loop.runPending()
        while woken.wait(timeout: .now()) == .success {}

        // The messages are built before counting: reading them off a socket is not measured.
        let rounds = 300, warmUp = 100
        let commands = (0..<rounds).map { message(#"{"type":"worker.command","id":"c\#($0)","command":"click","params":{"selector":".b\#($0)"}}"#) }
        let responses = (0..<rounds).map { message(#"{"type":"client.command_response","id":"c\#($0)","result":{"ok":true}}"#) }
        for k in 0..<rounds {
            if k == warmUp { sb_allocations_start() }
            session.assumeIsolated { s in s.receive(commands[k], from: worker) }
            if withStore {
                // The iteration's end wakes the writer; its commit hands the release of
                // server.command back to the loop.
                let sent = c.sent
                loop.runPending()
                #expect(woken.wait(timeout: .now() + 10) == .success, "no commit within 10 s")
                loop.runPending()
                #expect(c.sent == sent + 1, "server.command was not released by its commit")
            }
            session.assumeIsolated { s in s.receive(responses[k], from: client) }
        }
        let measured = sb_allocations_stop()
        loop.cancelAllTimers()

        // The relay did relay every command.
        #expect(c.sent == rounds + 1 && w.sent == rounds + 1)   // the hellos and one message per command
        let sealed = try #require(w.last)
        let last = try JSONParser.parse(Array(sealed.storage[sealed.start...].drop { $0 != UInt8(ascii: "{") }))
        #expect(last["type"]?.stringValue == "server.command_result" && last["id"]?.stringValue == "c\(rounds - 1)")
        #expect(measured > 0, "the counter counted nothing: malloc is not interposed")
        return Double(measured) / Double(rounds - warmUp)
    }
}
