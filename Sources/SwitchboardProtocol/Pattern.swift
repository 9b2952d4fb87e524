/// Regular expressions supplied by workers (`url` and `networkRequest` yield conditions,
/// `waitForNavigation`), matched in time linear in the input: the pattern is compiled to a
/// Thompson NFA and simulated state set by state set, so no pattern can backtrack
/// (`^(a+)+$` against `aaaa…a!` costs the same as `^a+$`). A step budget bounds the work of
/// one search whatever the sizes involved.
///
/// Syntax (the common JavaScript / ICU subset): literals; `.`; classes `[a-z]`, `[^…]`;
/// escapes `\d \D \w \W \s \S \b \B \t \n \r \f \v \0 \xHH \uHHHH` and escaped punctuation;
/// anchors `^ $`; groups `(…)`, `(?:…)`, `(?<name>…)`; alternation `|`; quantifiers
/// `* + ? {n} {n,} {n,m}`, each optionally lazy (`*?`: the same language, so the same answer
/// to "does it match"); a leading `(?i)` for case-insensitive ASCII. Back-references and
/// look-around cannot be matched in linear time and are refused as invalid.
public struct Pattern: Sendable {
    public let source: String
    let program: [Instruction]
    let caseInsensitive: Bool

    /// Largest compiled program (instructions); `{n,m}` copies its operand.
    public static let maxProgram = 10_000
    /// Largest count in `{n,m}`.
    public static let maxRepeat = 1_000
    /// Steps (state visits) one search may take before it answers "no match".
    public static let defaultBudget = 4_000_000

    enum Instruction: Sendable {
        case scalar(Unicode.Scalar)
        case any
        case set(CharacterSet, negated: Bool)
        case split(Int, Int)
        case jump(Int)
        case lineStart, lineEnd, wordBoundary, notWordBoundary
        case match
    }

    struct CharacterSet: Sendable {
        var ranges: [ClosedRange<UInt32>] = []
        var classes: [Class] = []
        enum Class: Sendable { case digit, notDigit, word, notWord, space, notSpace }

        func contains(_ c: Unicode.Scalar, caseInsensitive: Bool) -> Bool {
            if test(c.value) { return true }
            if caseInsensitive, let other = Pattern.otherCase(c.value) { return test(other) }
            return false
        }

        private func test(_ v: UInt32) -> Bool {
            for r in ranges where r.contains(v) { return true }
            for k in classes {
                switch k {
                case .digit: if Pattern.isDigit(v) { return true }
                case .notDigit: if !Pattern.isDigit(v) { return true }
                case .word: if Pattern.isWord(v) { return true }
                case .notWord: if !Pattern.isWord(v) { return true }
                case .space: if Pattern.isSpace(v) { return true }
                case .notSpace: if !Pattern.isSpace(v) { return true }
                }
            }
            return false
        }
    }

    public struct SyntaxError: Error, Equatable, Sendable {
        public var message: String
        public var offset: Int
    }

    public init(_ source: String) throws(SyntaxError) {
        self.source = source
        var parser = Parser(Array(source.unicodeScalars))
        caseInsensitive = parser.consume("(?i)")
        program = try parser.compile()
    }

    /// True when the pattern matches somewhere in `input` (an unanchored search) within the
    /// step budget; a search that runs out of budget answers false.
    public func matches(_ input: String, budget: Int = Pattern.defaultBudget) -> Bool {
        search(Array(input.unicodeScalars), budget: budget) == .match
    }

    public enum Outcome: Equatable, Sendable { case match, noMatch, budgetExhausted }

    public func search(_ input: [Unicode.Scalar], budget: Int = Pattern.defaultBudget) -> Outcome {
        var current = StateSet(capacity: program.count)
        var next = StateSet(capacity: program.count)
        var steps = 0
        var pos = 0
        while true {
            // An unanchored search starts a thread at every position.
            if add(0, to: &current, at: pos, input, &steps) { return .match }
            if pos == input.count || steps > budget { return steps > budget ? .budgetExhausted : .noMatch }
            let c = input[pos]
            next.clear()
            for k in 0..<current.count {
                let pc = current.dense[k]
                steps += 1
                let advance: Bool
                switch program[pc] {
                case .scalar(let s): advance = s == c || (caseInsensitive && Pattern.otherCase(s.value) == c.value)
                case .any: advance = c != "\n"
                case .set(let set, let negated): advance = set.contains(c, caseInsensitive: caseInsensitive) != negated
                default: advance = false
                }
                if advance, add(pc + 1, to: &next, at: pos + 1, input, &steps) { return .match }
            }
            if steps > budget { return .budgetExhausted }
            swap(&current, &next)
            pos += 1
        }
    }

