import CDP
import Foundation
import Switchboard
import SwitchboardProtocol
import WebSocketClient

/// The reference client's side of CDP channels (docs/protocol.md section 16): each channel is
/// its own WebSocket to the browser's DevTools endpoint, frames passed through 1:1 in order.
/// The page the client's commands run in is protected: a channel may not close it.
public actor CDPBridge {
    let endpoint: String
    let protectedTarget: String
    private var channels: [Int: (socket: WebSocket, outlet: CDPOutlet)] = [:]

    /// `endpoint` is the browser's DevTools WebSocket URL; `protectedTarget` the page's target id.
    public init(endpoint: String, protectedTarget: String) {
        self.endpoint = endpoint
        self.protectedTarget = protectedTarget
    }

    func open(channel: Int, outlet: CDPOutlet) async {
        let socket: WebSocket
        do { socket = try await WebSocket.connect(to: endpoint, options: .devTools) } catch {
            await outlet.close(reason: "cannot reach the browser's DevTools endpoint: \(error)")
            return
        }
        channels[channel] = (socket, outlet)
        let events = socket.events
        Task {
            for await e in events {
                switch e {
                case .text(let bytes): await outlet.send(String(decoding: bytes, as: UTF8.self))
                case .binary: break
                case .closed(let code, let reason): await self.browserClosed(channel, socket, "\(code) \(reason)")
                }
            }
        }
    }

    /// The browser's side ended without the worker asking.
    private func browserClosed(_ channel: Int, _ socket: WebSocket, _ why: String) async {
        guard let c = channels[channel], c.socket === socket else { return }
        channels[channel] = nil
        await c.outlet.close(reason: "the browser closed the DevTools connection (\(why))")
    }

    func frame(channel: Int, data: String) async {
        guard let c = channels[channel] else { return }
        if let refusal = CDPBridge.refusal(data, protectedTarget: protectedTarget) {
            await c.outlet.send(refusal)
            return
        }
        c.socket.send(text: data)
    }

    func close(channel: Int) {
        channels.removeValue(forKey: channel)?.socket.close()
    }

    /// The answer to a command that would close the client's own page (nil: pass it on).
    static func refusal(_ frame: String, protectedTarget: String) -> String? {
        guard frame.contains("Target.closeTarget"),
              let v = try? JSONParser.parse(Array(frame.utf8)), v["method"]?.stringValue == "Target.closeTarget",
              v["params"]?["targetId"]?.stringValue == protectedTarget, let id = v["id"] else { return nil }
        var o: JSONObject = ["id": id, "error": .object(["code": .int(-32000),
                                                          "message": .string("Target.closeTarget is refused for the page the session's commands run in")])]
        if let s = v["sessionId"] { o["sessionId"] = s }
        return JSONWriter.string(.object(o))
    }
}
