/// Where each session's stored entries are in the store's append-only `entries` table.
///
/// Every commit appends its rows, of all sessions, to the end of one table (the rowid `g`
/// grows), so a commit writes the pages those bytes fill and not one B-tree leaf per session.
/// What a per-session index would give is kept here, in memory, and rebuilt from the table
/// at start: each session's rows in entry (`n`) order with the little needed to answer
/// replay, journal and trim requests without reading bodies. A pure value: the store
/// decides, from what these methods return, which rows to delete or update.
struct EntryIndex: Sendable {
    struct Row: Equatable, Sendable {
        /// The row's id in `entries`.
        var g: Int64
        /// The journal entry number.
        var n: Int
        /// The seq on its stream; meaningful only when `stream >= 0`.
        var seq: Int
        /// `StreamPosition.stream`, or -1 when the entry is not a message the server sent.
        var stream: Int8
        /// Listed in the journal (false: kept only for replay).
        var journaled: Bool
        /// The row carries a command id (which stays used after the row is deleted).
        var hasCommandId: Bool
    }

    /// Each session's rows. A slice, so that a trim drops the oldest rows without moving the
    /// rest (a session's journal holds up to 100 000 rows; moving them on every trim of 256
    /// was a few hundred microseconds in the commit of the command that trimmed). Indices
    /// are the slice's own, not from 0.
    private(set) var rows: [String: ArraySlice<Row>] = [:]
    /// The id (`g` in `states`) of each session's newest state row.
    private(set) var states: [String: Int64] = [:]
    /// State rows superseded by a newer one of their session, not yet deleted (they are
    /// deleted in batches; until then the newest row wins, also after a restart).
    private(set) var superseded: [Int64] = []
    /// Entry rows trims let go, by session, not yet deleted from the table (they are deleted
    /// in batches, `takeUnlinked`). Nothing reads them; their command ids still count as used.
    private(set) var unlinked: [String: [Row]] = [:]
    private(set) var unlinkedCount = 0
    /// Superseded state rows and unlinked entry rows waiting to be deleted.
    var untidy: Int { superseded.count + unlinkedCount }
    /// The `g` of the next row: past every row listed (the store numbers rows itself, so that
    /// one statement inserts several).
    private(set) var nextG: Int64 = 1

    /// Adds a row read back from the table (in `g` order); `finishLoading` puts each
    /// session's rows in entry order.
    mutating func load(_ session: String, _ row: Row) {
        rows[session, default: []].append(row)
        nextG = max(nextG, row.g &+ 1)
    }

    mutating func finishLoading() {
        for (s, list) in rows where zip(list, list.dropFirst()).contains(where: { $0.n > $1.n }) {
            rows[s] = ArraySlice(list.enumerated().sorted { ($0.element.n, $0.offset) < ($1.element.n, $1.offset) }.map(\.element))
        }
    }

