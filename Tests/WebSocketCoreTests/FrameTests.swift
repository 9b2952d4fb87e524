import Testing
@testable import WebSocketCore

@Suite struct RFC6455Examples {
    // RFC 6455 section 5.7, byte for byte.
    @Test func singleFrameUnmaskedText() throws {
        let wire: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        #expect(FrameWriter.frame(.text, payload: Array("Hello".utf8)) == wire)
        let frames = try parseFrames([wire], configuration: .init(requireMask: false))
        #expect(frames == [ParsedFrame(header: FrameHeader(opcode: .text, length: 5), payload: Array("Hello".utf8))])
    }

    @Test func singleFrameMaskedText() throws {
        let wire: [UInt8] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        #expect(FrameWriter.frame(.text, payload: Array("Hello".utf8), maskKey: 0x37fa213d) == wire)
        let frames = try parseFrames([wire])
        #expect(frames.count == 1)
        #expect(frames[0].payload == Array("Hello".utf8))
        #expect(frames[0].header.maskKey == 0x37fa213d)
    }

    @Test func fragmentedUnmaskedText() throws {
        let wire: [UInt8] = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
        #expect(FrameWriter.frame(.text, payload: Array("Hel".utf8), fin: false) + FrameWriter.frame(.continuation, payload: Array("lo".utf8)) == wire)
        let frames = try parseFrames([wire], configuration: .init(requireMask: false))
        #expect(frames.map(\.header.fin) == [false, true])
        #expect(frames.map(\.header.opcode) == [.text, .continuation])
        #expect(frames.flatMap(\.payload) == Array("Hello".utf8))
    }

    @Test func unmaskedPingAndMaskedPong() throws {
        let ping: [UInt8] = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        let pong: [UInt8] = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        #expect(FrameWriter.frame(.ping, payload: Array("Hello".utf8)) == ping)
        #expect(FrameWriter.frame(.pong, payload: Array("Hello".utf8), maskKey: 0x37fa213d) == pong)
        #expect(try parseFrames([pong]).first?.payload == Array("Hello".utf8))
    }

    @Test func binary256And64KiB() throws {
        let p256 = [UInt8](repeating: 0xAB, count: 256)
        let f256 = FrameWriter.frame(.binary, payload: p256)
        #expect(Array(f256[0..<4]) == [0x82, 0x7E, 0x01, 0x00])
        let p64k = [UInt8](repeating: 0xCD, count: 65536)
        let f64k = FrameWriter.frame(.binary, payload: p64k)
        #expect(Array(f64k[0..<10]) == [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00])
        #expect(try parseFrames([f256, f64k], configuration: .init(requireMask: false)).map(\.payload) == [p256, p64k])
    }
}

@Suite struct ParserSplits {
    /// A stream mixing every header size, control frames and fragments.
    static let stream: [UInt8] = {
        var s: [UInt8] = []
        s += masked(.text, Array("Hello".utf8))
        s += masked(.ping, [1, 2, 3])
        s += masked(.binary, [UInt8](repeating: 7, count: 300))
        s += masked(.text, Array("frag".utf8), fin: false)
        s += masked(.pong, [])
        s += masked(.continuation, Array("ment".utf8))
        s += masked(.binary, (0..<70_000).map { UInt8(truncatingIfNeeded: $0) })
        s += masked(.text, [])
        s += masked(.close, [0x03, 0xE8])
        return s
    }()

    @Test func everySplitOffsetGivesTheSameFrames() throws {
        let whole = try parseFrames([Self.stream])
        #expect(whole.count == 9)
        for offset in 0...Self.stream.count where offset % 7 == 0 || offset < 400 {
            let split = try parseFrames([Array(Self.stream[..<offset]), Array(Self.stream[offset...])])
            #expect(split == whole, "split at \(offset)")
        }
    }

    @Test func byteAtATimeGivesTheSameFrames() throws {
        let whole = try parseFrames([Self.stream])
        let bytes = try parseFrames(Self.stream.map { [$0] })
        #expect(bytes == whole)
    }