    /// Adds `pc` and everything reachable from it without consuming input; true on `match`.
    private func add(_ start: Int, to set: inout StateSet, at pos: Int, _ input: [Unicode.Scalar], _ steps: inout Int) -> Bool {
        var stack = [start]
        while let pc = stack.popLast() {
            guard set.insert(pc) else { continue }
            steps += 1
            switch program[pc] {
            case .match: return true
            case .jump(let to): stack.append(to)
            case .split(let a, let b): stack.append(b); stack.append(a)
            case .lineStart: if pos == 0 { stack.append(pc + 1) }
            case .lineEnd: if pos == input.count { stack.append(pc + 1) }
            case .wordBoundary, .notWordBoundary:
                let before = pos > 0 && Pattern.isWord(input[pos - 1].value)
                let after = pos < input.count && Pattern.isWord(input[pos].value)
                let boundary = before != after
                if case .wordBoundary = program[pc] { if boundary { stack.append(pc + 1) } }
                else if !boundary { stack.append(pc + 1) }
            case .scalar, .any, .set: break
            }
        }
        return false
    }

    /// A sparse set of program counters: O(1) insert, clear and membership.
    struct StateSet {
        var dense: [Int]
        var sparse: [Int]
        var count = 0
        init(capacity: Int) { dense = Array(repeating: 0, count: capacity); sparse = Array(repeating: 0, count: capacity) }
        mutating func insert(_ pc: Int) -> Bool {
            let i = sparse[pc]
            if i < count && dense[i] == pc { return false }
            sparse[pc] = count
            dense[count] = pc
            count += 1
            return true
        }
        mutating func clear() { count = 0 }
    }

    static func isDigit(_ v: UInt32) -> Bool { v >= 48 && v <= 57 }
    static func isWord(_ v: UInt32) -> Bool { isDigit(v) || (v >= 65 && v <= 90) || (v >= 97 && v <= 122) || v == 95 }
    static func isSpace(_ v: UInt32) -> Bool {
        v == 32 || (v >= 9 && v <= 13) || v == 0xA0 || v == 0x1680 || (v >= 0x2000 && v <= 0x200A)
            || v == 0x2028 || v == 0x2029 || v == 0x202F || v == 0x205F || v == 0x3000 || v == 0xFEFF
    }
    static func otherCase(_ v: UInt32) -> UInt32? {
        if v >= 65 && v <= 90 { return v + 32 }
        if v >= 97 && v <= 122 { return v - 32 }
        return nil
    }
}

// MARK: - Parser and compiler

extension Pattern {
    indirect enum Node {
        case empty
        case instruction(Instruction)   // one consuming instruction or one assertion
        case concat([Node])
        case alternation([Node])
        case repetition(Node, min: Int, max: Int?)
    }

    /// Emits the program of a tree, refusing programs over `maxProgram` instructions.
    struct Compiler {
        var code: [Instruction] = []

        mutating func emit(_ inst: Instruction) throws(SyntaxError) -> Int {
            guard code.count < Pattern.maxProgram else { throw SyntaxError(message: "the pattern is too large", offset: 0) }
            code.append(inst)
            return code.count - 1
        }

        mutating func compile(_ node: Node) throws(SyntaxError) {
            switch node {
            case .empty: break
            case .instruction(let inst): _ = try emit(inst)
            case .concat(let parts): for p in parts { try compile(p) }
            case .alternation(let branches):
                // split(b1, next); b1; jump end; next: split(b2, …) … ; last branch
                var jumps: [Int] = []
                for (k, b) in branches.enumerated() {
                    if k == branches.count - 1 { try compile(b); break }
                    let split = try emit(.split(0, 0))
                    try compile(b)
                    jumps.append(try emit(.jump(0)))
                    code[split] = .split(split + 1, code.count)
                }
                for j in jumps { code[j] = .jump(code.count) }
            case .repetition(let body, let lo, let hi):
                for _ in 0..<lo { try compile(body) }
                if let hi {
                    // Optional copies, each skipping all that follow: split(copy, end).
                    var splits: [Int] = []
                    for _ in lo..<hi {
                        splits.append(try emit(.split(0, 0)))
                        try compile(body)
                    }
                    for k in splits { code[k] = .split(k + 1, code.count) }
                } else {
                    // L: split(body, end); body; jump L
                    let loop = try emit(.split(0, 0))
                    try compile(body)
                    _ = try emit(.jump(loop))
                    code[loop] = .split(loop + 1, code.count)
                }
            }
        }
    }

