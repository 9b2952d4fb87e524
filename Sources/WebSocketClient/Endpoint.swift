import WebSocketCore

/// Where a client connects: parsed from a `ws://`, `wss://`, `http://` or `https://` URL.
public struct Endpoint: Sendable, Equatable {
    /// A host name or an IP address (IPv6 without brackets).
    public var host: String
    /// The TCP port (the scheme's default when the URL has none).
    public var port: Int
    /// True for `wss://` and `https://`.
    public var tls: Bool
    /// Path and query, e.g. `/sessions/s1/ws?role=worker`.
    public var target: String

    /// The `Host` header value (IPv6 literals in brackets, the port unless it is the default).
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (tls ? 443 : 80) ? h : "\(h):\(port)"
    }

    public init(host: String, port: Int, tls: Bool, target: String) {
        self.host = host; self.port = port; self.tls = tls; self.target = target
    }

    /// Parses `url`; nil when it is not an absolute ws/wss/http/https URL with a host.
    public init?(_ url: String) {
        guard let schemeEnd = url.range(of: "://") else { return nil }
        switch url[..<schemeEnd.lowerBound].lowercased() {
        case "ws", "http": tls = false
        case "wss", "https": tls = true
        default: return nil
        }
        var rest = url[schemeEnd.upperBound...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        target = authorityEnd == rest.endIndex ? "/" : String(rest[authorityEnd...])
        if target.hasPrefix("?") { target = "/" + target }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        var portText: Substring? = nil
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { return nil }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { return nil }
        if let portText {
            guard portText.count <= 5, let p = Int(portText), (1...65535).contains(p) else { return nil }
            port = p
        } else {
            port = tls ? 443 : 80
        }
    }
}

/// An HTTP/1.1 response head, parsed by the client (WebSocket handshake, REST calls).
public struct ResponseHead: Sendable {
    /// The HTTP status code.
    public var status: Int
    /// The response headers, in order.
    public var headers: HTTPHeaders
    /// Bytes of the head including the blank line.
    public var length: Int

    /// The largest head accepted.
    public static let maxSize = 64 << 10

    /// The outcome of `parse`.
    public enum Parse: Sendable {
        case needMore
        case done(ResponseHead)
        case invalid(String)
    }

    /// Parses the head at the start of `bytes` (nothing is consumed until it is complete).
    public static func parse(_ bytes: ArraySlice<UInt8>) -> Parse {
        guard let end = headEnd(bytes) else {
            return bytes.count > maxSize ? .invalid("response head over \(maxSize) bytes") : .needMore
        }
        let text = String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard !lines.isEmpty else { return .invalid("empty response") }
        let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), statusLine[1].count == 3,
              let status = Int(statusLine[1]), (100...599).contains(status) else {
            return .invalid("bad status line")
        }
        var headers = HTTPHeaders()
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { return .invalid("bad header line") }
            headers.add(String(line[..<colon]), String(line[line.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" })))
        }
        return .done(ResponseHead(status: status, headers: headers, length: end + 4 - bytes.startIndex))
    }

    private static func headEnd(_ b: ArraySlice<UInt8>) -> Int? {
        guard b.count >= 4 else { return nil }
        var i = b.startIndex
        while i + 3 < b.endIndex {
            if b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
            i += 1
        }
        return nil
    }
}
