import SwitchboardProtocol

/// Counters for `/metrics` (Prometheus text format). Loop-confined.
public final class Metrics {
    public var commands = 0
    public var replays = 0
    public var incompleteReplays = 0
    public var sessionsCreated = 0
    var phases: [Phase: Int] = [:]
    /// Keyed by the address of the type's static string: no String is made per message.
    var messagesOut: [Int: (name: StaticString, count: Int)] = [:]
    var messagesIn: [Int: (name: StaticString, count: Int)] = [:]
    var errors: [String: Int] = [:]
    var closeCodes: [UInt16: Int] = [:]
    /// Times each configured bound was hit, by the bound's configuration key.
    var limitHits: [String: Int] = [:]
    var peers: [Role: Int] = [:]
    /// CDP channels open, frames and bytes relayed ([worker to client, client to worker]),
    /// and commands refused (docs/protocol.md section 16).
    var cdpChannels = 0
    var cdpFrames = [0, 0]
    var cdpBytes = [0, 0]
    var cdpRefused = 0
    var yieldCounts = [Int](repeating: 0, count: yieldBuckets.count + 1)
    var yieldSum = 0
    static let yieldBuckets: [Int] = [1, 5, 10, 30, 60, 120, 300, 600, 1800]
    /// Command round-trip histogram buckets in ms.
    static let buckets: [Int] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
    var rttCounts = [Int](repeating: 0, count: buckets.count + 1)
    var rttSum = 0

    public init() {}

    func phaseChanged(from: Phase?, to: Phase) {
        if let from { phases[from, default: 0] -= 1 }
        phases[to, default: 0] += 1
    }

    /// A session this node no longer serves.
    func phaseGone(_ phase: Phase) { phases[phase, default: 1] -= 1 }

    func countOut(_ type: StaticString) {
        let key = Int(bitPattern: type.utf8Start)
        if let e = messagesOut[key] { messagesOut[key] = (e.name, e.count + 1) } else { messagesOut[key] = (type, 1) }
    }
    func countError(_ code: String) { errors[code, default: 0] += 1 }

    func countIn(_ type: StaticString) {
        let key = Int(bitPattern: type.utf8Start)
        if let e = messagesIn[key] { messagesIn[key] = (e.name, e.count + 1) } else { messagesIn[key] = (type, 1) }
    }

    func closed(_ code: UInt16) { closeCodes[code, default: 0] += 1 }

    /// A bound was hit (`limit` is its configuration key).
    func hit(_ limit: String, _ n: Int = 1) { limitHits[limit, default: 0] += n }

    func observeYield(seconds: Int) {
        yieldSum += seconds
        yieldCounts[Metrics.yieldBuckets.firstIndex { seconds <= $0 } ?? Metrics.yieldBuckets.count] += 1
    }

    func observeRoundTrip(ms: Int) {
        rttSum += ms
        let i = Metrics.buckets.firstIndex { ms <= $0 } ?? Metrics.buckets.count
        rttCounts[i] += 1
    }

