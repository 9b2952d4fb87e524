import WebSocketCore

/// A parsed HTTP/1.1 request.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The request target as sent (path and query).
    public var target: String
    public var version: String
    public var headers: HTTPHeaders
    public var body: [UInt8]
    public var remoteAddress: String = ""

    /// The path, percent-decoded, without the query.
    public var path: String {
        let p = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        return HTTPRequest.percentDecode(p) ?? p
    }

    /// Query parameters (the first value of each name), percent- and plus-decoded.
    public var query: [String: String] {
        guard let q = target.firstIndex(of: "?") else { return [:] }
        var out: [String: String] = [:]
        for pair in target[target.index(after: q)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = HTTPRequest.percentDecode(kv[0].replacingPlus()) ?? String(kv[0])
            let v = kv.count > 1 ? (HTTPRequest.percentDecode(kv[1].replacingPlus()) ?? String(kv[1])) : ""
            if out[k] == nil { out[k] = v }
        }
        return out
    }

    static func percentDecode<S: StringProtocol>(_ s: S) -> String? {
        var out = [UInt8]()
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "%") {
                guard it.count >= 2, let h = hex(it.popFirst()!), let l = hex(it.popFirst()!) else { return nil }
                out.append(h << 4 | l)
            } else {
                out.append(c)
            }
        }
        guard UTF8Validator.isValid(out) else { return nil }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

private extension Substring {
    func replacingPlus() -> String { String(self.map { $0 == "+" ? " " : $0 }) }
}

/// An HTTP response to write.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status; self.headers = headers; self.body = body
    }

    public init(status: Int, json: String, headers: [(String, String)] = []) {
        self.init(status: status, headers: [("Content-Type", "application/json")] + headers, body: Array(json.utf8))
    }

    public init(status: Int, text: String, contentType: String = "text/plain; charset=utf-8") {
        self.init(status: status, headers: [("Content-Type", contentType)], body: Array(text.utf8))
    }

    public static func reason(_ status: Int) -> String {
        switch status {
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 426: return "Upgrade Required"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 503: return "Service Unavailable"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(status)"
        }
    }

    public func serialize(keepAlive: Bool, headOnly: Bool = false) -> [UInt8] {
        var head = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "Content-Length: \(body.count)\r\n"
        head += keepAlive ? "" : "Connection: close\r\n"
        head += "\r\n"
        var out = Array(head.utf8)
        if !headOnly { out.append(contentsOf: body) }
        return out
    }
}

/// Incremental HTTP/1.1 request parser with limits. Bytes are appended as they arrive;
/// `next()` returns a complete request, nil when more bytes are needed, or throws the status
/// to answer with (400 malformed, 431 head too large / too many headers, 413 body too large,
/// 501 transfer codings).
public struct HTTPRequestParser: Sendable {
    public struct Limits: Sendable {
        public var maxHeadSize = 16 << 10
        public var maxHeaders = 100
        public var maxBodySize = 1 << 20
        public init(maxHeadSize: Int = 16 << 10, maxHeaders: Int = 100, maxBodySize: Int = 1 << 20) {
            self.maxHeadSize = maxHeadSize; self.maxHeaders = maxHeaders; self.maxBodySize = maxBodySize
        }
    }

    public struct Failure: Error, Equatable, Sendable {
        public var status: Int
        public var message: String
    }

    public let limits: Limits
    private(set) var buffer: [UInt8] = []
    /// Bytes of `buffer` already consumed by returned requests (compacted in bulk, so that
    /// many pipelined requests cost linear time, not a shift each).
    private var consumed = 0
    private var scanFrom = 0
    private var pendingHead: HTTPRequest? = nil
    private var bodyLength = 0

    public init(limits: Limits = Limits()) { self.limits = limits }