    struct Parser {
        let s: [Unicode.Scalar]
        var i = 0
        var depth = 0

        init(_ s: [Unicode.Scalar]) { self.s = s }

        mutating func consume(_ literal: String) -> Bool {
            let l = Array(literal.unicodeScalars)
            guard i + l.count <= s.count, Array(s[i..<(i + l.count)]) == l else { return false }
            i += l.count
            return true
        }

        func fail(_ m: String) -> SyntaxError { SyntaxError(message: m, offset: i) }

        mutating func compile() throws(SyntaxError) -> [Instruction] {
            let tree = try alternation()
            guard i == s.count else { throw fail(s[i] == ")" ? "unbalanced ')'" : "unexpected '\(s[i])'") }
            var c = Compiler()
            try c.compile(tree)
            _ = try c.emit(.match)
            return c.code
        }

        mutating func alternation() throws(SyntaxError) -> Node {
            var branches = [try sequence()]
            while i < s.count && s[i] == "|" {
                i += 1
                branches.append(try sequence())
            }
            return branches.count == 1 ? branches[0] : .alternation(branches)
        }

        mutating func sequence() throws(SyntaxError) -> Node {
            var parts: [Node] = []
            while i < s.count && s[i] != "|" && s[i] != ")" {
                parts.append(try quantified())
            }
            return parts.isEmpty ? .empty : (parts.count == 1 ? parts[0] : .concat(parts))
        }

        mutating func quantified() throws(SyntaxError) -> Node {
            let (node, quantifiable) = try atom()
            guard i < s.count else { return node }
            var lo = 0, hi: Int? = nil
            switch s[i] {
            case "*": i += 1
            case "+": lo = 1; i += 1
            case "?": hi = 1; i += 1
            case "{":
                guard let (a, b) = try braces() else { return node }  // a literal '{'
                lo = a; hi = b
            default: return node
            }
            guard quantifiable else { throw fail("nothing to repeat") }
            if i < s.count && s[i] == "?" { i += 1 }  // lazy: the same language
            if i < s.count && (s[i] == "*" || s[i] == "+" || s[i] == "?") { throw fail("nothing to repeat") }
            if i < s.count && s[i] == "{", scanBraces() != nil { throw fail("nothing to repeat") }
            return .repetition(node, min: lo, max: hi)
        }

        /// `{n}`, `{n,}`, `{n,m}` at `i`: the bounds and the index after `}`, or nil when the
        /// brace is a literal. Counts are clamped to maxRepeat + 1 while scanning.
        func scanBraces() -> (lo: Int, hi: Int?, end: Int)? {
            var j = i + 1
            func number() -> Int? {
                var v = 0, digits = 0
                while j < s.count, Pattern.isDigit(s[j].value) {
                    v = min(v * 10 + Int(s[j].value - 48), Pattern.maxRepeat + 1)
                    digits += 1; j += 1
                }
                return digits > 0 ? v : nil
            }
            guard let lo = number() else { return nil }
            var hi: Int? = lo
            if j < s.count && s[j] == "," {
                j += 1
                hi = number()
            }
            guard j < s.count && s[j] == "}" else { return nil }
            return (lo, hi, j + 1)
        }

        mutating func braces() throws(SyntaxError) -> (Int, Int?)? {
            guard let (lo, hi, end) = scanBraces() else { return nil }
            guard lo <= Pattern.maxRepeat, (hi ?? 0) <= Pattern.maxRepeat else { throw fail("a count above \(Pattern.maxRepeat)") }
            guard hi.map({ $0 >= lo }) ?? true else { throw fail("numbers out of order in {}") }
            i = end
            return (lo, hi)
        }

