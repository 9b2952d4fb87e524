import Testing
@testable import SwitchboardServer

/// The store's in-memory index of appended entries, without a database.
@Suite struct EntryIndexTests {
    typealias Row = EntryIndex.Row

    /// A row: `g` = 100 + n unless given; stream -1 when `seq` is nil.
    static func row(_ n: Int, seq: Int? = nil, stream: Int8 = 1, g: Int64? = nil, journaled: Bool = true, command: Bool = false) -> Row {
        Row(g: g ?? Int64(100 + n), n: n, seq: seq ?? 0, stream: seq == nil ? -1 : stream, journaled: journaled, hasCommandId: command)
    }

    /// s: 1 worker→server, 2 server.command (client seq 1), 3 worker seq 1, 4 client seq 2, 5 in.
    static func sample() -> EntryIndex {
        var x = EntryIndex()
        for r in [row(1), row(2, seq: 1, command: true), row(3, seq: 1, stream: 0), row(4, seq: 2), row(5)] { _ = x.append("s", r) }
        _ = x.append("t", row(1))
        return x
    }

    /// The store numbers new rows from `nextG`: past every row loaded or appended, also after
    /// rows are trimmed or their session removed (a number is never given twice).
    @Test func nextRowNumberIsPastEveryRowSeen() {
        var x = EntryIndex()
        #expect(x.nextG == 1)
        x.load("s", Self.row(1, g: 7))
        x.load("t", Self.row(1, g: 3))
        x.finishLoading()
        #expect(x.nextG == 8)
        _ = x.append("s", Self.row(2, g: x.nextG))
        #expect(x.nextG == 9)
        _ = x.remove("s")
        x.unlink("t", x.trimMessages("t", stream: -1, throughSeq: 0))
        #expect(x.nextG == 9)
        _ = x.append("t", Self.row(2, g: 4))
        #expect(x.nextG == 9)
    }

    @Test func appendedRowsAreReadBackInEntryOrderPerSession() {
        let x = Self.sample()
        #expect(x.journal("s", after: 0, limit: 10).map(\.n) == [1, 2, 3, 4, 5])
        #expect(x.journal("s", after: 2, limit: 2).map(\.n) == [3, 4])
        #expect(x.journal("s", after: 5, limit: 10).isEmpty)
        #expect(x.journal("s", after: 0, limit: 0).isEmpty)
        #expect(x.journal("nobody", after: 0, limit: 10).isEmpty)
        #expect(x.lastEntry("s") == 5)
        #expect(x.lastEntry("t") == 1)
        #expect(x.lastEntry("nobody") == 0)
        #expect(x.commandRows("s").map(\.n) == [2])
    }

    @Test(arguments: [
        (limit: 0, expected: [String]()),
        (limit: 1, expected: ["0:1", "1:2"]),
        (limit: 2, expected: ["0:1", "1:1", "1:2"]),
        (limit: Int.max, expected: ["0:1", "1:1", "1:2"]),
    ])
    func tailsHoldTheLastMessagesOfEachStream(limit: Int, expected: [String]) {
        #expect(Self.sample().tails("s", limit: limit).map { "\($0.stream):\($0.seq)" } == expected)
    }

    /// (throughN, keepFrom worker, keepFrom client) → rows deleted, rows kept only for replay,
    /// journal afterwards.
    @Test(arguments: [
        (through: 0, keep: (1, 1), deleted: [Int](), unjournaled: [Int](), journal: [1, 2, 3, 4, 5]),
        (through: 3, keep: (1, 2), deleted: [1, 2], unjournaled: [3], journal: [4, 5]),
        (through: 3, keep: (Int.max, Int.max), deleted: [1, 2, 3], unjournaled: [], journal: [4, 5]),
        (through: Int.max, keep: (Int.min, Int.min), deleted: [1, 5], unjournaled: [2, 3, 4], journal: []),
        (through: Int.max, keep: (Int.max, Int.max), deleted: [1, 2, 3, 4, 5], unjournaled: [], journal: []),
    ])
    func journalTrimsKeepWhatAReplayTailHolds(through: Int, keep: (Int, Int), deleted: [Int], unjournaled: [Int], journal: [Int]) {
        var x = Self.sample()
        let (gone, kept) = x.trimJournal("s", throughN: through, keepFrom: (worker: keep.0, client: keep.1))
        #expect(gone.map(\.n) == deleted)
        #expect(kept == unjournaled.map { Int64(100 + $0) })
        #expect(x.journal("s", after: 0, limit: 10).map(\.n) == journal)
        // Whatever stays is still in a replay tail; the other session is untouched.
        #expect(x.tails("s", limit: 10).count + gone.filter { $0.stream >= 0 }.count == 3)
        #expect(x.lastEntry("t") == 1)
    }

