import ArgumentParser
import Glibc
import SocketServer
import SwitchboardServer
import SwitchboardProtocol

/// `switchboard bench-store`: what the durable store costs per relayed command, with no
/// sockets and no relay around it. It commits the writes one relayed command makes (the
/// worker's command, the `server.command`, the client's response and the
/// `server.command_result` as journal entries, and a state snapshot after each side) for
/// `--sessions` sessions in turn, `--batch` commands per commit, one commit after the other,
/// through the store's own writer. It prints the CPU the store's threads spent per command
/// (the thread that makes the writes, which the event loop is in the relay, left out) and the
/// wall time per commit. `scripts/store-floor.sh` runs it.
struct BenchStore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-store",
        abstract: "Measure the durable store's CPU per relayed command (no sockets).",
        shouldDisplay: false
    )

    @Option(help: "Sessions the commands go to, in turn.") var sessions = 100
    @Option(help: "Commands to commit.") var commands = 100_000
    @Option(help: "Commands per commit.") var batch = 20
    @Option(help: "Bytes of each message body.") var bodyBytes = 300

    func validate() throws {
        guard (1...100_000).contains(sessions), (1...100_000_000).contains(commands), (1...10_000).contains(batch),
              (1...1 << 20).contains(bodyBytes) else {
            throw ValidationError("sessions 1…100 000, commands 1…100 000 000, batch 1…10 000, body-bytes 1…1 MiB")
        }
    }

    func run() throws {
        var template = Array("/tmp/switchboard-bench-store-XXXXXX".utf8CString)
        guard let dirPointer = mkdtemp(&template) else { throw StartupError("cannot make a temporary directory") }
        let dir = String(cString: dirPointer)
        let path = dir + "/switchboard.db"
        defer {
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
            rmdir(dir)
        }
        let loop = try EventLoop.spawn()
        defer { loop.stop() }
        let store = try SQLiteStore(path: path, loop: loop)
        defer { store.close() }

        let ids = (0..<sessions).map { "bench-\($0)" }
        let body = ArraySlice(repeating: UInt8(ascii: "x"), count: bodyBytes)
        var entry = [Int](repeating: 0, count: sessions)
        var seq = [Int](repeating: 0, count: sessions)
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw StartupError("pipe: errno \(errno)") }
        defer { close(fds[0]); close(fds[1]) }
        let signal = fds[1]

        var ops: [StoreOp] = []
        var byte: UInt8 = 0
        var commits = 0
        let cpu0 = processCPU(), own0 = threadCPU(), wall0 = monotonicNanos()
        var done = 0
        while done < commands {
            ops.removeAll(keepingCapacity: true)
            for _ in 0..<min(batch, commands - done) {
                let s = done % sessions, id = ids[s]
                func add(_ direction: StaticString, _ message: StreamPosition?) {
                    entry[s] += 1
                    ops.append(.journal(session: id, n: entry[s], direction: direction, ts: epochMillis(), body: body,
                                        message: message, journaled: true))
                }
                seq[s] += 1
                let commandId = "c\(seq[s])"
                add("worker_to_server", nil)
                add("server_to_client", StreamPosition(stream: 1, seq: seq[s], commandId: commandId))
                ops.append(.updateState(id: id, state: state(seq[s], pending: commandId)))
                add("client_to_server", nil)
                add("server_to_worker", StreamPosition(stream: 0, seq: seq[s], commandId: nil))
                ops.append(.updateState(id: id, state: state(seq[s], pending: nil)))
                done += 1
            }
            store.submit(ops) { var b: UInt8 = 1; _ = write(signal, &b, 1) }
            guard read(fds[0], &byte, 1) == 1 else { throw StartupError("lost the writer's completion") }
            commits += 1
        }
        let wall = Double(monotonicNanos() - wall0) / 1e3
        let storeCPU = (processCPU() - cpu0) - (threadCPU() - own0)
        say("SQLite store: \(commands) commands, \(sessions) sessions, \(batch) per commit, \(bodyBytes)-byte bodies")
        say("store CPU per command: \(format(storeCPU / Double(commands))) µs; wall per commit: \(format(wall / Double(commits))) µs; commits: \(commits)")
    }

    /// A state snapshot of the size and shape the relay writes.
    func state(_ n: Int, pending: String?) -> [UInt8] {
        var text = "{\"lastClientSeq\":\(n),\"commandCounter\":\(n),\"commandCount\":\(n),\"seqReserved\":{\"worker\":10000,\"client\":10000},\"grace\":{}"
        if let pending {
            text += ",\"pending\":{\"id\":\"\(pending)\",\"kind\":\"command\",\"command\":\"evaluate\",\"deadline\":1700000000000,\"startedAt\":1700000000000,\"optional\":false}"
        }
        return Array((text + "}").utf8)
    }

    func format(_ v: Double) -> String {
        let tenths = Int((v * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// CPU time of the whole process, in microseconds.
    func processCPU() -> Double { cpu(CLOCK_PROCESS_CPUTIME_ID) }
    /// CPU time of the calling thread, in microseconds.
    func threadCPU() -> Double { cpu(CLOCK_THREAD_CPUTIME_ID) }
    func cpu(_ clock: clockid_t) -> Double {
        var t = timespec()
        clock_gettime(clock, &t)
        return Double(t.tv_sec) * 1e6 + Double(t.tv_nsec) / 1e3
    }
}
