import Testing
import Foundation
@testable import SwitchboardBrowser

/// Key names as `press` takes them, to the events CDP receives.
@Suite struct KeyTests {
    @Test(arguments: [
        ("Enter", 0, "Enter", 13, "\r"), ("Tab", 0, "Tab", 9, nil), ("Escape", 0, "Escape", 27, nil), ("a", 0, "a", 65, "a"),
        ("Shift+a", 8, "A", 65, "A"), ("Control+A", 2, "A", 65, nil), ("Control+Shift+ArrowLeft", 10, "ArrowLeft", 37, nil),
        ("7", 0, "7", 55, "7"), ("Space", 0, " ", 32, " "), ("F5", 0, "F5", 116, nil), ("+", 0, "+", 0, "+"), ("Control++", 2, "+", 0, nil),
    ] as [(String, Int, String, Int, String?)])
    func keysParse(name: String, modifiers: Int, key: String, code: Int, text: String?) throws {
        let p = try #require(KeyPress.parse(name))
        #expect(p.modifiers == modifiers && p.key.key == key && p.key.keyCode == code && p.key.text == text)
        let down = p.events[0]
        #expect(down["type"]?.stringValue == (text == nil ? "rawKeyDown" : "keyDown") && p.events[1]["type"]?.stringValue == "keyUp")
    }

    @Test(arguments: ["", "Hyper+a", "Control+", "NoSuchKey"])
    func unknownKeysAreRefused(name: String) {
        #expect(KeyPress.parse(name) == nil)
    }
}

/// Image headers from the browser, broken or hostile: a size or nil, never a trap or a hang.
@Suite struct ImageSizeTests {
    @Test func sizesOfRealAndBrokenImages() {
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 5, 0, 0, 0, 2, 208, 8, 6]
        #expect(ChromiumExecutor.imageSize(png).map { [$0.0, $0.1] } == [1280, 720])
        let jpeg: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 1, 0x2C, 2, 0x80, 3, 0, 0, 0]
        #expect(ChromiumExecutor.imageSize(jpeg).map { [$0.0, $0.1] } == [640, 300])
        let broken: [[UInt8]] = [[], [0x89, 0x50, 0x4E, 0x47], [0xFF, 0xD8], [0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0, 0, 0, 0, 0],
                                 [0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0], [0xFF, 0xD8] + [UInt8](repeating: 0xFF, count: 64)]
        for b in broken { _ = ChromiumExecutor.imageSize(b) }
        var g = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var b: [UInt8] = [0xFF, 0xD8] + (0..<Int.random(in: 0...64, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
            if Bool.random(using: &g) { b[0] = 0x89; b[1] = 0x50; b += [0x4E, 0x47] }
            _ = ChromiumExecutor.imageSize(b)
        }
    }

    /// The CSS size used when the image's own header cannot be read.
    @Test(arguments: [(1280.4, 1280), (0.5, 1), (0, 0), (-3, 0), (1e300, 0), (-1e300, 0), (.infinity, 0), (.nan, 0),
                      (1_073_741_824, 1_073_741_824), (1_073_741_825, 0)] as [(Double, Int)])
    func cssSizesAsPixels(_ css: Double, _ pixels: Int) {
        #expect(ChromiumExecutor.pixels(css) == pixels)
    }

    /// A deadline's remaining time, whatever the deadline: past, far future or none.
    @Test func millisecondsLeftStayWithinADay() {
        #expect(ChromiumExecutor.millisLeft(until: .distantPast) == 0)
        #expect(ChromiumExecutor.millisLeft(until: .distantFuture) == 86_400_000)
        #expect(ChromiumExecutor.millisLeft(until: Date(timeIntervalSince1970: .greatestFiniteMagnitude)) == 86_400_000)
        #expect((1...60_000).contains(ChromiumExecutor.millisLeft(until: Date().addingTimeInterval(60))))
    }
}