    @Test func everyHeaderSplitForAllLengthForms() throws {
        for len in [0, 125, 126, 65535, 65536] {
            let frame = masked(.binary, [UInt8](repeating: 1, count: len))
            let whole = try parseFrames([frame])
            for offset in 0...min(frame.count, 20) {
                #expect(try parseFrames([Array(frame[..<offset]), Array(frame[offset...])]) == whole)
            }
        }
    }
}

@Suite struct Violations {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var error: WebSocketError
        var code: UInt16
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "unmasked client frame", bytes: FrameWriter.frame(.text, payload: [0x41]), error: .unmaskedClientFrame, code: 1002),
        Case(name: "RSV1 without extension", bytes: masked(.text, [0x41], rsv1: true), error: .reservedBitsSet, code: 1002),
        Case(name: "RSV2", bytes: [0xA1, 0x80, 0, 0, 0, 0], error: .reservedBitsSet, code: 1002),
        Case(name: "RSV3", bytes: [0x91, 0x80, 0, 0, 0, 0], error: .reservedBitsSet, code: 1002),
        Case(name: "reserved data opcode 3", bytes: [0x83, 0x80, 0, 0, 0, 0], error: .reservedOpcode(3), code: 1002),
        Case(name: "reserved control opcode 11", bytes: [0x8B, 0x80, 0, 0, 0, 0], error: .reservedOpcode(11), code: 1002),
        Case(name: "control frame of 126 bytes", bytes: masked(.ping, [UInt8](repeating: 0, count: 126)), error: .controlFrameTooLong, code: 1002),
        Case(name: "fragmented ping", bytes: masked(.ping, [1], fin: false), error: .fragmentedControlFrame, code: 1002),
        Case(name: "continuation without start", bytes: masked(.continuation, [0x41]), error: .unexpectedContinuation, code: 1002),
        Case(name: "new text inside fragmented message", bytes: masked(.text, [0x41], fin: false) + masked(.text, [0x42]), error: .expectedContinuation, code: 1002),
        Case(name: "64-bit length with top bit", bytes: [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], error: .lengthTopBitSet, code: 1002),
        Case(name: "16-bit length under 126", bytes: [0x82, 0xFE, 0x00, 0x05, 0, 0, 0, 0], error: .nonMinimalLength, code: 1002),
        Case(name: "64-bit length under 65536", bytes: [0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 0], error: .nonMinimalLength, code: 1002),
        Case(name: "close payload of one byte", bytes: masked(.close, [0x03]), error: .invalidClosePayload, code: 1002),
        Case(name: "close code 1005 on the wire", bytes: masked(.close, [0x03, 0xED]), error: .invalidCloseCode(1005), code: 1002),
        Case(name: "close code 999", bytes: masked(.close, [0x03, 0xE7]), error: .invalidCloseCode(999), code: 1002),
        Case(name: "close code 5000", bytes: masked(.close, [0x13, 0x88]), error: .invalidCloseCode(5000), code: 1002),
        Case(name: "close reason not UTF-8", bytes: masked(.close, [0x03, 0xE8, 0xFF]), error: .invalidUTF8, code: 1007),
        Case(name: "text not UTF-8", bytes: masked(.text, [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80]), error: .invalidUTF8, code: 1007),
        Case(name: "text ends mid code point", bytes: masked(.text, [0x41, 0xE2, 0x82]), error: .invalidUTF8, code: 1007),
        Case(name: "frame over the limit", bytes: [0x82, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0], error: .frameTooLarge, code: 1009),
    ]

    @Test(arguments: cases) func violationMapsToItsCloseCode(_ c: Case) {
        let (_, error) = process(c.bytes)
        #expect(error == c.error)
        #expect(error?.closeCode.rawValue == c.code)
    }

    @Test func messageOverLimitFailsBeforeThePayloadArrives() {
        // Two fragments of 600 bytes against a 1000-byte message limit: the second header alone is enough.
        let first = masked(.binary, [UInt8](repeating: 1, count: 600), fin: false)
        let secondHeader = Array(masked(.continuation, [UInt8](repeating: 1, count: 600))[0..<8])
        let (_, error) = process(first + secondHeader, limits: .init(maxFrameSize: 1000, maxMessageSize: 1000))
        #expect(error == .messageTooLarge)
        #expect(error?.closeCode == .messageTooBig)
    }

    @Test func firstFrameOverTheMessageLimitFailsBeforeThePayloadArrives() {
        // A single frame the frame limit allows but the message limit does not: its header alone
        // is refused.
        let header = Array(masked(.text, [UInt8](repeating: 0x41, count: 70_000))[0..<14])
        let (messages, error) = process(header, limits: .init(maxFrameSize: 1 << 20, maxMessageSize: 65_536))
        #expect(messages.isEmpty)
        #expect(error == .messageTooLarge)
    }

    @Test func invalidUTF8FailsFastMidMessage() {
        // The first fragment already holds an impossible byte: fail before the message ends.
        let (messages, error) = process(masked(.text, [0x41, 0xC0, 0x80], fin: false))
        #expect(messages.isEmpty)
        #expect(error == .invalidUTF8)
    }
}

