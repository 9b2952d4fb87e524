import Foundation
#if canImport(WebSocketClient)
import WebSocketClient
#endif
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Transport settings shared by the REST client and the WebSocket connections.
public struct TransportOptions: Sendable {
    /// A PEM file of certificates to trust besides the system's (a private CA, a test
    /// certificate). Linux only; on Apple platforms trust comes from the system.
    public var trustedCertificatesFile: String?
    /// Offer permessage-deflate on WebSocket connections.
    public var compression: Bool
    /// TCP connect, TLS handshake and upgrade together.
    public var connectTimeoutMs: Int
    /// REST calls give up after this long.
    public var requestTimeoutMs: Int
    /// A ping goes out after this long without a frame; the connection is given up (and
    /// reconnected) after `idleTimeoutMs` without any.
    public var pingIntervalMs: Int
    /// Silence after which a connection is given up and reconnected.
    public var idleTimeoutMs: Int

    public init(trustedCertificatesFile: String? = nil, compression: Bool = true, connectTimeoutMs: Int = 10_000,
                requestTimeoutMs: Int = 30_000, pingIntervalMs: Int = 20_000, idleTimeoutMs: Int = 40_000) {
        self.trustedCertificatesFile = trustedCertificatesFile
        self.compression = compression
        self.connectTimeoutMs = connectTimeoutMs
        self.requestTimeoutMs = requestTimeoutMs
        self.pingIntervalMs = pingIntervalMs
        self.idleTimeoutMs = idleTimeoutMs
    }
}

/// One WebSocket as the SDK uses it: text messages in and out, then one close.
protocol MessageSocket: Sendable {
    var incoming: any AsyncSequence<SocketEvent, Never> { get }
    func send(_ text: [UInt8])
    func close(code: UInt16)
}

enum SocketEvent: Sendable {
    case text([UInt8])
    case closed(code: UInt16, reason: String)
}

struct HTTPResult: Sendable {
    var status: Int
    var body: [UInt8]
}

/// The platform's transport: the project's own client on Linux (Foundation's WebSocket task
/// needs a libcurl with WebSocket support, which Debian 12 lacks), URLSession elsewhere.
enum Transport {
    /// Thrown when the server refused the upgrade with an HTTP status.
    struct Refused: Error { var status: Int; var body: [UInt8] }

    #if canImport(WebSocketClient)
    static func connect(_ url: String, headers: [(String, String)], options: TransportOptions) async throws -> any MessageSocket {
        var o = WebSocket.Options()
        o.headers = headers
        o.compression = options.compression
        o.connectTimeoutMs = options.connectTimeoutMs
        o.pingIntervalMs = options.pingIntervalMs
        o.idleTimeoutMs = options.idleTimeoutMs
        o.trustedCertificatesFile = options.trustedCertificatesFile
        do {
            return OwnSocket(try await WebSocket.connect(to: url, options: o))
        } catch let e as TransportError {
            if let status = e.status { throw Refused(status: status, body: e.body ?? []) }
            throw SwitchboardError.transport(e.description)
        }
    }

    static func request(_ method: String, _ url: String, headers: [(String, String)], body: [UInt8]?,
                        options: TransportOptions) async throws -> HTTPResult {
        var o = HTTPClient.Options()
        o.timeoutMs = options.requestTimeoutMs
        o.trustedCertificatesFile = options.trustedCertificatesFile
        do {
            let r = try await HTTPClient.request(method, url, headers: headers, body: body, options: o)
            return HTTPResult(status: r.status, body: r.body)
        } catch let e as TransportError {
            throw SwitchboardError.transport(e.description)
        }
    }

    struct OwnSocket: MessageSocket {
        let ws: WebSocket
        init(_ ws: WebSocket) { self.ws = ws }
        /// The connection's own events, mapped as they are read (the protocol is text only).
        var incoming: any AsyncSequence<SocketEvent, Never> {
            ws.events.compactMap { e -> SocketEvent? in
                switch e {
                case .text(let t): return .text(t)
                case .binary: return nil
                case .closed(let code, let reason): return .closed(code: code, reason: reason)
                }
            }
        }
        func send(_ text: [UInt8]) { ws.send(text: text) }
        func close(code: UInt16) { ws.close(code: code) }
    }
    #else
    static func connect(_ url: String, headers: [(String, String)], options: TransportOptions) async throws -> any MessageSocket {
        guard let u = URL(string: url) else { throw SwitchboardError.transport("not a URL: \(url)") }
        var request = URLRequest(url: u, timeoutInterval: Double(options.connectTimeoutMs) / 1000)
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        let task = URLSession.shared.webSocketTask(with: request)
        task.maximumMessageSize = 64 << 20
        task.resume()
        let socket = URLSessionSocket(task: task)
        // URLSession connects lazily: the first receive tells whether the upgrade worked.
        return socket
    }

    static func request(_ method: String, _ url: String, headers: [(String, String)], body: [UInt8]?,
                        options: TransportOptions) async throws -> HTTPResult {
        guard let u = URL(string: url) else { throw SwitchboardError.transport("not a URL: \(url)") }
        var request = URLRequest(url: u, timeoutInterval: Double(options.requestTimeoutMs) / 1000)
        request.httpMethod = method
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        if let body { request.httpBody = Data(body) }
        do {
            let (data, response) = try await URLSession.shared.data(for: request)
            return HTTPResult(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: Array(data))
        } catch {
            throw SwitchboardError.transport(error.localizedDescription)
        }
    }

    final class URLSessionSocket: MessageSocket, @unchecked Sendable {
        let task: URLSessionWebSocketTask
        let stream: AsyncStream<SocketEvent>
        var incoming: any AsyncSequence<SocketEvent, Never> { stream }
        init(task: URLSessionWebSocketTask) {
            self.task = task
            stream = AsyncStream { c in
                let reader = Task {
                    while true {
                        do {
                            switch try await task.receive() {
                            case .string(let s): c.yield(.text(Array(s.utf8)))
                            case .data: break
                            @unknown default: break
                            }
                        } catch {
                            let code = task.closeCode == .invalid ? 1006 : UInt16(task.closeCode.rawValue)
                            c.yield(.closed(code: code, reason: task.closeReason.map { String(decoding: $0, as: UTF8.self) } ?? "\(error)"))
                            c.finish()
                            return
                        }
                    }
                }
                c.onTermination = { _ in reader.cancel() }
            }
        }
        func send(_ text: [UInt8]) { task.send(.string(String(decoding: text, as: UTF8.self))) { _ in } }
        func close(code: UInt16) { task.cancel(with: URLSessionWebSocketTask.CloseCode(rawValue: Int(code)) ?? .normalClosure, reason: nil) }
    }
    #endif
}
