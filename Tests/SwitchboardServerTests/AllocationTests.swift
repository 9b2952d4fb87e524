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
    /// out, the response in, server.command_result out, each logged and journaled): 51 without
    /// a store when the budget was set (72 before each message buffer took its header room in
    /// the same allocation and the parser reserved an envelope's members). With the SQLite
    /// store the loop also builds each message's journal row and the state snapshots, holds
    /// `server.command` until its commit and releases it; the writer is idle here, so the loop
    /// commits each iteration itself and the commits (binding the rows, SQLite's own
    /// allocations) count too: 120 when its budget was set (153 while SQLite made a copy of
    /// each bound text and blob, 185 while each row's values went to SQLite in an array of
    /// their own and each journal row was an INSERT of its own).
    static let budget = 60
    static let storeBudget = 135

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
        // A commit on the store's writer hands its completions to the loop with a wake-up.
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
        /// Runs the loop until `done`: the iteration's end commits (on the loop when the
        /// writer is idle, or on the writer, which wakes the loop to hand the completions back).
        func commit(until done: () -> Bool) -> Bool {
            loop.runPending()
            loop.runPending()
            while !done() {
                guard woken.wait(timeout: .now() + 10) == .success else { return false }
                loop.runPending()
            }
            return true
        }
        if withStore {
            // A new session is answered once its row is committed.
            #expect(commit { answer != nil }, "no commit within 10 s")
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
                // server.command is released once its commit is done.
                let sent = c.sent
                #expect(commit { c.sent == sent + 1 }, "server.command was not released by its commit within 10 s")
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
