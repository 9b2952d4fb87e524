import SocketServer
import SwitchboardProtocol
import WebSocketCore

extension Session {
    func persist(_ ops: [StoreOp], then completion: (@Sendable () -> Void)? = nil) {
        guard let store = store, !evicted, !ops.isEmpty || completion != nil else { return }
        store.submit(ops, completion: completion)
    }

    func persist(_ op: StoreOp) {
        guard let store = store, !evicted else { return }
        store.submit(op)
    }

    /// The session's bookkeeping as persisted (everything the relay needs after a restart
    /// that is not a message, an event or a journal entry), as the JSON text of its state row.
    /// Written straight into bytes: it is stored after every command and every response.
    func stateSnapshot() -> [UInt8] {
        var w = JSONWriter()
        w.bytes.reserveCapacity(256)
        // The snapshot is committed with the batch it follows: it records what is accepted.
        w.raw("{\"lastClientSeq\":"); w.int(acceptedClientSeq)
        w.key("commandCounter"); w.int(commandCounter)
        w.key("commandCount"); w.int(commandCount)
        w.key("seqReserved"); w.raw("{\"worker\":"); w.int(workerStream.reserved)
        w.key("client"); w.int(clientStream.reserved); w.raw("}")
        if let sub = workerSubscription {
            w.key("subscription"); w.raw("[")
            for (k, type) in sub.sorted().enumerated() {
                if k > 0 { w.raw(",") }
                w.write(string: type)
            }
            w.raw("]")
        }
        w.key("grace"); w.raw("{")
        for (k, (role, deadline)) in graceDeadlines.enumerated() {
            if k > 0 { w.raw(",") }
            w.write(string: role.rawValue); w.raw(":"); w.int(Int(deadline))
        }
        w.raw("}")
        if let p = pending {
            w.key("pending"); w.raw("{\"id\":"); w.write(string: p.id)
            w.key("kind"); w.write(string: p.kind.rawValue)
            w.key("command"); w.write(string: p.command)
            w.key("deadline"); w.int(Int(p.deadline))
            w.key("startedAt"); w.int(Int(p.startedAtMs))
            w.key("optional"); w.raw(p.optional ? "true" : "false")
            if p.kind == .yield { w.key("conditions"); w.write(.array(p.conditionsJSON)) }
            if let m = p.message { w.key("message"); w.write(string: m) }
            w.raw("}")
        }
        w.raw("}")
        return w.take()
    }

    func persistState() {
        guard store != nil else { return }
        persist(.updateState(id: id, state: stateSnapshot()))
    }

    /// Stores a journal entry. A message the server sent on a stream (`message`) is stored once,
    /// as its entry, whether or not the journal is stored: replay tails are read back from
    /// these entries.
    func persistJournal(_ e: JournalEntry, message: StreamPosition? = nil, repeatedByNext: Range<Int>? = nil, repeatsPrevious: Range<Int>? = nil) {
        let journalStoredEntries = settings.journalStoredEntries
        let journaled = journalStoredEntries > 0
        guard store != nil, journaled || message != nil else { return }
        persist(.journal(session: id, n: e.n, direction: e.direction, ts: e.ts, body: e.bytes, message: message, journaled: journaled,
                         repeatedByNext: repeatedByNext, repeatsPrevious: repeatsPrevious))
        if journaled, let through = storedJournal.add(e.n, bytes: e.bytes.count, maxCount: journalStoredEntries, maxBytes: settings.journalStoredBytes) {
            metrics.hit("journal_stored_bytes")
            // Entries still in a replay tail stay (for replay only) until a later trim passes them.
            persist(.trimJournal(session: id, throughN: through, keepFrom: (workerStream.oldestSeq ?? Int.max, clientStream.oldestSeq ?? Int.max)))
        }
        // Without a stored journal the stored tail follows the memory one, trimmed in steps of 64.
        if !journaled, let m = message, let oldest = withStream(StreamPosition.role(of: m.stream), { $0.oldestSeq }), oldest > 1, (oldest - 1) % 64 == 0 {
            persist(.trimMessages(session: id, stream: m.stream, throughSeq: oldest - 1))
        }
    }

    // MARK: Restore

