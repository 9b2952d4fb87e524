// libFuzzer entry points for the parsers (scripts/fuzz.sh). Each target is compiled with its
// own -D FUZZ_<TARGET>; the session target lives in Session.swift.
@testable import SocketServer
@testable import SwitchboardProtocol
@testable import SwitchboardServer
import WebSocketCore

/// The fuzz input as bytes.
func input(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

#if FUZZ_HTTP
/// The request parser fed in pieces (the first byte picks the split), each request then
/// checked as a WebSocket upgrade, with its path and query decoded.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    guard let first = bytes.first else { return 0 }
    var parser = HTTPRequestParser(limits: .init(maxHeadSize: 4096, maxHeaders: 32, maxBodySize: 4096))
    // Pieces of 1 to 2 041 bytes: requests split at every kind of boundary.
    let step = Int(first) * 8 + 1
    var offset = 1
    while offset < bytes.count {
        let end = min(bytes.count, offset + step)
        bytes[offset..<end].withUnsafeBytes { parser.append($0) }
        offset = end
        while true {
            guard let request = try? parser.next() else { break }
            _ = request.path
            _ = request.query
            _ = Handshake.isUpgradeRequest(request.headers)
            _ = Handshake.validate(method: request.method, version: request.version, headers: request.headers, deflate: DeflatePolicy())
        }
    }
    _ = parser.takeRemainder()
    return 0
}
#endif

#if FUZZ_FRAMES
/// Client frames (masked and unmasked) through frame parsing, message assembly and UTF-8
/// validation, fed in pieces; small limits so that size checks are reached, the message limit
/// above the frame limit or below it (a first frame the frame limit lets through, refused by
/// the message limit). No message delivered is over the message limit.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    guard let first = bytes.first else { return 0 }
    let limits = InboundProcessor.Limits(maxFrameSize: 1 << 16, maxMessageSize: first & 2 == 0 ? 1 << 17 : 1 << 8)
    var p = InboundProcessor(limits: limits, requireMask: first & 1 == 0)
    let step = Int(first >> 1) + 1
    var offset = 1
    do {
        while offset < bytes.count {
            let end = min(bytes.count, offset + step)
            // A small budget: most reads stop early and go on from where they stopped.
            var chunk = Array(bytes[offset..<end])
            var used = 0
            while used < chunk.count {
                let n = try chunk[used...].withUnsafeMutableBytes {
                    try p.process($0, budget: 64) { m in
                        switch m {
                        case .text(let r), .binary(let r): precondition(r.count <= limits.maxMessageSize, "a message over the limit")
                        default: break
                        }
                    }
                }
                if n == 0 { break }
                used += n
            }
            offset = end
        }
    } catch {
        // Every failure maps to a close code (checked by the frame layer's own tests).
    }
    return 0
}
#endif

#if FUZZ_INFLATE
/// Compressed messages (RSV1) through the frame layer with a shared and a private inflater,
/// with a small message limit: a deflate bomb must stop at the limit.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var bytes = input(data, size)
    guard let first = bytes.first else { return 0 }
    var p = InboundProcessor(limits: .init(maxFrameSize: 1 << 16, maxMessageSize: 1 << 16), requireMask: false,
                             inflater: Inflater(resetAfterMessage: first & 1 == 0))
    do {
        _ = try bytes[1...].withUnsafeMutableBytes { try p.process($0) { m in
            if case .text(let t) = m { precondition(t.count <= 1 << 16, "inflated past the limit") }
        } }
    } catch {
        // Every failure maps to a close code (checked by the frame layer's own tests).
    }
    return 0
}
#endif