@Suite struct Assembly {
    @Test func controlFramesInterleaveWithFragments() {
        let bytes = masked(.text, Array("Hel".utf8), fin: false) + masked(.ping, [9]) + masked(.continuation, Array("lo".utf8))
        let (messages, error) = process(bytes)
        #expect(error == nil)
        #expect(messages.count == 2)
        if case .ping(let p) = messages[0] { #expect(p == [9]) } else { Issue.record("expected ping") }
        #expect(messages[1].textValue == "Hello")
    }

    @Test func utf8SplitAcrossFragmentsIsValid() {
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        let bytes = masked(.text, [euro[0]], fin: false) + masked(.continuation, [euro[1]], fin: false) + masked(.continuation, [euro[2]])
        let (messages, error) = process(bytes)
        #expect(error == nil)
        #expect(messages.first?.textValue == "€")
    }

    @Test func closeFrameStopsProcessing() {
        let bytes = masked(.close, FrameWriter.closePayload(code: .normal, reason: "bye")) + masked(.text, Array("late".utf8))
        let (messages, error) = process(bytes)
        #expect(error == nil)
        #expect(messages.count == 1)
        if case .close(let code, let reason) = messages[0] { #expect(code == .normal); #expect(reason == "bye") } else { Issue.record("expected close") }
    }

    @Test func emptyCloseHasNoCode() {
        let (messages, _) = process(masked(.close, []))
        if case .close(let code, _) = messages.first { #expect(code == nil) } else { Issue.record("expected close") }
    }

    @Test func receivedMessageKeepsHeaderRoomForEcho() {
        let (messages, _) = process(masked(.text, Array("echo".utf8)))
        guard case .text(let m) = messages.first else { Issue.record("no text"); return }
        var out = OutboundMessage(reserved: m.storage)
        out.seal(.text)
        #expect(Array(out.storage[out.start...]) == FrameWriter.frame(.text, payload: Array("echo".utf8)))
    }
}

@Suite struct MaskingAndUTF8 {
    @Test func maskingAtEveryOffsetMatchesBytewise() {
        let payload = (0..<77).map { UInt8($0 * 7 & 0xFF) }
        let key: UInt32 = 0xA1B2_C3D4
        let keyBytes: [UInt8] = [0xA1, 0xB2, 0xC3, 0xD4]
        for offset in 0..<4 {
            for start in 0..<payload.count {
                var chunk = Array(payload[start...])
                Masking.apply(key: key, offset: offset + start, to: &chunk)
                let expected = payload[start...].enumerated().map { $0.element ^ keyBytes[(offset + start + $0.offset) & 3] }
                #expect(chunk == expected)
            }
        }
    }

    @Test(arguments: [
        ([0x41, 0x42], true), ([0xC2, 0xA9], true), ([0xE2, 0x82, 0xAC], true), ([0xF0, 0x9F, 0x98, 0x80], true),
        ([0xC0, 0xAF], false), ([0xE0, 0x80, 0xAF], false), ([0xED, 0xA0, 0x80], false), ([0xF4, 0x90, 0x80, 0x80], false),
        ([0xF5], false), ([0xFF], false), ([0x80], false), ([0xE2, 0x82], false),
    ] as [([UInt8], Bool)])
    func utf8Table(_ bytes: [UInt8], _ valid: Bool) {
        #expect(UTF8Validator.isValid(bytes) == valid)
        // The same verdict when fed one byte at a time.
        var v = UTF8Validator()
        var ok = true
        for b in bytes where ok { ok = v.validate([b]) }
        #expect((ok && v.isComplete) == valid)
    }

    /// Whatever block of the ASCII fast paths (32 bytes, then 8, then one) a byte falls in: a
    /// stray continuation byte or a cut sequence is refused there, and a valid two-, three- or
    /// four-byte sequence is taken, fed whole or split in two anywhere.
    @Test(arguments: [([0x80], false), ([0xFF], false), ([0xE2, 0x82], false), ([0xC3, 0xA9], true),
                      ([0xE2, 0x82, 0xAC], true), ([0xF0, 0x9F, 0x98, 0x80], true)] as [([UInt8], Bool)])
    func sequencesAtEveryPositionOfAsciiText(_ sequence: [UInt8], _ valid: Bool) {
        for count in 0..<80 {
            for at in 0...count {
                let bytes = [UInt8](repeating: 0x61, count: at) + sequence + [UInt8](repeating: 0x62, count: count - at)
                #expect(UTF8Validator.isValid(bytes) == valid, "at \(at) of \(count)")
                for cut in [at / 2, at + 1, bytes.count - 1] where cut > 0 && cut < bytes.count {
                    var v = UTF8Validator()
                    let ok = v.validate(Array(bytes[..<cut])) && v.validate(Array(bytes[cut...])) && v.isComplete
                    #expect(ok == valid, "at \(at) of \(count), cut at \(cut)")
                }
            }
        }
    }

    @Test func longAsciiThenInvalidIsCaught() {
        var bytes = [UInt8](repeating: 0x61, count: 1000)
        bytes[997] = 0xFF
        #expect(!UTF8Validator.isValid(bytes))
    }
}

@Suite struct WorkBudget {
    /// A budget stops processing at a message boundary; the rest, passed again, continues
    /// exactly where it stopped, compressed messages included.
    @Test func processingStopsAtTheBudgetAndResumes() throws {
        let deflater = Deflater(windowBits: 15, resetAfterMessage: false)
        var bytes: [UInt8] = []
        for k in 0..<10 {
            let text = Array(String(repeating: "m\(k)", count: 500).utf8)
            let compressed = text.withUnsafeBytes { deflater.compress($0) }!
            bytes += masked(.text, Array(compressed[FrameWriter.maxHeaderSize...]), rsv1: true)
        }
        var p = InboundProcessor(requireMask: true, inflater: Inflater(resetAfterMessage: false))
        var got: [String] = []
        var offset = 0
        var calls = 0
        while offset < bytes.count {
            var rest = Array(bytes[offset...])
            let used = try rest.withUnsafeMutableBytes { try p.process($0, budget: 2000) { m in
                if case .text(let t) = m { got.append(String(decoding: t.bytes, as: UTF8.self)) }
            } }
            #expect(used > 0)
            offset += used
            calls += 1
        }
        #expect(got == (0..<10).map { String(repeating: "m\($0)", count: 500) })
        #expect(calls == 5)   // 1 000 bytes a message, 2 000 a call
    }
}
