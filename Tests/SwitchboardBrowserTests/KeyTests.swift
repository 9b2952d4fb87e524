import Testing
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