#if FUZZ_JSON
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    let parsed = try? JSONParser.parse(bytes)
    // Whatever the input, a compact log line holds no byte below 0x20, and a refusal writes nothing.
    var anyLine = JSONWriter()
    if !bytes.withUnsafeBufferPointer({ anyLine.write(compacting: $0, cuttingStringsOver: bytes.count % 19) }) {
        precondition(anyLine.bytes.isEmpty, "a refused compact line left bytes behind")
    }
    precondition(!anyLine.bytes.contains { $0 < 0x20 }, "a compact line holds a control byte")
    // A full parse validates every string it builds (ASCII strings skip the validator): text
    // that is not UTF-8 is never accepted.
    if parsed != nil { precondition(String(validating: bytes, as: UTF8.self) != nil, "accepted JSON that is not UTF-8") }
    // Integers are written as `String` writes them, at every magnitude.
    if bytes.count >= 8 {
        let v = bytes.withUnsafeBytes { $0.loadUnaligned(as: Int.self) }
        var w = JSONWriter()
        w.int(v)
        precondition(w.bytes == Array(String(v).utf8), "JSONWriter.int(\(v)) wrote \(w.bytes)")
    }
    if let v = parsed {
        // What we write parses again, and writes the same bytes.
        let written = JSONWriter.serialize(v)
        guard let again = try? JSONParser.parse(written) else { fatalError("wrote JSON that does not parse") }
        precondition(JSONWriter.serialize(again) == written, "JSON write/parse round trip changed the value")
        _ = v.intValue
        _ = v.estimatedSize
        // Written compactly for the log, with long string values cut: one line, and the value
        // the cut tree has.
        let bound = bytes.count % 23
        var c = JSONWriter()
        let ok = bytes.withUnsafeBufferPointer { c.write(compacting: $0, cuttingStringsOver: bound) }
        precondition(ok, "valid JSON was not written compactly")
        precondition(!c.bytes.contains { $0 < 0x20 }, "a compact line holds a control byte")
        guard let compacted = try? JSONParser.parse(c.bytes) else { fatalError("wrote compact JSON that does not parse") }
        // Compared as written (JSON's `==` does not tell duplicate keys apart).
        precondition(JSONWriter.serialize(compacted) == JSONWriter.serialize(TrafficLog.scrub(v, maxString: bound, redact: false)), "compact JSON differs from the cut tree")
    }
    bytes.withUnsafeBytes { raw in
        _ = try? JSONParser.parseObject(raw, build: { $0.count % 2 == 0 })
    }
    return 0
}
#endif

#if FUZZ_INBOUND
/// The inbound decoder for both roles (catalog validation, numbers, timestamps, patterns),
/// and every string that validates as a pattern matched against the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    let limits = InboundLimits(maxCommandTimeoutMs: 600_000, maxYieldTimeoutMs: 86_400_000)
    for role in [Role.worker, .client] {
        if case .success(let m) = InboundDecoder.decode(bytes, role: role, receivedAt: 1_700_000_000_000, limits: limits) {
            switch m {
            case .command(let c):
                let t = CommandCatalog.effectiveTimeout(command: c.command, params: c.params, timeoutMs: c.timeoutMs,
                                                        sessionDefault: 30_000, limit: limits.maxCommandTimeoutMs)
                precondition(t >= 0 && t <= limits.maxCommandTimeoutMs, "timeout out of range")
            case .telemetry(_, let events):
                for e in events { precondition(e.ts.map { WireNumbers.timestampRange.contains($0) } ?? true, "timestamp out of range") }
            case .yield(let y):
                for c in y.conditions {
                    for key in ["pattern", "url"] {
                        if let p = c[key]?.stringValue, let pattern = try? Pattern(p) {
                            _ = pattern.search(Array(String(decoding: bytes, as: UTF8.self).unicodeScalars), budget: 100_000)
                        }
                    }
                }
            default: break
            }
        }
    }
    // The input itself as a pattern, matched against itself.
    let text = String(decoding: bytes, as: UTF8.self)
    if let p = try? Pattern(text) { _ = p.search(Array(text.unicodeScalars), budget: 100_000) }
    _ = ISO8601.parse(text)
    return 0
}
#endif
