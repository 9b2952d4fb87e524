import COpenSSL

/// The server side of the opening handshake (RFC 6455 section 4.2), as a pure function of the
/// request head. The caller writes `responseHead` or the refusal.
public enum Handshake {
    public static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    public struct Accept: Sendable, Equatable {
        public var acceptKey: String
        public var deflate: DeflateParameters?
        public var extraHeaders: [String] = []

        public var responseHead: String {
            var head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(acceptKey)\r\n"
            if let deflate { head += "Sec-WebSocket-Extensions: \(deflate.headerValue)\r\n" }
            for h in extraHeaders { head += h + "\r\n" }
            return head + "\r\n"
        }
    }

    public struct Refusal: Error, Equatable, Sendable {
        public var status: Int
        public var message: String
        public var headers: [(String, String)]

        public static func == (a: Refusal, b: Refusal) -> Bool { a.status == b.status && a.message == b.message }
    }

    /// True when the request asks for a WebSocket upgrade at all.
    public static func isUpgradeRequest(_ headers: HTTPHeaders) -> Bool {
        headers.tokens("Upgrade").contains("websocket")
    }

    public static func validate(method: String, version: String, headers: HTTPHeaders,
                                deflate policy: DeflatePolicy?) -> Result<Accept, Refusal> {
        func refuse(_ status: Int, _ message: String, _ extra: [(String, String)] = []) -> Result<Accept, Refusal> {
            .failure(Refusal(status: status, message: message, headers: extra))
        }
        guard method == "GET" else { return refuse(405, "WebSocket upgrades use GET", [("Allow", "GET")]) }
        guard version == "HTTP/1.1" else { return refuse(400, "WebSocket upgrades need HTTP/1.1") }
        guard headers.tokens("Upgrade").contains("websocket") else { return refuse(400, "missing Upgrade: websocket") }
        guard headers.tokens("Connection").contains("upgrade") else { return refuse(400, "missing Connection: Upgrade") }
        guard headers.values("Sec-WebSocket-Version").count == 1,
              headers["Sec-WebSocket-Version"]?.trimmingSpaces() == "13" else {
            return refuse(426, "unsupported WebSocket version; this server speaks 13", [("Sec-WebSocket-Version", "13")])
        }
        let keys = headers.values("Sec-WebSocket-Key")
        guard keys.count == 1, let key = Optional(keys[0].trimmingSpaces()), Base64.decode(key)?.count == 16 else {
            return refuse(400, "Sec-WebSocket-Key must be base64 of 16 bytes")
        }
        var deflate: DeflateParameters? = nil
        if let policy {
            let offers = headers.values("Sec-WebSocket-Extensions").joined(separator: ",")
            deflate = negotiateDeflate(offers: offers, policy: policy)
        }
        return .success(Accept(acceptKey: acceptKey(for: key), deflate: deflate))
    }

    public static func acceptKey(for key: String) -> String {
        let input = Array((key + guid).utf8)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        _ = input.withUnsafeBytes { inp in
            digest.withUnsafeMutableBufferPointer { out in
                EVP_Digest(inp.baseAddress, inp.count, out.baseAddress, &length, EVP_sha1(), nil)
            }
        }
        return Base64.encode(digest[0..<Int(length)])
    }

