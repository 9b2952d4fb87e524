import SocketServer
import SwitchboardProtocol
import WebSocketCore

/// One CDP channel (docs/protocol.md section 16): a worker's WebSocket speaking the Chrome
/// DevTools Protocol (Playwright's `connect_over_cdp`), relayed frame by frame over the
/// client's session connection to the client's browser. Confined to the session's loop.
final class CDPChannel: @unchecked Sendable {
    let id: Int
    let connection: any PeerConnection
    var bucket: RateBucket
    var closed = false

    init(id: Int, connection: any PeerConnection, settings: RelaySettings) {
        self.id = id
        self.connection = connection
        bucket = RateBucket(settings: settings)
    }
}

/// What a worker's CDP command may not do: end the user's browser.
enum CDPPolicy {
    static let refused: Set<String> = ["Browser.close", "Browser.crash", "Browser.crashGpuProcess"]

    /// A CDP command, as far as the relay needs to know it.
    struct Command: Equatable {
        var id: Int
        var method: String
        var sessionId: String?
    }

    /// Reads a worker's parsed frame: a JSON object with an integer `id` and a string
    /// `method` (nil: not a CDP command).
    static func command(_ frame: JSON) -> Command? {
        guard let idValue = frame["id"], case .number = idValue, let id = idValue.intValue, id >= 0,
              let method = frame["method"]?.stringValue else { return nil }
        return Command(id: id, method: method, sessionId: frame["sessionId"]?.stringValue)
    }

    /// The CDP error answer to a refused command.
    static func refusal(_ c: Command) -> [UInt8] {
        var o: JSONObject = ["id": .int(c.id),
                             "error": .object(["code": .int(-32000),
                                               "message": .string("\(c.method) is refused: a CDP channel through Switchboard may not end the user's browser")])]
        if let s = c.sessionId { o["sessionId"] = .string(s) }
        return JSONWriter.serialize(.object(o))
    }
}

extension Session {
    /// Why a worker may not open a CDP channel now (nil: it may).
    func cdpRefusal() -> (status: Int, code: String, message: String)? {
        if state.phase.isTerminal { return (409, "session_terminal", "the session has ended") }
        guard settings.maxCDPChannels > 0 else { return (403, "forbidden", "CDP channels are turned off on this server (max_cdp_channels = 0)") }
        guard let client, client.helloDone else { return (409, "client_not_connected", "the session's client is not connected; retry once it is") }
        guard client.capabilities.contains("cdp") else { return (409, "cdp_unavailable", "the session's client does not offer CDP (no \"cdp\" capability in its hello)") }
        guard cdpChannels.count < settings.maxCDPChannels else {
            metrics.hit("max_cdp_channels")
            return (429, "rate_limited", "at most \(settings.maxCDPChannels) CDP channels per session")
        }
        return nil
    }

    /// A worker's CDP WebSocket opened: the client is asked to connect its side.
    func openCDP(_ connection: any PeerConnection) -> CDPChannel? {
        if let refusal = cdpRefusal() {
            // The client left between the upgrade and now.
            connection.close(refusal.code == "session_terminal" ? .normal : .clientDisconnected, reason: refusal.message)
            return nil
        }
        lastCDPChannel += 1
        let channel = CDPChannel(id: lastCDPChannel, connection: connection, settings: settings)
        cdpChannels[channel.id] = channel
        metrics.cdpChannels += 1
        log.event(session: id, "cdp_open", ["channel": .int(channel.id), "remote": .string(connection.remoteAddress)])
        sendToClient("server.cdp_open", JSONWriter.message(type: "server.cdp_open") { ServerCDPOpen.writeFields(&$0, channel: channel.id) })
        return channel
    }

    /// A frame from the worker's CDP socket.
    func cdpFromWorker(_ channel: CDPChannel, _ message: ReceivedMessage) {
        guard !channel.closed else { return }
        let s = settings
        let (messagesOK, bytesOK) = channel.bucket.take(bytes: message.count, now: loop.now, settings: s)
        guard messagesOK && bytesOK else {
            metrics.hit(messagesOK ? "rate_bytes_per_second" : "rate_per_second")
            closeCDP(channel, .rateLimited, reason: "more than \(messagesOK ? "\(s.rateBytesPerSecond) bytes" : "\(s.ratePerSecond) messages") per second")
            return
        }
        // Parsed once: for the policy here and for the traffic log.
        guard let frame = message.withUnsafeBytes({ try? JSONParser.parse($0) }), let command = CDPPolicy.command(frame) else {
            closeCDP(channel, .invalidJSON, reason: "not a CDP command (a JSON object with an integer id and a string method)")
            return
        }
        metrics.cdpFrames[0] += 1
        metrics.cdpBytes[0] += message.count
        log.cdp(session: id, direction: "worker_to_client", channel: channel.id, frame: frame, bytes: message.count)
        if CDPPolicy.refused.contains(command.method) {
            metrics.cdpRefused += 1
            log.event(session: id, "cdp_refused", ["channel": .int(channel.id), "method": .string(command.method)])
            channel.connection.send(OutboundMessage(reserved: FrameWriter.withHeaderRoom(CDPPolicy.refusal(command))), opcode: .text)
            return
        }
        mirrorCDP("cdp_to_client", channel: channel.id, message.bytes)
        sendToClient("server.cdp", message.withUnsafeBytes { raw in
            JSONWriter.message(type: "server.cdp") { w in
                ServerCDPFrame.writeFields(&w, channel: channel.id, frame: raw.assumingMemoryBound(to: UInt8.self))
            }
        })
    }

