import Foundation
import SocketServer
import WebSocketCore

/// A minimal HTTP/1.1 client for JSON APIs on the same transport as `WebSocket` (TCP, TLS
/// through OpenSSL with verification): one connection per request, `Connection: close`.
public enum HTTPClient {
    /// A complete response.
    public struct Response: Sendable {
        /// The HTTP status code.
        public var status: Int
        /// The response headers.
        public var headers: HTTPHeaders
        /// The body, de-chunked.
        public var body: [UInt8]
    }

    /// Limits and TLS trust of a request.
    public struct Options: Sendable {
        /// The whole request: connect, send and receive.
        public var timeoutMs = 30_000
        /// Largest response body accepted.
        public var maxBodySize = 64 << 20
        /// A PEM file of certificates to trust besides the system store.
        public var trustedCertificatesFile: String? = nil
        public init() {}
    }

    /// Performs one request and returns the complete response; throws `TransportError`.
    public static func request(_ method: String, _ url: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                               options: Options = Options()) async throws -> Response {
        guard let endpoint = Endpoint(url) else { throw TransportError("not an http:// or https:// URL: \(url)") }
        return try await runBlocking { () throws(TransportError) in
            try perform(method, endpoint, headers: headers, body: body, options: options)
        }
    }

    static func perform(_ method: String, _ endpoint: Endpoint, headers: [(String, String)], body: [UInt8]?,
                        options: Options) throws(TransportError) -> Response {
        let deadline = nowMillis() + Int64(options.timeoutMs)
        let tls: TLSClientContext?
        do { tls = endpoint.tls ? try TLSClientContext(trustedCertificatesFile: options.trustedCertificatesFile) : nil } catch {
            throw TransportError(error.description)
        }
        let socket = try ClientSocket.connect(endpoint, tls: tls, deadline: deadline)
        defer { socket.close() }
        var head = "\(method) \(endpoint.target) HTTP/1.1\r\nHost: \(endpoint.hostHeader)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try socket.send(Array(head.utf8) + (body ?? []))
        try socket.flushAll(deadline: deadline)
        var buffer: [UInt8] = []
        var parsed: ResponseHead? = nil
        var eof = false
        while !eof {
            guard let bytes = try socket.receive(deadline: deadline) else { throw TransportError("\(method) \(endpoint.target) timed out") }
            if bytes.isEmpty { eof = true } else { buffer.append(contentsOf: bytes) }
            if parsed == nil {
                switch ResponseHead.parse(buffer[...]) {
                case .needMore: if eof { throw TransportError("the connection closed before a response") }; continue
                case .invalid(let why): throw TransportError("invalid response: \(why)")
                case .done(let h): parsed = h
                }
            }
            guard let h = parsed else { continue }
            if buffer.count - h.length > options.maxBodySize { throw TransportError("response body over \(options.maxBodySize) bytes") }
            if let body = complete(h, buffer[h.length...], eof: eof) { return Response(status: h.status, headers: h.headers, body: body) }
        }
        throw TransportError("the connection closed before the response was complete")
    }

    /// The body once it is complete: by `Content-Length`, chunked, or up to the close.
    static func complete(_ head: ResponseHead, _ rest: ArraySlice<UInt8>, eof: Bool) -> [UInt8]? {
        if head.status == 204 || head.status == 304 || (100..<200).contains(head.status) { return [] }
        if head.headers.tokens("Transfer-Encoding").contains("chunked") { return dechunk(rest) }
        if let text = head.headers["Content-Length"], let length = Int(text.trimmingCharacters(in: .whitespaces)), length >= 0 {
            return rest.count >= length ? Array(rest.prefix(length)) : nil
        }
        return eof ? Array(rest) : nil
    }

    /// A chunked body once its last chunk has arrived.
    static func dechunk(_ b: ArraySlice<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        var i = b.startIndex
        while true {
            guard let lineEnd = b[i...].firstIndex(of: 10), lineEnd > i, b[lineEnd - 1] == 13 else { return nil }
            let sizeText = String(decoding: b[i..<(lineEnd - 1)], as: UTF8.self).split(separator: ";").first ?? ""
            guard sizeText.count <= 8, let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { return nil }
            i = lineEnd + 1
            if size == 0 { return out }
            guard b.endIndex - i >= size + 2 else { return nil }
            out.append(contentsOf: b[i..<(i + size)])
            i += size + 2
        }
    }
}
