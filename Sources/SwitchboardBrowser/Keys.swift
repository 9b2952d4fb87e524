import SwitchboardProtocol

/// Key definitions for `Input.dispatchKeyEvent` (as Playwright's US keyboard layout defines
/// them): `key`, `code`, the Windows virtual key code and the text a key types.
struct KeyDefinition: Equatable {
    var key: String
    var code: String
    var keyCode: Int
    var text: String?

    static let named: [String: KeyDefinition] = {
        var d: [String: KeyDefinition] = [
            "Enter": .init(key: "Enter", code: "Enter", keyCode: 13, text: "\r"),
            "Tab": .init(key: "Tab", code: "Tab", keyCode: 9, text: nil),
            "Escape": .init(key: "Escape", code: "Escape", keyCode: 27, text: nil),
            "Backspace": .init(key: "Backspace", code: "Backspace", keyCode: 8, text: nil),
            "Delete": .init(key: "Delete", code: "Delete", keyCode: 46, text: nil),
            "ArrowUp": .init(key: "ArrowUp", code: "ArrowUp", keyCode: 38, text: nil),
            "ArrowDown": .init(key: "ArrowDown", code: "ArrowDown", keyCode: 40, text: nil),
            "ArrowLeft": .init(key: "ArrowLeft", code: "ArrowLeft", keyCode: 37, text: nil),
            "ArrowRight": .init(key: "ArrowRight", code: "ArrowRight", keyCode: 39, text: nil),
            "Home": .init(key: "Home", code: "Home", keyCode: 36, text: nil),
            "End": .init(key: "End", code: "End", keyCode: 35, text: nil),
            "PageUp": .init(key: "PageUp", code: "PageUp", keyCode: 33, text: nil),
            "PageDown": .init(key: "PageDown", code: "PageDown", keyCode: 34, text: nil),
            "Insert": .init(key: "Insert", code: "Insert", keyCode: 45, text: nil),
            "Space": .init(key: " ", code: "Space", keyCode: 32, text: " "),
            " ": .init(key: " ", code: "Space", keyCode: 32, text: " "),
            "Shift": .init(key: "Shift", code: "ShiftLeft", keyCode: 16, text: nil),
            "Control": .init(key: "Control", code: "ControlLeft", keyCode: 17, text: nil),
            "Alt": .init(key: "Alt", code: "AltLeft", keyCode: 18, text: nil),
            "Meta": .init(key: "Meta", code: "MetaLeft", keyCode: 91, text: nil),
        ]
        for n in 1...12 { d["F\(n)"] = .init(key: "F\(n)", code: "F\(n)", keyCode: 111 + n, text: nil) }
        return d
    }()

    /// The definition of one key name or character; nil when unknown.
    static func lookup(_ name: String) -> KeyDefinition? {
        if let d = named[name] { return d }
        guard name.count == 1, let c = name.unicodeScalars.first else { return nil }
        if c.properties.isAlphabetic && c.isASCII {
            let upper = name.uppercased()
            return .init(key: name, code: "Key" + upper, keyCode: Int(upper.unicodeScalars.first!.value), text: name)
        }
        if ("0"..."9").contains(name) { return .init(key: name, code: "Digit" + name, keyCode: Int(c.value), text: name) }
        // Any other character types itself.
        return .init(key: name, code: "", keyCode: 0, text: name)
    }
}

/// A key press such as `Enter`, `a` or `Control+A`: modifiers and the key.
struct KeyPress: Equatable {
    var modifiers: Int
    var key: KeyDefinition

    /// CDP modifier bits.
    static let bits: [String: Int] = ["Alt": 1, "Control": 2, "Meta": 4, "Shift": 8]

    static func parse(_ text: String) -> KeyPress? {
        // "+" alone (or as the last part, "Control++") is the plus key.
        var parts = text.split(separator: "+", omittingEmptySubsequences: false).map(String.init)
        if text == "+" { parts = ["+"] } else if text.hasSuffix("++") { parts = Array(parts.dropLast(2)) + ["+"] }
        guard let last = parts.last, let key = KeyDefinition.lookup(last) else { return nil }
        var modifiers = 0
        for m in parts.dropLast() {
            guard let bit = bits[m] else { return nil }
            modifiers |= bit
        }
        var k = key
        // With Control, Alt or Meta a key types nothing.
        if modifiers & 7 != 0 { k.text = nil }
        if modifiers & 8 != 0, let t = k.text, t.count == 1 { k.text = t.uppercased(); k.key = t.uppercased() }
        return KeyPress(modifiers: modifiers, key: k)
    }

    /// The keyDown and keyUp params.
    var events: [JSONObject] {
        var down: JSONObject = ["type": .string(key.text == nil ? "rawKeyDown" : "keyDown"), "key": .string(key.key), "code": .string(key.code),
                                "windowsVirtualKeyCode": .int(key.keyCode), "modifiers": .int(modifiers)]
        if let t = key.text { down["text"] = .string(t); down["unmodifiedText"] = .string(t) }
        let up: JSONObject = ["type": .string("keyUp"), "key": .string(key.key), "code": .string(key.code),
                              "windowsVirtualKeyCode": .int(key.keyCode), "modifiers": .int(modifiers)]
        return [down, up]
    }
}
