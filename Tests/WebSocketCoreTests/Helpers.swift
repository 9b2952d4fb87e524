@testable import WebSocketCore

/// A frame as the parser saw it: header plus the unmasked payload.
struct ParsedFrame: Equatable {
    var header: FrameHeader
    var payload: [UInt8]
}

/// Feeds `chunks` one after another and collects whole frames.
func parseFrames(_ chunks: [[UInt8]], configuration: FrameParser.Configuration = .init()) throws(WebSocketError) -> [ParsedFrame] {
    var parser = FrameParser(configuration: configuration)
    var frames: [ParsedFrame] = []
    var current: ParsedFrame? = nil
    for chunk in chunks {
        var bytes = chunk
        let result: Result<Void, WebSocketError> = bytes.withUnsafeMutableBytes { buf in
            var index = 0
            do throws(WebSocketError) {
                while let event = try parser.next(buf, &index) {
                    switch event {
                    case .header(let h): current = ParsedFrame(header: h, payload: [])
                    case .payload(let r): current!.payload.append(contentsOf: buf[r])
                    case .end: frames.append(current!); current = nil
                    }
                }
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }
    return frames
}

/// Runs bytes through an InboundProcessor and collects what it delivers.
func process(_ bytes: [UInt8], limits: InboundProcessor.Limits = .init(), inflater: Inflater? = nil) -> (messages: [InboundMessage], error: WebSocketError?) {
    var p = InboundProcessor(limits: limits, requireMask: true, inflater: inflater)
    var out: [InboundMessage] = []
    var copy = bytes
    let error: WebSocketError? = copy.withUnsafeMutableBytes { buf -> WebSocketError? in
        do throws(WebSocketError) { try p.process(buf) { out.append($0) }; return nil } catch { return error }
    }
    return (out, error)
}

func masked(_ opcode: Opcode, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false) -> [UInt8] {
    FrameWriter.frame(opcode, payload: payload, fin: fin, rsv1: rsv1, maskKey: 0x37FA_213D)
}

extension InboundMessage {
    var textValue: String? { if case .text(let m) = self { return m.string }; return nil }
}