    @Test func messageTrimsTakeOnlyReplayOnlyRowsOfTheirStream() {
        var x = Self.sample()
        // Journal entries are not replay-only: nothing leaves.
        #expect(x.trimMessages("s", stream: 1, throughSeq: .max).isEmpty)
        _ = x.trimJournal("s", throughN: 4, keepFrom: (worker: 1, client: 1))
        #expect(x.trimMessages("s", stream: 1, throughSeq: 1).map(\.n) == [2])
        #expect(x.tails("s", limit: 10).map(\.n) == [3, 4])
        #expect(x.trimMessages("s", stream: 0, throughSeq: .max).map(\.n) == [3])
        #expect(x.trimMessages("s", stream: 1, throughSeq: .max).map(\.n) == [4])
        #expect(x.journal("s", after: 0, limit: 10).map(\.n) == [5])
        _ = x.trimJournal("s", throughN: .max, keepFrom: (worker: .max, client: .max))
        #expect(x.lastEntry("s") == 0)
        #expect(x.remove("s").entries.isEmpty)
    }

    @Test func aNumberWrittenAgainReplacesItsRow() {
        var x = Self.sample()
        #expect(x.append("s", Self.row(3, g: 900)) == 103)
        #expect(x.append("s", Self.row(4, g: 901)) == 104)
        #expect(x.append("s", Self.row(6, g: 902)) == nil)
        #expect(x.journal("s", after: 0, limit: 10).map(\.g) == [101, 102, 900, 901, 105, 902])
        // A number between two rows goes between them.
        _ = x.trimJournal("s", throughN: 2, keepFrom: (worker: .max, client: .max))
        #expect(x.append("s", Self.row(2, g: 903)) == nil)
        #expect(x.journal("s", after: 0, limit: 10).map(\.n) == [2, 3, 4, 5, 6])
        // After a trim (the rows no longer start at the front of their storage) too.
        #expect(x.append("s", Self.row(4, g: 907)) == 901)
        // The ends of Int: a row numbered Int.min goes first, one numbered Int.max last.
        #expect(x.append("s", Self.row(.min, g: 904)) == nil)
        #expect(x.append("s", Self.row(.min, g: 905)) == 904)
        #expect(x.append("s", Self.row(.max, g: 906)) == nil)
        #expect(x.journal("s", after: .min, limit: 10).map(\.g) == [903, 900, 907, 105, 902, 906])
        #expect(x.journal("s", after: .min + 1, limit: 10).first?.n == 2)
        #expect(x.lastEntry("s") == .max)
    }

    @Test func rowsLoadedOutOfEntryOrderAreSortedStably() {
        var x = EntryIndex()
        // As migrated: replay-only messages numbered 0 first, then the journal.
        for r in [Self.row(2, g: 1), Self.row(0, seq: 5, g: 2, journaled: false), Self.row(1, g: 3), Self.row(0, seq: 6, g: 4, journaled: false)] {
            x.load("s", r)
        }
        x.finishLoading()
        #expect(x.rows["s"]?.map(\.g) == [2, 4, 3, 1])
        #expect(x.tails("s", limit: 10).map(\.seq) == [5, 6])
        #expect(x.journal("s", after: -1, limit: 10).map(\.n) == [1, 2])
    }

    @Test func supersededStatesAreHandedOverInBatches() {
        var x = EntryIndex()
        x.setState("a", g: 1)
        x.setState("b", g: 2)
        x.setState("a", g: 3)
        #expect(x.takeSuperseded(atLeast: 2).isEmpty)
        x.setState("b", g: 4)
        x.setState("a", g: 5)
        #expect(x.takeSuperseded(atLeast: 2) == [1, 2, 3])
        #expect(x.takeSuperseded(atLeast: 0).isEmpty)
        #expect(x.states == ["a": 5, "b": 4])
        let (entries, state) = x.remove("a")
        #expect(entries.isEmpty && state == 5)
        #expect(x.states == ["b": 4])
    }

    /// Rows a trim let go wait to be deleted with the superseded states (`untidy`); until
    /// then their command ids are used, nothing else reads them, and a session's removal
    /// takes them with its rows.
    @Test func unlinkedRowsWaitToBeDeleted() {
        var x = Self.sample()
        x.setState("s", g: 1)
        x.setState("s", g: 2)
        x.unlink("s", x.trimJournal("s", throughN: 2, keepFrom: (worker: .max, client: .max)).delete)
        x.unlink("t", [Self.row(7, g: 99)])
        x.unlink("t", [])
        #expect(x.untidy == 4)
        #expect(x.journal("s", after: 0, limit: 10).map(\.n) == [3, 4, 5])
        #expect(x.tails("s", limit: 10).map(\.seq) == [1, 2])
        #expect(x.commandRows("s").map(\.n) == [2])
        var removed = x
        #expect(removed.remove("s").entries.map(\.g) == [103, 104, 105, 101, 102])
        #expect(removed.untidy == 2)
        #expect(removed.takeUnlinked().map(\.g) == [99])
        // Handed over once, in table order, with the superseded states.
        #expect(x.takeUnlinked().map(\.g) == [99, 101, 102])
        #expect(x.takeSuperseded(atLeast: 1) == [1])
        #expect(x.untidy == 0)
        #expect(x.takeUnlinked().isEmpty)
        #expect(x.commandRows("s").isEmpty)
    }
}