    /// `client.cdp`: a frame from the client's browser.
    func cdpFromClient(channel id: Int, data: String, frame parsed: JSON, peer: Peer) {
        guard peer === client, let channel = cdpChannels[id], !channel.closed else { return }   // closed meanwhile
        guard data.utf8.count <= settings.maxCDPFrameBytes else {
            // Counted as a limit hit when the socket reports its 1009 close.
            closeCDP(channel, .messageTooBig, reason: "a frame from the browser is larger than \(settings.maxCDPFrameBytes) bytes")
            return
        }
        let storage = FrameWriter.withHeaderRoom(data.utf8)
        let frame = storage[FrameWriter.maxHeaderSize...]
        metrics.cdpFrames[1] += 1
        metrics.cdpBytes[1] += frame.count
        log.cdp(session: self.id, direction: "client_to_worker", channel: id, frame: parsed, bytes: frame.count)
        mirrorCDP("cdp_to_worker", channel: id, frame)
        channel.connection.send(OutboundMessage(reserved: storage), opcode: .text)
    }

    /// `client.cdp_close`: the client's side is gone; so is the worker's.
    func cdpClosedByClient(channel id: Int, reason: String?, peer: Peer) {
        guard peer === client, let channel = cdpChannels[id] else { return }
        closeCDP(channel, .browserSideClosed, reason: "the client's browser connection closed" + (reason.map { ": \($0)" } ?? ""), tellClient: false)
    }

    /// The worker's CDP socket closed (by either side).
    func cdpSocketClosed(_ channel: CDPChannel, code: CloseCode) {
        guard cdpChannels[channel.id] === channel else { return }
        cdpChannels[channel.id] = nil
        metrics.cdpChannels -= 1
        log.event(session: id, "cdp_close", ["channel": .int(channel.id), "code": .int(Int(code.rawValue))])
        if !channel.closed {
            channel.closed = true
            sendToClient("server.cdp_close", JSONWriter.message(type: "server.cdp_close") { ServerCDPClose.writeFields(&$0, channel: channel.id, reason: "the worker closed the channel") })
        }
    }

    /// Closes the worker's side of `channel` with `code` (the client is told unless it closed first).
    func closeCDP(_ channel: CDPChannel, _ code: CloseCode, reason: String, tellClient: Bool = true) {
        guard !channel.closed else { return }
        channel.closed = true
        if tellClient {
            sendToClient("server.cdp_close", JSONWriter.message(type: "server.cdp_close") { ServerCDPClose.writeFields(&$0, channel: channel.id, reason: reason) })
        }
        channel.connection.close(code, reason: reason)
    }

    /// Closes every CDP channel (the client left, the session ended).
    func closeCDPChannels(_ code: CloseCode, reason: String) {
        for channel in cdpChannels.values.sorted(by: { $0.id < $1.id }) { closeCDP(channel, code, reason: reason, tellClient: code != .clientDisconnected) }
    }

    private func sendToClient(_ type: StaticString, _ bytes: [UInt8]) {
        guard let client, client.helloDone else { return }
        metrics.countOut(type)
        client.connection.send(OutboundMessage(reserved: FrameWriter.withHeaderRoom(bytes)), opcode: .text)
    }

    /// Debug viewers watch CDP frames live; they are not journaled (CDP is not replayed).
    private func mirrorCDP(_ direction: StaticString, channel: Int, _ frame: ArraySlice<UInt8>) {
        guard !debugs.isEmpty else { return }
        var w = JSONWriter(bytes: FrameWriter.headerRoom(for: frame.count + 96))
        w.raw("{\"direction\":\""); w.raw(direction)
        w.raw("\",\"ts\":\""); w.raw(Timestamps.iso(epochMillis()))
        w.raw("\",\"channel\":"); w.int(channel)
        w.raw(",\"data\":")
        frame.withUnsafeBufferPointer { w.write(utf8String: $0) }
        w.raw("}")
        let m = OutboundMessage(reserved: w.bytes)
        for d in debugs { d.connection.send(m, opcode: .text) }
    }
}

/// Bridges a worker's CDP WebSocket to its session, synchronously on the loop.
final class CDPHandler: WebSocketHandler {
    let session: Session
    var channel: CDPChannel?

    init(session: Session) { self.session = session }

    func webSocketDidOpen(_ connection: Connection) {
        connection.limitMessages(to: session.relay.settings.maxCDPFrameBytes)
        channel = session.assumeIsolated { $0.openCDP(connection) }
    }

    func webSocket(_ connection: Connection, didReceiveText message: ReceivedMessage) {
        guard let channel else { return }
        session.assumeIsolated { $0.cdpFromWorker(channel, message) }
    }

    func webSocket(_ connection: Connection, didReceiveBinary message: ReceivedMessage) {
        connection.fail(.unsupportedData, reason: "CDP frames are text")
    }

    func webSocketDidClose(_ connection: Connection, code: CloseCode) {
        session.relay.metrics.closed(code.rawValue)
        if code == .messageTooBig { session.relay.metrics.hit("max_cdp_frame_bytes") }
        guard let channel else { return }
        self.channel = nil
        session.assumeIsolated { $0.cdpSocketClosed(channel, code: code) }
    }
}