    /// Parses an extension header value into offers: `[(name, [(param, value?)])]`.
    /// Splits on commas outside quoted strings, so several offers in one header work.
    public static func parseExtensions(_ value: String) -> [(name: String, params: [(String, String?)])] {
        var offers: [(name: String, params: [(String, String?)])] = []
        var elements: [String] = []
        var current = ""
        var quoted = false
        for ch in value {
            if ch == "\"" { quoted.toggle() }
            if ch == "," && !quoted { elements.append(current); current = "" } else { current.append(ch) }
        }
        elements.append(current)
        for element in elements {
            let parts = element.split(separator: ";", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
            guard let name = parts.first, !name.isEmpty else { continue }
            var params: [(String, String?)] = []
            for p in parts.dropFirst() where !p.isEmpty {
                if let eq = p.firstIndex(of: "=") {
                    var v = p[p.index(after: eq)...].trimmingSpaces()
                    if v.count >= 2 && v.hasPrefix("\"") && v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
                    params.append((p[..<eq].trimmingSpaces().lowercased(), v))
                } else {
                    params.append((p.lowercased(), nil))
                }
            }
            offers.append((name: name.lowercased(), params: params))
        }
        return offers
    }

    /// Picks the first permessage-deflate offer we can accept (RFC 7692 section 7.1).
    /// An offer with an unknown or repeated parameter, a bad value, or `server_max_window_bits=8`
    /// (zlib cannot compress with a 256-byte window) is declined and the next one tried.
    public static func negotiateDeflate(offers: String, policy: DeflatePolicy) -> DeflateParameters? {
        offerLoop: for offer in parseExtensions(offers) where offer.name == "permessage-deflate" {
            var seen = Set<String>()
            var params = DeflateParameters()
            var serverWindow: Int? = nil
            for (name, value) in offer.params {
                guard seen.insert(name).inserted else { continue offerLoop }
                switch name {
                case "server_no_context_takeover":
                    guard value == nil else { continue offerLoop }
                    params.serverNoContextTakeover = true
                case "client_no_context_takeover":
                    guard value == nil else { continue offerLoop }
                    params.clientNoContextTakeover = true
                case "server_max_window_bits":
                    guard let v = value, let bits = windowBits(v), bits >= 9 else { continue offerLoop }
                    serverWindow = bits
                case "client_max_window_bits":
                    if let v = value { guard windowBits(v) != nil else { continue offerLoop } }
                default:
                    continue offerLoop
                }
            }
            if policy.contextTakeover {
                params.serverMaxWindowBits = min(serverWindow ?? 15, policy.serverWindowBits)
                // client_max_window_bits needs no answer: our inflater always has a 32 KiB
                // window, so the client may compress with any window it likes.
            } else {
                // Without context takeover every connection shares its thread's zlib streams:
                // say so for both directions (RFC 7692 7.1.1 lets the server add both).
                params.serverNoContextTakeover = true
                params.clientNoContextTakeover = true
                params.serverMaxWindowBits = serverWindow ?? 15
            }
            return params
        }
        return nil
    }

    private static func windowBits(_ s: String) -> Int? {
        guard s.count <= 2, s.allSatisfy({ $0.isASCII && $0.isNumber }), let v = Int(s), (8...15).contains(v), !s.hasPrefix("0") else { return nil }
        return v
    }
}

/// The client side of the opening handshake (RFC 6455 section 4.1), as pure functions: the
/// request head to send, and the checks of the server's response head.
public enum ClientHandshake {
    /// What the client offers for compression: permessage-deflate, letting the server pick
    /// the client's window (RFC 7692 section 7.1.2.2).
    public static let deflateOffer = "permessage-deflate; client_max_window_bits"

    public struct Failure: Error, Equatable, Sendable, CustomStringConvertible {
        public var description: String
        /// The HTTP status when the server answered with something other than 101.
        public var status: Int?
        public init(_ description: String, status: Int? = nil) { self.description = description; self.status = status }
    }

    /// The request head: `GET target HTTP/1.1` with the upgrade headers and `extra` ones.
    public static func requestHead(host: String, target: String, key: String, offerDeflate: Bool,
                                   extraHeaders: [(String, String)] = []) -> String {
        var head = "GET \(target) HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        head += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        if offerDeflate { head += "Sec-WebSocket-Extensions: \(deflateOffer)\r\n" }
        for (name, value) in extraHeaders { head += "\(name): \(value)\r\n" }
        return head + "\r\n"
    }

    /// Checks the response: status 101, `Upgrade: websocket`, `Connection: Upgrade`, the
    /// `Sec-WebSocket-Accept` that matches `key`, and no extension we did not offer. Returns
    /// the agreed deflate parameters (nil: no compression).
    public static func validate(status: Int, headers: HTTPHeaders, key: String, offeredDeflate: Bool) -> Result<DeflateParameters?, Failure> {
        guard status == 101 else { return .failure(Failure("the server answered \(status) instead of 101", status: status)) }
        guard headers.tokens("Upgrade").contains("websocket") else { return .failure(Failure("the response has no Upgrade: websocket")) }
        guard headers.tokens("Connection").contains("upgrade") else { return .failure(Failure("the response has no Connection: Upgrade")) }
        guard headers.values("Sec-WebSocket-Accept").count == 1,
              headers["Sec-WebSocket-Accept"]?.trimmingSpaces() == Handshake.acceptKey(for: key) else {
            return .failure(Failure("Sec-WebSocket-Accept does not match the key sent"))
        }
        let agreed = Handshake.parseExtensions(headers.values("Sec-WebSocket-Extensions").joined(separator: ","))
        guard !agreed.isEmpty else { return .success(nil) }
        guard offeredDeflate, agreed.count == 1, agreed[0].name == "permessage-deflate" else {
            return .failure(Failure("the server agreed to an extension that was not offered"))
        }
        var p = DeflateParameters()
        var seen = Set<String>()
        for (name, value) in agreed[0].params {
            guard seen.insert(name).inserted else { return .failure(Failure("permessage-deflate parameter \(name) repeated")) }
            switch (name, value) {
            case ("server_no_context_takeover", nil): p.serverNoContextTakeover = true
            case ("client_no_context_takeover", nil): p.clientNoContextTakeover = true
            case ("server_max_window_bits", let v?):
                guard let bits = Int(v), (8...15).contains(bits) else { return .failure(Failure("bad server_max_window_bits")) }
                p.serverMaxWindowBits = bits
            case ("client_max_window_bits", let v?):
                guard let bits = Int(v), (8...15).contains(bits) else { return .failure(Failure("bad client_max_window_bits")) }
                p.clientMaxWindowBits = bits
            default: return .failure(Failure("unexpected permessage-deflate parameter \(name)"))
            }
        }
        return .success(p)
    }
}
