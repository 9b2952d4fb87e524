import SwitchboardProtocol

/// The responses to the last commands a client executed, by id (docs/protocol.md section
/// 5.2): a command delivered again (a replay, a re-delivery after a server restart) is
/// answered from here instead of running twice.
public struct ResponseCache: Sendable {
    /// The protocol's minimum (`docs/protocol.md` §5.2).
    public static let defaultCapacity = 16
    /// How many responses are kept.
    public let capacity: Int
    private var order: [String] = []
    private var responses: [String: [UInt8]] = [:]

    public init(capacity: Int = ResponseCache.defaultCapacity) { self.capacity = max(1, capacity) }

    /// The response stored for `id`, if it is still kept.
    public subscript(id: String) -> [UInt8]? { responses[id] }

    /// Remembers `response` (the encoded `client.command_response`) for `id`.
    public mutating func store(_ id: String, _ response: [UInt8]) {
        if responses.updateValue(response, forKey: id) == nil { order.append(id) }
        while order.count > capacity { responses[order.removeFirst()] = nil }
    }

    /// Responses kept.
    public var count: Int { order.count }

    /// The responses kept, oldest first.
    public var entries: [(id: String, response: [UInt8])] { order.compactMap { id in responses[id].map { (id: id, response: $0) } } }
}

/// Telemetry waiting to be stored by the server: events are batched into `client.events`
/// messages numbered by `clientSeq`; a batch is kept until the server acks it and sent again
/// after a reconnect (docs/protocol.md section 7.1).
public struct TelemetryBuffer: Sendable {
    /// Events per batch (the server accepts up to 1 000).
    public let maxBatch: Int
    /// Events kept unacknowledged at most; beyond it the oldest batches are dropped (and
    /// counted in `dropped`) so a client cut off for long cannot run out of memory.
    public let maxUnackedEvents: Int
    /// The `clientSeq` of the next batch.
    public private(set) var nextClientSeq = 1
    /// Events not yet in a batch.
    public private(set) var open: [TelemetryEvent] = []
    /// Sealed batches the server has not acknowledged, oldest first.
    public private(set) var unacked: [(clientSeq: Int, events: [TelemetryEvent])] = []
    /// Events given up because `maxUnackedEvents` was exceeded.
    public private(set) var dropped = 0

    public init(maxBatch: Int = 100, maxUnackedEvents: Int = 100_000) {
        self.maxBatch = max(1, min(maxBatch, InboundDecoder.maxEventsPerBatch))
        self.maxUnackedEvents = max(self.maxBatch, maxUnackedEvents)
    }

    /// Adds an event; true when the open batch is full and should be sent now.
    public mutating func add(_ event: TelemetryEvent) -> Bool {
        open.append(event)
        return open.count >= maxBatch
    }

    /// Closes the open batch: its `client.events` message to send (nil when it is empty).
    public mutating func seal() -> ClientEvents? {
        guard !open.isEmpty else { return nil }
        let batch = ClientEvents(clientSeq: nextClientSeq, events: open)
        unacked.append((clientSeq: nextClientSeq, events: open))
        nextClientSeq += 1
        open = []
        var held = unacked.reduce(0) { $0 + $1.events.count }
        while held > maxUnackedEvents, let first = unacked.first {
            unacked.removeFirst()
            held -= first.events.count
            dropped += first.events.count
        }
        return batch
    }

    /// The server stored every batch through `clientSeq`.
    public mutating func ack(_ clientSeq: Int) {
        unacked.removeAll { $0.clientSeq <= clientSeq }
    }

    /// After a hello: drops what the server has (`lastClientSeq`) and continues numbering
    /// after it; `unacked` is then what to send again, in order.
    public mutating func resume(lastClientSeq: Int?) {
        let stored = lastClientSeq ?? 0
        ack(stored)
        nextClientSeq = max(nextClientSeq, stored + 1)
    }
}
