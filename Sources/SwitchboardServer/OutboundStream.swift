import WebSocketCore

/// The newest records of a numbered series (events, journal entries) within a count and a
/// byte budget. Records are grouped in chunks so that trimming is one delete per chunk;
/// `add` returns the number through which the oldest records must go.
struct RetentionWindow {
    static let chunk = 256
    private var chunks: [(last: Int, count: Int, bytes: Int)] = []
    private var head = 0
    private(set) var count = 0
    private(set) var bytes = 0

    mutating func add(_ number: Int, bytes b: Int, maxCount: Int, maxBytes: Int) -> Int? {
        if head == chunks.count || chunks[chunks.count - 1].count >= RetentionWindow.chunk { chunks.append((number, 0, 0)) }
        chunks[chunks.count - 1].last = number
        chunks[chunks.count - 1].count += 1
        chunks[chunks.count - 1].bytes += b
        count += 1
        bytes += b
        var through: Int? = nil
        // The newest chunk always stays.
        while chunks.count - head > 1 && (count > maxCount || bytes > maxBytes) {
            let c = chunks[head]
            head += 1
            count -= c.count
            bytes -= c.bytes
            through = c.last
        }
        if head > 64 && head * 2 > chunks.count { chunks.removeFirst(head); head = 0 }
        return through
    }
}

/// A message retained for replay.
struct Retained {
    var seq: Int
    /// The sealed frame storage; the payload starts at `FrameWriter.maxHeaderSize`.
    var storage: [UInt8]
    /// For `server.command`: its id (not replayed once the command is no longer pending).
    var commandId: String?
    var payloadCount: Int { storage.count - FrameWriter.maxHeaderSize }
    var payload: ArraySlice<UInt8> { storage[FrameWriter.maxHeaderSize...] }
}

/// The outbound stream of one role (worker or client), as a value the session actor drives:
/// `seq` numbering, the retained tail for replay, the seq reservation that survives a
/// restart, and the commit gate that keeps a durable-first message — and everything after it
/// — from the peer until the store has committed it. No I/O: the actor sends what the
/// methods return.
struct OutboundStream {
    /// Seqs reserved per persisted reservation.
    static let block = 10_000

    /// Last seq assigned.
    private(set) var seq = 0
    /// Highest seq handed to a connected peer of this role.
    private(set) var delivered = 0
    /// Seqs up to this one may be used before a larger reservation is persisted.
    private(set) var reserved = 0

    private var retained: [Retained] = []
    private var head = 0
    private(set) var retainedBytes = 0

    /// After a restart, seqs in `gap` were never stored: numbering jumped past the durable
    /// reservation. A peer that has everything up to the gap has missed nothing stored.
    private(set) var gap: ClosedRange<Int>? = nil

    /// Messages behind the commit gate, in seq order. `waiting` marks durable-first messages
    /// whose commit has not been reported yet; the gate is the first of them.
    private(set) var held: [(seq: Int, message: OutboundMessage, waiting: Bool)] = []

    var oldestSeq: Int? { head < retained.count ? retained[head].seq : nil }
    var live: ArraySlice<Retained> { retained[head...] }
    /// The first seq not yet releasable to a peer.
    var gate: Int? { held.first?.seq }

    // MARK: Numbering and reservation

    /// Assigns the next seq. Returns a reservation to persist (with or before the message)
    /// when the seq runs past the durable one.
    mutating func next() -> (seq: Int, reservation: Int?) {
        seq += 1
        guard seq > reserved else { return (seq, nil) }
        reserved = seq + OutboundStream.block
        return (seq, reserved)
    }

    /// After a restart: numbering resumes a block past the durable reservation, so no seq a
    /// peer may have seen is used twice, and reserves the next block — which the relay commits
    /// before it serves any peer, so a second crash resumes past this one's seqs too.
    mutating func restore(reserved durable: Int) {
        seq = max(seq, durable + OutboundStream.block)
        delivered = seq
        reserved = seq + OutboundStream.block
        gap = 1...seq
    }

    /// The stored tail of a restored stream ends at `lastStored`: the gap starts after it.
    mutating func restoredTail(through lastStored: Int) {
        guard let g = gap, lastStored < g.upperBound else { return }
        gap = (lastStored + 1)...g.upperBound
    }

    // MARK: Retention

    mutating func retain(_ r: Retained, maxCount: Int, maxBytes: Int) {
        retained.append(r)
        retainedBytes += r.payloadCount
        while retained.count - head > maxCount || (retainedBytes > maxBytes && retained.count - head > 1) {
            retainedBytes -= retained[head].payloadCount
            retained[head] = Retained(seq: 0, storage: [])
            head += 1
        }
        if head > 256 && head * 2 > retained.count {
            retained.removeFirst(head)
            head = 0
        }
    }

    /// Drops the tail and anything held (a terminal session replays nothing).
    mutating func release() {
        retained = []
        head = 0
        retainedBytes = 0
        held = []
    }

    // MARK: Commit gate and delivery

    /// Whether a new message may go to the peer at once. A durable-first message (with a
    /// store) closes the gate; while it is closed every later message waits behind it.
    mutating func admit(seq: Int, _ message: OutboundMessage, durableFirst: Bool) -> Bool {
        guard durableFirst || !held.isEmpty else { return true }
        held.append((seq, message, durableFirst))
        return false
    }

    /// The store committed everything up to `seq`: returns the messages now released, in
    /// order (up to the next durable-first message still waiting).
    mutating func committed(through seq: Int) -> [(seq: Int, message: OutboundMessage)] {
        for k in held.indices where held[k].seq <= seq { held[k].waiting = false }
        let end = held.firstIndex(where: \.waiting) ?? held.count
        let released = held[..<end].map { (seq: $0.seq, message: $0.message) }
        held.removeFirst(end)
        return released
    }

    /// Records that the peer was handed `seq`.
    mutating func markDelivered(_ seq: Int) { delivered = max(delivered, seq) }

    // MARK: Replay

    struct Replay: Equatable {
        var messages: [Int]
        var from: Int
        var to: Int
        var complete: Bool
    }

    /// What a (re)connecting peer gets: the retained messages after `lastSeq` (or after what
    /// was delivered) that are released — nothing behind the commit gate, which follows once
    /// committed — and not commands that are no longer pending. `complete` is false when the
    /// tail no longer reaches back to `lastSeq`. Marks the replayed range as delivered; nil
    /// when there is nothing to say.
    mutating func replay(after lastSeq: Int?, pendingCommand: String?) -> (Replay, [Retained])? {
        let after = lastSeq ?? delivered
        let limit = (gate ?? (seq + 1)) - 1
        var messages: [Retained] = []
        for r in live where r.seq > after && r.seq <= limit {
            if let cid = r.commandId, cid != pendingCommand { continue }
            messages.append(r)
        }
        let oldest = oldestSeq ?? (seq + 1)
        // A peer inside (or just before) the restart gap has everything stored before it.
        let covered = gap.map { $0.lowerBound - 1 <= after && after <= $0.upperBound ? $0.upperBound : after } ?? after
        let complete = covered >= oldest - 1
        delivered = max(delivered, limit)
        // A peer that is behind but was sent everything released gets nothing; one whose
        // history is gone is told so even when nothing is left to replay.
        guard !messages.isEmpty || !complete else { return nil }
        let replay = Replay(messages: messages.map(\.seq), from: messages.first?.seq ?? min(after + 1, limit),
                            to: messages.last?.seq ?? limit, complete: complete)
        return (replay, messages)
    }
}