    /// Takes over the durable state of a session after a restart and re-arms its deadlines:
    /// connect and duration from creation, the pending work's own deadline, and a disconnect
    /// grace for each peer (both are away after a restart; a grace armed before keeps its deadline).
    func restore(_ r: SessionRecord) {
        state = SessionState(phase: r.phase, reason: r.reason, result: r.result, error: r.error)
        let st = r.state
        lastClientSeq = st["lastClientSeq"]?.intValue ?? 0
        acceptedClientSeq = lastClientSeq
        commandCounter = st["commandCounter"]?.intValue ?? 0
        commandCount = st["commandCount"]?.intValue ?? 0
        // Stream positions now, before any timer or REST call can emit: no seq is reused.
        // A session stored by one node and never served (several nodes) numbers from 1: the
        // node taking it commits its first reservation before serving it (Relay.install).
        // Any other restores a block past its durable reservation (messages may have been
        // sent before that reservation was committed).
        if st["neverServed"]?.boolValue != true {
            workerStream.restore(reserved: st["seqReserved"]?["worker"]?.intValue ?? 0)
            clientStream.restore(reserved: st["seqReserved"]?["client"]?.intValue ?? 0)
        }
        if let n = try? store?.lastJournalEntry(session: r.id) { journalLog.restore(last: n) }
        workerSubscription = st["subscription"]?.arrayValue.map { Set($0.compactMap(\.stringValue)) }
        loaded = false
        guard !state.phase.isTerminal else { return }
        startTimers()
        if let po = st["pending"]?.objectValue, let pid = po["id"]?.stringValue {
            let kind = Pending.Kind(rawValue: po["kind"]?.stringValue ?? "") ?? .command
            var p = Pending(id: pid, kind: kind, command: po["command"]?.stringValue ?? "", startedAt: monotonicNanos())
            let now = epochMillis()
            p.deadline = Int64(po["deadline"]?.intValue ?? 0)
            p.startedAtMs = po["startedAt"]?.intValue.map(Int64.init) ?? now
            let ago = UInt64(clamping: WireNumbers.subtracting(now, p.startedAtMs))
            p.startedAt = monotonicNanos() &- WireNumbers.multiplying(ago, 1_000_000)
            p.optional = po["optional"]?.boolValue ?? false
            p.message = po["message"]?.stringValue
            if kind == .yield {
                p.conditionsJSON = po["conditions"]?.arrayValue ?? []
                p.conditions = p.conditionsJSON.enumerated().compactMap { i, c in c.objectValue.flatMap { CompiledCondition(index: i, $0) } }
            }
            let remaining = Int(WireNumbers.subtracting(p.deadline, now))
            p.timer = loop.schedule(afterMillis: max(0, remaining)) { [self] in
                self.assumeIsolated { s in kind == .yield ? s.yieldTimedOut(pid) : s.commandTimedOut(pid) }
            }
            pending = p
            redeliverAfterRestore = kind == .command
        }
        if state.phase == .active {
            for role in [Role.worker, .client] {
                let saved = st["grace"]?[role.rawValue]?.intValue.map(Int64.init)
                armGrace(role, deadline: saved ?? (epochMillis() + Int64(timeouts.disconnectGracePeriodMs)))
            }
            persistState()
        }
    }

    /// After a restart the client may have answered the pending command while the server was
    /// dying: its response was never stored, yet the client's lastSeq covers the command, so a
    /// replay would skip it. The command is therefore sent again with a new seq; the client's
    /// response cache (docs/protocol.md 5.2) answers it without running it twice.
    func redeliverPendingIfNeeded(lastSeq: Int?) {
        guard redeliverAfterRestore, let p = pending, p.kind == .command else { return }
        redeliverAfterRestore = false
        guard let original = clientStream.live.last(where: { $0.commandId == p.id }),
              original.seq <= (lastSeq ?? clientStream.delivered),
              let message = (try? JSONParser.parse(Array(original.storage[FrameWriter.maxHeaderSize...])))?.objectValue else { return }
        emit(to: .client, type: "server.command", id: p.id, commandId: p.id) { w in
            for m in message where m.key != "type" && m.key != "seq" {
                w.raw(","); w.write(string: m.key); w.raw(":"); w.write(m.value)
            }
        }
    }

    /// Reads back the replay tails, telemetry position and journal of a restored session.
    func ensureLoaded() {
        guard !loaded, let store = store else { return }
        loaded = true
        if let rows = try? store.messages(session: id, limit: settings.replayMaxMessages) {
            for role in [Role.worker, .client] {
                let last = rows.lazy.filter { StreamPosition.role(of: $0.stream) == role }.map(\.seq).reduce(0, max)
                withStream(role) { $0.restoredTail(through: last) }
            }
            for row in rows {
                var m = OutboundMessage(reserved: FrameWriter.withHeaderRoom(row.body))
                m.seal(.text)
                let r = Retained(seq: row.seq, storage: m.storage, commandId: row.commandId)
                // Rows older than what the stream numbers now (they all are: see `restore`).
                withStream(StreamPosition.role(of: row.stream)) { $0.retain(r, maxCount: settings.replayMaxMessages, maxBytes: settings.replayMaxBytes) }
            }
        }
        events.restore(total: (try? store.eventCount(session: id)) ?? 0)
        if let nav = try? store.lastEvent(session: id, type: "navigation") {
            lastNavigation = nav
            currentURL = nav.payload["url"]?.stringValue
        }
        if let ids = try? store.usedIds(session: id) { usedIds.formUnion(ids) }

    }
}
