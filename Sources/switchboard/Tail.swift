import ArgumentParser
import Glibc
import SwitchboardProtocol

struct Tail: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the JSONL traffic log readably.",
        discussion: "One line per entry: time, session, direction and message type, id and seq. --json prints the raw lines."
    )

    @Option(help: "The traffic log to read.") var file = "switchboard-data/traffic.jsonl"
    @Option(help: "Only entries of this session.") var session: String?
    @Flag(help: "Keep reading as the log grows (like tail -f).") var follow = false
    @Flag(help: "Print the raw JSON lines.") var json = false

    func run() throws {
        guard let f = fopen(file, "r") else { throw ValidationError("cannot open \(file)") }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 1 << 20)
        var partial = ""
        while true {
            if fgets(&line, Int32(line.count), f) != nil {
                let text = partial + String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                guard text.hasSuffix("\n") else { partial = text; continue }
                partial = ""
                show(String(text.dropLast()))
            } else if follow {
                clearerr(f)
                usleep(200_000)
            } else {
                break
            }
        }
    }

    func show(_ line: String) {
        guard let v = try? JSONParser.parse(line), let o = v.objectValue else { return }
        if let session, o["session"]?.stringValue != session { return }
        if json { say(line); return }
        let ts = o["ts"]?.stringValue ?? ""
        let sess = o["session"]?.stringValue ?? "-"
        let event = o["event"]?.stringValue ?? ""
        var text = "\(ts) \(sess) "
        switch event {
        case "message":
            let dir = (o["direction"]?.stringValue ?? "").replacingArrows()
            text += "\(dir) \(o["type"]?.stringValue ?? "")"
            if let id = o["id"]?.stringValue { text += " id=\(id)" }
            if let seq = o["seq"]?.intValue { text += " seq=\(seq)" }
            text += " (\(o["bytes"]?.intValue ?? 0) B)"
        case "cdp":
            let message = o["message"]
            text += "cdp[\(o["channel"]?.intValue ?? 0)] \((o["direction"]?.stringValue ?? "").replacingArrows())"
            if let m = o["method"]?.stringValue { text += " \(m)" }
            if let id = message?["id"]?.intValue { text += " id=\(id)" }
            if message?["error"] != nil { text += " error" }
            text += " (\(o["bytes"]?.intValue ?? 0) B)"
        case "phase":
            text += "phase \(o["from"]?.stringValue ?? "") -> \(o["to"]?.stringValue ?? "")"
        default:
            let rest = JSONObject(o.members.filter { !["ts", "session", "event"].contains($0.key) }.map { ($0.key, $0.value) })
            text += "\(event) \(JSONWriter.string(.object(rest)))"
        }
        say(text)
    }
}

private extension String {
    func replacingArrows() -> String {
        switch self {
        case "worker_to_server": return "worker -> server"
        case "server_to_worker": return "server -> worker"
        case "client_to_server": return "client -> server"
        case "server_to_client": return "server -> client"
        case "worker_to_client": return "worker -> client"
        case "client_to_worker": return "client -> worker"
        default: return self
        }
    }
}
