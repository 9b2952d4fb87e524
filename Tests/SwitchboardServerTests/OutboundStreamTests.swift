import Testing
import WebSocketCore
@testable import SwitchboardServer

/// The outbound path as a value: numbering, reservation, retention, commit gate, replay.
@Suite struct OutboundStreamTests {
    func message(_ seq: Int) -> OutboundMessage {
        OutboundMessage(reserved: [UInt8](repeating: 0, count: FrameWriter.maxHeaderSize) + Array("{\"seq\":\(seq)}".utf8))
    }

    /// Emits one message the way the session does; returns whether it may be sent now.
    @discardableResult
    func emit(_ s: inout OutboundStream, durable: Bool = false, command: String? = nil, maxCount: Int = 1000) -> (seq: Int, sendNow: Bool) {
        let (seq, _) = s.next()
        let m = message(seq)
        s.retain(Retained(seq: seq, storage: m.storage, commandId: command), maxCount: maxCount, maxBytes: 1 << 20)
        let now = s.admit(seq: seq, m, durableFirst: durable)
        if now { s.markDelivered(seq) }
        return (seq, now)
    }

    @Test func numberingReservesInBlocks() {
        var s = OutboundStream()
        let first = s.next()
        #expect(first.seq == 1 && first.reservation == 1 + OutboundStream.block)
        for _ in 2...OutboundStream.block + 1 { #expect(s.next().reservation == nil) }
        #expect(s.next().reservation == OutboundStream.block + 2 + OutboundStream.block)
    }

    @Test func aRestoredStreamNeverReusesASeq() {
        // Durable reservation 10 001 (seqs up to it may have been seen): resume past it, and
        // persist a new reservation with the first message.
        var s = OutboundStream()
        s.restore(reserved: 10_001)
        #expect(s.seq == 10_001 + OutboundStream.block)
        #expect(s.delivered == s.seq)
        // The next block is reserved at once (the relay commits it before serving peers).
        #expect(s.reserved == s.seq + OutboundStream.block)
        let n = s.next()
        #expect(n.seq == 10_002 + OutboundStream.block)
        #expect(n.reservation == nil)
        // A fresh session restored with no reservation still starts above 0.
        var fresh = OutboundStream()
        fresh.restore(reserved: 0)
        #expect(fresh.next().seq == OutboundStream.block + 1)
    }

    @Test func theGateHoldsADurableMessageAndEverythingAfterIt() {
        var s = OutboundStream()
        #expect(emit(&s).sendNow)                       // 1 goes at once
        #expect(!emit(&s, durable: true).sendNow)       // 2 waits for its commit
        #expect(!emit(&s).sendNow)                      // 3 waits behind it
        #expect(!emit(&s, durable: true).sendNow)       // 4 waits for its own commit
        #expect(!emit(&s).sendNow)                      // 5 behind 4
        #expect(s.gate == 2)
        #expect(s.committed(through: 2).map(\.seq) == [2, 3])
        #expect(s.gate == 4)
        #expect(s.committed(through: 3).isEmpty)
        #expect(s.committed(through: 4).map(\.seq) == [4, 5])
        #expect(s.gate == nil)
        #expect(emit(&s).sendNow)
    }

    @Test func replayNeverDeliversWhatIsNotCommitted() {
        var s = OutboundStream()
        emit(&s); emit(&s)                              // 1, 2 delivered
        emit(&s, durable: true, command: "c1")          // 3: a command not yet committed
        emit(&s)                                        // 4 behind it
        // The peer reconnects having seen 1.
        guard let (r, _) = s.replay(after: 1, pendingCommand: "c1") else { Issue.record("no replay"); return }
        #expect(r.messages == [2])
        #expect(r.complete)
        #expect(r.to == 2)
        // Once committed, 3 and 4 are released (the actor sends them to the new peer).
        #expect(s.committed(through: 3).map(\.seq) == [3, 4])
    }

    @Test func replaySkipsCommandsNoLongerPendingAndReportsLostHistory() {
        var s = OutboundStream()
        emit(&s, command: "c1")                         // 1: answered since
        emit(&s)                                        // 2
        emit(&s, command: "c2")                         // 3: still pending
        guard let (r, _) = s.replay(after: 0, pendingCommand: "c2") else { Issue.record("no replay"); return }
        #expect(r.messages == [2, 3])
        #expect(r.complete)
        // A tail of two: asking from 0 is incomplete.
        var t = OutboundStream()
        for _ in 1...5 { emit(&t, maxCount: 2) }
        guard let (r2, _) = t.replay(after: 0, pendingCommand: nil) else { Issue.record("no replay"); return }
        #expect(r2.messages == [4, 5])
        #expect(!r2.complete)
        // Up to date: nothing to say.
        #expect(t.replay(after: 5, pendingCommand: nil) == nil)
        // Up to date with the released part while the rest is gated: nothing either.
        emit(&t, durable: true)
        #expect(t.replay(after: 5, pendingCommand: nil) == nil)
    }

    @Test func withoutLastSeqReplayStartsAfterWhatWasDelivered() {
        var s = OutboundStream()
        emit(&s); emit(&s)                              // delivered 1, 2 to a connected peer
        // The peer goes away; 3 and 4 are produced meanwhile (not delivered).
        for _ in 0..<2 {
            let (seq, _) = s.next()
            s.retain(Retained(seq: seq, storage: message(seq).storage, commandId: nil), maxCount: 100, maxBytes: 1 << 20)
        }
        guard let (r, _) = s.replay(after: nil, pendingCommand: nil) else { Issue.record("no replay"); return }
        #expect(r.messages == [3, 4])
        #expect(s.delivered == 4)
    }

    @Test func releaseDropsEverything() {
        var s = OutboundStream()
        emit(&s); emit(&s, durable: true)
        s.release()
        #expect(s.live.isEmpty && s.held.isEmpty && s.retainedBytes == 0)
        #expect(s.seq == 2)
    }
}

extension OutboundStreamTests {
    @Test func theRestartGapHidesNothingStored() {
        // Before the crash: 1...3 stored, the reservation was 10 001.
        var s = OutboundStream()
        s.restore(reserved: 10_001)
        s.restoredTail(through: 3)
        for seq in 1...3 { s.retain(Retained(seq: seq, storage: message(seq).storage, commandId: nil), maxCount: 100, maxBytes: 1 << 20) }
        emit(&s)                                          // the first message after the restart
        let first = s.seq
        // A peer with everything stored (3) or with a seq inside the gap is complete.
        for after in [3, 5_000, first - 1] {
            var t = s
            guard let (r, _) = t.replay(after: after, pendingCommand: nil) else { Issue.record("no replay"); continue }
            #expect(r.complete, "\(after)")
            #expect(r.messages == [first])
        }
        // A peer behind the stored tail gets the rest of it, also complete.
        var t = s
        guard let (r, _) = t.replay(after: 1, pendingCommand: nil) else { Issue.record("no replay"); return }
        #expect(r.messages == [2, 3, first] && r.complete)
        // With the stored tail trimmed, a peer from before it is honestly incomplete.
        var u = OutboundStream()
        u.restore(reserved: 10_001)
        u.restoredTail(through: 3)
        u.retain(Retained(seq: 3, storage: message(3).storage, commandId: nil), maxCount: 100, maxBytes: 1 << 20)
        emit(&u)
        guard let (r2, _) = u.replay(after: 1, pendingCommand: nil) else { Issue.record("no replay"); return }
        #expect(!r2.complete)
    }
}
