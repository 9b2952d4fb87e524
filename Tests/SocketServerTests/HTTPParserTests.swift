import Testing
import WebSocketCore
@testable import SocketServer

@Suite struct HTTPParsing {
    func parse(_ chunks: [String], limits: HTTPRequestParser.Limits = .init()) throws(HTTPRequestParser.Failure) -> [HTTPRequest] {
        var p = HTTPRequestParser(limits: limits)
        var out: [HTTPRequest] = []
        for c in chunks {
            Array(c.utf8).withUnsafeBytes { p.append($0) }
            while let r = try p.next() { out.append(r) }
        }
        return out
    }

    static let post = "POST /v1/sessions?x=1&y=a%20b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"

    @Test func requestWithBodySplitAtEveryOffset() throws {
        for i in 0...Self.post.utf8.count {
            let bytes = Array(Self.post.utf8)
            let a = String(decoding: bytes[..<i], as: UTF8.self), b = String(decoding: bytes[i...], as: UTF8.self)
            let rs = try parse([a, b])
            #expect(rs.count == 1)
            #expect(rs[0].method == "POST" && rs[0].path == "/v1/sessions" && rs[0].body == Array("hello".utf8))
            #expect(rs[0].query == ["x": "1", "y": "a b"])
        }
    }

    @Test func pipelinedRequests() throws {
        let rs = try parse([Self.post + "GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n"])
        #expect(rs.map(\.path) == ["/v1/sessions", "/healthz"])
        #expect(rs[1].headers["HOST"] == "h")
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        var name: String; var text: String; var status: Int
        var testDescription: String { name }
    }

    static let bad: [Bad] = [
        Bad(name: "head over 16 KiB", text: "GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "a", count: 17_000) + "\r\n\r\n", status: 431),
        Bad(name: "unterminated head over 16 KiB", text: "GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 17_000), status: 431),
        Bad(name: "101 headers", text: "GET / HTTP/1.1\r\nHost: h\r\n" + (0..<100).map { "H\($0): v\r\n" }.joined() + "\r\n", status: 431),
        Bad(name: "body over limit", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n", status: 413),
        Bad(name: "chunked", text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", status: 501),
        Bad(name: "two lengths", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", status: 400),
        Bad(name: "negative length", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", status: 400),
        Bad(name: "no Host", text: "GET / HTTP/1.1\r\n\r\n", status: 400),
        Bad(name: "HTTP/2.0", text: "GET / HTTP/2.0\r\nHost: h\r\n\r\n", status: 505),
        Bad(name: "garbage", text: "hello\r\n\r\n", status: 400),
        Bad(name: "absolute target", text: "GET http://x/ HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        Bad(name: "space in header name", text: "GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n", status: 400),
        Bad(name: "folded header", text: "GET / HTTP/1.1\r\nHost: h\r\n continued\r\n\r\n", status: 400),
    ]

    @Test(arguments: bad) func refusals(_ b: Bad) {
        #expect(throws: HTTPRequestParser.Failure.self) { _ = try parse([b.text]) }
        do { _ = try parse([b.text]) } catch { #expect(error.status == b.status) }
    }

    @Test func remainderAfterUpgradeIsKept() throws {
        var p = HTTPRequestParser()
        Array("GET /ws HTTP/1.1\r\nHost: h\r\n\r\n\u{81}\u{80}".utf8).withUnsafeBytes { p.append($0) }
        #expect(try p.next()?.path == "/ws")
        #expect(p.takeRemainder() == Array("\u{81}\u{80}".utf8))
    }
}