    /// The position of the first row for which `isPast` holds, `isPast` being false then true
    /// along the list (rows are in entry order).
    private static func first(_ list: ArraySlice<Row>, _ isPast: (Row) -> Bool) -> Int {
        var lo = list.startIndex, hi = list.endIndex
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if isPast(list[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    /// The session's row numbered `n`, if any.
    func entry(_ session: String, n: Int) -> Row? {
        guard let list = rows[session] else { return nil }
        let at = EntryIndex.start(list, after: n - 1)
        return at < list.endIndex && list[at].n == n ? list[at] : nil
    }

    /// The position of the first row numbered above `n`.
    private static func start(_ list: ArraySlice<Row>, after n: Int) -> Int { first(list) { $0.n > n } }

    /// Adds a new row. Rows arrive in entry order; a row with the number of an existing one
    /// replaces it, whose `g` is returned (to delete).
    mutating func append(_ session: String, _ row: Row) -> Int64? {
        nextG = max(nextG, row.g &+ 1)
        // One lookup in the usual case: the row goes at the end.
        if EntryIndex.appendIfLast(row, to: &rows[session, default: []]) { return nil }
        // Not expected (entry numbers only grow): a number written again replaces its row, as
        // the table's key did in the layout before.
        var list = rows.removeValue(forKey: session) ?? []
        defer { rows[session] = list }
        let at = EntryIndex.first(list) { $0.n >= row.n }
        if at < list.endIndex, list[at].n == row.n {
            let old = list[at].g
            list[at] = row
            return old
        }
        list.insert(row, at: at)
        return nil
    }

    private static func appendIfLast(_ row: Row, to list: inout ArraySlice<Row>) -> Bool {
        guard let last = list.last, last.n >= row.n else { list.append(row); return true }
        return false
    }

    /// Records a session's newest state row (the one it replaces becomes `superseded`).
    mutating func setState(_ session: String, g: Int64) {
        if let old = states.updateValue(g, forKey: session) { superseded.append(old) }
    }

    /// Hands over the superseded state rows to delete once there are at least `atLeast`.
    mutating func takeSuperseded(atLeast: Int) -> [Int64] {
        guard superseded.count >= max(1, atLeast) else { return [] }
        defer { superseded.removeAll() }
        return superseded.sorted()
    }

    /// Keeps rows a trim let go (`trimJournal`, `trimMessages`) until `takeUnlinked`.
    mutating func unlink(_ session: String, _ gone: [Row]) {
        guard !gone.isEmpty else { return }
        unlinked[session, default: []].append(contentsOf: gone)
        unlinkedCount += gone.count
    }

    /// Hands over every unlinked row, in `g` order, to delete.
    mutating func takeUnlinked() -> [Row] {
        guard unlinkedCount > 0 else { return [] }
        defer { unlinked = [:]; unlinkedCount = 0 }
        return unlinked.values.joined().sorted { $0.g < $1.g }
    }

    /// Entries through `throughN` leave the journal. Messages still in a replay tail (seq at
    /// or after their stream's `keepFrom`) stay, unjournaled (`unjournal`); the others go
    /// (`delete`).
    mutating func trimJournal(_ session: String, throughN: Int, keepFrom: (worker: Int, client: Int)) -> (delete: [Row], unjournal: [Int64]) {
        guard var list = rows.removeValue(forKey: session) else { return ([], []) }
        let end = EntryIndex.start(list, after: throughN)
        var delete: [Row] = [], unjournal: [Int64] = [], kept: [Row] = []
        for var r in list[..<end] {
            let keep = r.stream >= 0 && r.seq >= (r.stream == 0 ? keepFrom.worker : keepFrom.client)
            if !keep { delete.append(r); continue }
            if r.journaled { unjournal.append(r.g); r.journaled = false }
            kept.append(r)
        }
        // The kept rows go just before the rest, in place of the last ones trimmed.
        let from = end - kept.count
        for (i, r) in kept.enumerated() { list[from + i] = r }
        list = list[from...]
        rows[session] = list.isEmpty ? nil : list
        return (delete, unjournal)
    }

    /// Removes the stream's messages through `throughSeq` that are kept only for replay.
    mutating func trimMessages(_ session: String, stream: Int, throughSeq: Int) -> [Row] {
        guard var list = rows.removeValue(forKey: session) else { return [] }
        var gone: [Row] = []
        list.removeAll { r in
            let out = !r.journaled && Int(r.stream) == stream && r.seq <= throughSeq
            if out { gone.append(r) }
            return out
        }
        rows[session] = list.isEmpty ? nil : list
        return gone
    }

    /// Forgets a session; returns its entry rows (the unlinked ones too) and its state row.
    mutating func remove(_ session: String) -> (entries: [Row], state: Int64?) {
        let gone = unlinked.removeValue(forKey: session) ?? []
        unlinkedCount -= gone.count
        return (Array(rows.removeValue(forKey: session) ?? []) + gone, states.removeValue(forKey: session))
    }

    /// The last `limit` messages of each stream, worker's stream first, each in seq order.
    func tails(_ session: String, limit: Int) -> [Row] {
        guard limit > 0, let list = rows[session] else { return [] }
        var out: [Row] = []
        for stream in Int8(0)...1 {
            var picked: [Row] = []
            for r in list.reversed() where r.stream == stream {
                picked.append(r)
                if picked.count == limit { break }
            }
            out.append(contentsOf: picked.sorted { $0.seq < $1.seq })
        }
        return out
    }

    /// Up to `limit` journal entries after entry `after`, in order.
    func journal(_ session: String, after: Int, limit: Int) -> [Row] {
        guard limit > 0, let list = rows[session] else { return [] }
        return Array(list[EntryIndex.start(list, after: after)...].lazy.filter(\.journaled).prefix(limit))
    }

    /// The rows whose command ids are used (unlinked ones included).
    func commandRows(_ session: String) -> [Row] {
        (rows[session] ?? []).filter(\.hasCommandId) + (unlinked[session] ?? []).filter(\.hasCommandId)
    }

    /// The session's last entry number (0 when it has none).
    func lastEntry(_ session: String) -> Int { rows[session]?.last?.n ?? 0 }
}