        /// One atom and whether a quantifier may follow it (not after anchors and assertions).
        mutating func atom() throws(SyntaxError) -> (Node, Bool) {
            let c = s[i]
            i += 1
            switch c {
            case "^": return (.instruction(.lineStart), false)
            case "$": return (.instruction(.lineEnd), false)
            case ".": return (.instruction(.any), true)
            case "(":
                if i < s.count && s[i] == "?" {
                    if consume("?:") {
                    } else if i + 2 < s.count && s[i + 1] == "<" && s[i + 2] != "=" && s[i + 2] != "!" {
                        // A named group: skip the name.
                        i += 2
                        while i < s.count && s[i] != ">" { guard Pattern.isWord(s[i].value) else { throw fail("invalid group name") }; i += 1 }
                        guard i < s.count else { throw fail("unterminated group name") }
                        i += 1
                    } else {
                        throw fail("look-around and inline flags are not supported")
                    }
                }
                depth += 1
                guard depth <= 100 else { throw fail("groups are nested too deeply") }
                let inner = try alternation()
                depth -= 1
                guard i < s.count && s[i] == ")" else { throw fail("missing ')'") }
                i += 1
                return (inner, true)
            case ")": throw fail("unbalanced ')'")
            case "*", "+", "?": throw fail("nothing to repeat")
            case "[": return (.instruction(try characterClass()), true)
            case "\\":
                guard i < s.count else { throw fail("trailing backslash") }
                let e = s[i]
                i += 1
                switch e {
                case "b": return (.instruction(.wordBoundary), false)
                case "B": return (.instruction(.notWordBoundary), false)
                case "d", "D", "w", "W", "s", "S":
                    return (.instruction(.set(CharacterSet(classes: [Parser.shorthand(e)]), negated: false)), true)
                default:
                    return (.instruction(.scalar(try escaped(e))), true)
                }
            default:
                return (.instruction(.scalar(c)), true)
            }
        }
        static func shorthand(_ e: Unicode.Scalar) -> CharacterSet.Class {
            switch e {
            case "d": return .digit
            case "D": return .notDigit
            case "w": return .word
            case "W": return .notWord
            case "s": return .space
            default: return .notSpace
            }
        }

        /// The scalar an escape stands for (after the backslash and `e`).
        mutating func escaped(_ e: Unicode.Scalar) throws(SyntaxError) -> Unicode.Scalar {
            switch e {
            case "t": return "\t"
            case "n": return "\n"
            case "r": return "\r"
            case "f": return "\u{0C}"
            case "v": return "\u{0B}"
            case "0": return "\u{0}"
            case "x": return try hex(2)
            case "u": return try hex(4)
            default:
                if Pattern.isDigit(e.value) { throw fail("back-references are not supported") }
                if Pattern.isWord(e.value) { throw fail("unknown escape \\\(e)") }
                return e
            }
        }

        mutating func hex(_ n: Int) throws(SyntaxError) -> Unicode.Scalar {
            guard i + n <= s.count else { throw fail("incomplete hex escape") }
            var v: UInt32 = 0
            for _ in 0..<n {
                guard let d = Int(String(s[i]), radix: 16) else { throw fail("invalid hex escape") }
                v = v * 16 + UInt32(d)
                i += 1
            }
            guard let u = Unicode.Scalar(v) else { throw fail("invalid code point") }
            return u
        }

        mutating func characterClass() throws(SyntaxError) -> Instruction {
            var set = CharacterSet()
            var negated = false
            if i < s.count && s[i] == "^" { negated = true; i += 1 }
            var first = true
            while true {
                guard i < s.count else { throw fail("missing ']'") }
                var c = s[i]
                if c == "]" && !first { i += 1; break }
                first = false
                i += 1
                if c == "\\" {
                    guard i < s.count else { throw fail("trailing backslash") }
                    let e = s[i]
                    i += 1
                    if "dDwWsS".unicodeScalars.contains(e) { set.classes.append(Parser.shorthand(e)); continue }
                    c = e == "b" ? "\u{08}" : try escaped(e)
                }
                var hi = c
                if i + 1 < s.count && s[i] == "-" && s[i + 1] != "]" {
                    i += 1
                    hi = s[i]
                    i += 1
                    if hi == "\\" {
                        guard i < s.count else { throw fail("trailing backslash") }
                        let e = s[i]
                        i += 1
                        hi = try escaped(e)
                    }
                    guard hi.value >= c.value else { throw fail("range out of order") }
                }
                set.ranges.append(c.value...hi.value)
            }
            return .set(set, negated: negated)
        }
    }
}
