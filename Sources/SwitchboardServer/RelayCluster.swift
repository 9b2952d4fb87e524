import SocketServer
import SwitchboardProtocol
import WebSocketCore

/// Several nodes on one PostgreSQL database (docs/scaling.md): which sessions this node serves.
extension Relay {
    func startCluster(_ cluster: PostgresStore) throws {
        cluster.onFenced { [weak self] ids in
            guard let self else { return }
            self.log.event(session: nil, "fenced", ["sessions": .int(ids.count)])
            self.evict(ids, reason: "the session is served by another node now")
        }
        try cluster.startLeases { [weak self] event in self?.leaseEvent(event) }
        log.event(session: nil, "node", ["id": .string(cluster.nodeId), "leaseMs": .int(cluster.leaseMs)])
    }

    func leaseEvent(_ event: LeaseEvent) {
        switch event {
        case .lost:
            log.event(session: nil, "lease_lost", ["sessions": .int(sessions.count), "node": .string(cluster?.nodeId ?? "")])
            evict(Array(sessions.keys), reason: "this node lost its lease")
        case .handOff(let ids):
            handOff(ids)
        case .adopted(let records):
            // A session this node is still leaving has writes of its former copy queued: it
            // is given up again after them (installing it now would read it before them).
            let requeued = records.map(\.id).filter { leaving.contains($0) }
            if !requeued.isEmpty { store?.submit(requeued.map { .release(session: $0) }, completion: nil) }
            let fresh = records.filter { sessions[$0.id] == nil && !leaving.contains($0.id) }
            do { try install(fresh) } catch {
                evict(fresh.map(\.id), reason: "the session could not be taken over")
                return
            }
            if !fresh.isEmpty { log.event(session: nil, "adopted", ["sessions": .int(fresh.count)]) }
        }
    }

    /// Stops serving `ids` here: peers are closed with 4012 and come back through the balancer
    /// to the node that takes the session next; until this node's queued writes for them are
    /// committed, it answers them `session_moved` itself.
    func evict(_ ids: [String], reason: String) {
        var gone: [String] = []
        for id in ids {
            guard let s = sessions.removeValue(forKey: id) else { continue }
            let phase = s.assumeIsolated { s in
                s.evict(.moved, reason: reason)
                return s.state.phase
            }
            metrics.phaseGone(phase)
            gone.append(id)
        }
        guard !gone.isEmpty else { return }
        let set = Set(gone)
        order.removeAll { set.contains($0.id) }
        leaving.formUnion(gone)
        afterCommit { [weak self] in self?.leaving.subtract(gone) }
    }

    /// Gives sessions up to whichever node takes them next: after everything queued for them,
    /// their rows lose their owner.
    func handOff(_ ids: [String]) {
        guard !ids.isEmpty else { return }
        // Also sessions this node owns without serving them (the store releases only what
        // it owns at the epoch it holds).
        store?.submit(ids.map { .release(session: $0) }, completion: nil)
        log.event(session: nil, "handed_off", ["sessions": .int(ids.count)])
        evict(ids, reason: "the session moves to another node")
    }

    /// A new session is stored without an owner: the node its first peer or call reaches
    /// (the balancer hashes on the session id) serves it.
    func createClusterSession(_ request: HTTPRequest, id: String, workerToken: String, clientToken: String, timeouts: SessionTimeouts,
                              metadata: JSONObject?, clientConfig: JSONObject, tenant: String,
                              respond: @escaping (HTTPResponse) -> Void) -> HTTPResponse? {
        let createdAt = epochMillis()
        let record = SessionRecord(id: id, ordinal: 0, createdAt: createdAt, timeouts: timeouts, metadata: metadata, clientConfig: clientConfig,
                                   workerTokenHash: Crypto.sha256(workerToken), clientTokenHash: Crypto.sha256(clientToken),
                                   phase: .created, reason: nil, result: nil, error: nil, state: ["neverServed": .bool(true)], tenant: tenant)
        metrics.sessionsCreated += 1
        let expiresAt = WireNumbers.adding(createdAt, Int64(timeouts.sessionDurationMs))
        log.event(session: id, "created", ["expiresAt": .int64(expiresAt)])
        let response = Relay.json(201, .object([
            "sessionId": .string(id), "workerToken": .string(workerToken), "clientToken": .string(clientToken),
            "websocketUrl": .string("\(webSocketBase(request))/sessions/\(id)/ws"), "expiresAt": .int64(expiresAt), "phase": .string("created"),
        ]))
        respondAfterCommit([.insertSession(record)], respond: respond) { response }
        return nil
    }

    /// What a session's stored row says of it (a node that does not serve it answers with this).
    static func info(of r: SessionRecord) -> SessionInfo {
        let pending = r.state["pending"]?.objectValue
        let kind = pending?["kind"]?.stringValue ?? "command"
        return SessionInfo(sessionId: r.id, phase: r.phase, reason: r.reason, createdAt: r.createdAt,
                           expiresAt: WireNumbers.adding(r.createdAt, Int64(r.timeouts.sessionDurationMs)),
                           workerConnected: false, clientConnected: false, interactive: kind == "yield" && pending != nil,
                           pending: pending?["id"]?.stringValue.map { PendingInfo(id: $0, kind: kind, command: kind == "command" ? pending?["command"]?.stringValue : nil) },
                           metadata: r.metadata, result: r.result, error: r.error,
                           counts: SessionCounts(commands: r.state["commandCount"]?.intValue ?? 0, events: 0))
    }

    /// Lists from the database: every node answers for all sessions. A session served by
    /// another node shows what its row holds (connection flags false, pending work from its
    /// last stored state).
    func listClusterSessions(_ cluster: PostgresStore, tenant: String, phase: Phase?, before: Int, limit: Int) -> HTTPResponse {
        guard let records = try? cluster.listSessions(tenant: tenant, phase: phase, before: before, limit: limit + 1) else {
            return Relay.storeUnavailable()
        }
        let items = records.prefix(limit).map { r in sessions[r.id].map(infoJSON) ?? Relay.infoJSON(Relay.info(of: r)) }
        let next: JSON = records.count > limit ? .string(String(records[limit - 1].ordinal)) : .null
        return Relay.json(200, .object(["sessions": .array(items), "next": next]))
    }
}