    func render(connections: Int, bytesIn: Int, bytesOut: Int, extra: [(String, String, Int)]) -> String {
        var out = ""
        func line(_ s: String) { out += s + "\n" }
        func histogram(_ name: String, _ help: String, _ buckets: [Int], _ counts: [Int], _ sum: Int) {
            line("# HELP \(name) \(help)")
            line("# TYPE \(name) histogram")
            var cumulative = 0
            for (i, b) in buckets.enumerated() {
                cumulative += counts[i]
                line("\(name)_bucket{le=\"\(b)\"} \(cumulative)")
            }
            cumulative += counts[buckets.count]
            line("\(name)_bucket{le=\"+Inf\"} \(cumulative)")
            line("\(name)_sum \(sum)")
            line("\(name)_count \(cumulative)")
        }
        line("# HELP switchboard_sessions Sessions by phase.")
        line("# TYPE switchboard_sessions gauge")
        for p in Phase.allCases { line("switchboard_sessions{phase=\"\(p.rawValue)\"} \(phases[p] ?? 0)") }
        line("# HELP switchboard_sessions_created_total Sessions created.")
        line("# TYPE switchboard_sessions_created_total counter")
        line("switchboard_sessions_created_total \(sessionsCreated)")
        line("# HELP switchboard_connections Open TCP connections.")
        line("# TYPE switchboard_connections gauge")
        line("switchboard_connections \(connections)")
        line("# HELP switchboard_peers Connected WebSocket peers by role.")
        line("# TYPE switchboard_peers gauge")
        for r in Role.allCases { line("switchboard_peers{role=\"\(r.rawValue)\"} \(peers[r] ?? 0)") }
        line("# HELP switchboard_bytes_total Bytes received and sent on all sockets.")
        line("# TYPE switchboard_bytes_total counter")
        line("switchboard_bytes_total{direction=\"in\"} \(bytesIn)")
        line("switchboard_bytes_total{direction=\"out\"} \(bytesOut)")
        line("# HELP switchboard_messages_in_total Messages received by type.")
        line("# TYPE switchboard_messages_in_total counter")
        var inByName: [String: Int] = [:]
        for e in messagesIn.values { inByName[e.name.description, default: 0] += e.count }
        for (t, n) in inByName.sorted(by: { $0.key < $1.key }) { line("switchboard_messages_in_total{type=\"\(t)\"} \(n)") }
        line("# HELP switchboard_close_codes_total WebSocket connections of sessions closed, by close code.")
        line("# TYPE switchboard_close_codes_total counter")
        for (c, n) in closeCodes.sorted(by: { $0.key < $1.key }) { line("switchboard_close_codes_total{code=\"\(c)\"} \(n)") }
        histogram("switchboard_yield_seconds", "How long yields to the user lasted.", Metrics.yieldBuckets, yieldCounts, yieldSum)
        line("# HELP switchboard_commands_total Commands accepted.")
        line("# TYPE switchboard_commands_total counter")
        line("switchboard_commands_total \(commands)")
        line("# HELP switchboard_messages_out_total Messages sent by type.")
        line("# TYPE switchboard_messages_out_total counter")
        var byName: [String: Int] = [:]
        for e in messagesOut.values { byName[e.name.description, default: 0] += e.count }
        for (t, n) in byName.sorted(by: { $0.key < $1.key }) { line("switchboard_messages_out_total{type=\"\(t)\"} \(n)") }
        line("# HELP switchboard_errors_total server.error messages by code.")
        line("# TYPE switchboard_errors_total counter")
        for (c, n) in errors.sorted(by: { $0.key < $1.key }) { line("switchboard_errors_total{code=\"\(c)\"} \(n)") }
        line("# HELP switchboard_replays_total Replays sent, and those with complete:false.")
        line("# TYPE switchboard_replays_total counter")
        line("switchboard_replays_total \(replays)")
        line("# TYPE switchboard_replays_incomplete_total counter")
        line("switchboard_replays_incomplete_total \(incompleteReplays)")
        histogram("switchboard_command_rtt_ms", "Command round trip, worker send to client response.", Metrics.buckets, rttCounts, rttSum)
        line("# HELP switchboard_cdp_channels Open CDP channels.")
        line("# TYPE switchboard_cdp_channels gauge")
        line("switchboard_cdp_channels \(cdpChannels)")
        line("# HELP switchboard_cdp_frames_total CDP frames relayed, by direction.")
        line("# TYPE switchboard_cdp_frames_total counter")
        line("switchboard_cdp_frames_total{direction=\"worker_to_client\"} \(cdpFrames[0])")
        line("switchboard_cdp_frames_total{direction=\"client_to_worker\"} \(cdpFrames[1])")
        line("# HELP switchboard_cdp_bytes_total Bytes of CDP frames relayed, by direction.")
        line("# TYPE switchboard_cdp_bytes_total counter")
        line("switchboard_cdp_bytes_total{direction=\"worker_to_client\"} \(cdpBytes[0])")
        line("switchboard_cdp_bytes_total{direction=\"client_to_worker\"} \(cdpBytes[1])")
        line("# HELP switchboard_cdp_refused_total CDP commands refused because they would end the user's browser.")
        line("# TYPE switchboard_cdp_refused_total counter")
        line("switchboard_cdp_refused_total \(cdpRefused)")
        line("# HELP switchboard_limit_hits_total Times a configured bound was hit, by its configuration key.")
        line("# TYPE switchboard_limit_hits_total counter")
        for (k, n) in limitHits.sorted(by: { $0.key < $1.key }) { line("switchboard_limit_hits_total{limit=\"\(k)\"} \(n)") }
        for (name, type, value) in extra {
            line("# TYPE \(name) \(type)")
            line("\(name) \(value)")
        }
        return out
    }
}