    public var bufferedCount: Int { buffer.count - consumed }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if consumed > 0 && consumed * 2 >= buffer.count {
            buffer.removeSubrange(0..<consumed)
            scanFrom -= consumed
            consumed = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// Bytes received after the last complete request (e.g. WebSocket frames after an upgrade).
    public mutating func takeRemainder() -> [UInt8] {
        let r = Array(buffer[consumed...])
        buffer = []
        consumed = 0
        scanFrom = 0
        return r
    }

    public mutating func next() throws(Failure) -> HTTPRequest? {
        if pendingHead == nil {
            // Find the blank line that ends the head.
            guard let end = findHeadEnd() else {
                if bufferedCount > limits.maxHeadSize { throw Failure(status: 431, message: "request head larger than \(limits.maxHeadSize) bytes") }
                return nil
            }
            if end - consumed > limits.maxHeadSize { throw Failure(status: 431, message: "request head larger than \(limits.maxHeadSize) bytes") }
            let head = try parseHead(buffer[consumed..<end])
            consumed = end + 4
            scanFrom = consumed
            pendingHead = head.request
            bodyLength = head.bodyLength
        }
        guard bufferedCount >= bodyLength, var request = pendingHead else { return nil }
        request.body = Array(buffer[consumed..<(consumed + bodyLength)])
        consumed += bodyLength
        scanFrom = consumed
        if consumed == buffer.count { buffer.removeAll(keepingCapacity: buffer.capacity <= 64 << 10); consumed = 0; scanFrom = 0 }
        pendingHead = nil
        bodyLength = 0
        return request
    }

    private mutating func findHeadEnd() -> Int? {
        let n = buffer.count
        guard n - consumed >= 4 else { return nil }
        var i = max(consumed, scanFrom - 3)
        while i + 3 < n {
            if buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { return i }
            i += 1
        }
        scanFrom = n
        return nil
    }

    private func parseHead(_ bytes: ArraySlice<UInt8>) throws(Failure) -> (request: HTTPRequest, bodyLength: Int) {
        func bad(_ m: String) -> Failure { Failure(status: 400, message: m) }
        let lines = bytes.split(separator: 10, omittingEmptySubsequences: false).map { line -> ArraySlice<UInt8> in
            line.last == 13 ? line.dropLast() : line
        }
        guard let requestLine = lines.first, !requestLine.isEmpty else { throw bad("empty request line") }
        guard requestLine.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { throw bad("invalid characters in request line") }
        let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else { throw bad("malformed request line") }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        let version = String(decoding: parts[2], as: UTF8.self)
        guard method.utf8.allSatisfy({ isTokenChar($0) }) else { throw bad("malformed method") }
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else {
            if version.hasPrefix("HTTP/") { throw Failure(status: 505, message: "HTTP version \(version) not supported") }
            throw bad("malformed HTTP version")
        }
        guard target.hasPrefix("/") || target == "*" else { throw bad("request target must be a path") }
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            if line.isEmpty { continue }
            if line.first == 0x20 || line.first == 0x09 { throw bad("obsolete header line folding") }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw bad("header line without a colon") }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy({ isTokenChar($0) }) else { throw bad("malformed header name") }
            let value = line[(colon + 1)...]
            guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else { throw bad("invalid characters in header value") }
            headers.add(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self).trimmingHTTPSpaces())
            if headers.count > limits.maxHeaders { throw Failure(status: 431, message: "more than \(limits.maxHeaders) header fields") }
        }
        if version == "HTTP/1.1" && headers["Host"] == nil { throw bad("missing Host header") }
        if headers["Transfer-Encoding"] != nil { throw Failure(status: 501, message: "transfer codings are not supported; send Content-Length") }
        var length = 0
        let lengths = headers.values("Content-Length")
        if !lengths.isEmpty {
            guard Set(lengths).count == 1, let l = Int(lengths[0]), l >= 0, lengths[0].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw bad("invalid Content-Length")
            }
            guard l <= limits.maxBodySize else { throw Failure(status: 413, message: "request body larger than \(limits.maxBodySize) bytes") }
            length = l
        }
        return (HTTPRequest(method: method, target: target, version: version, headers: headers, body: []), length)
    }

    private func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }
}

private extension String {
    func trimmingHTTPSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
