#ifndef SWITCHBOARD_CSQLITE_SHIM_H
#define SWITCHBOARD_CSQLITE_SHIM_H
#include <sqlite3.h>

// Bytes the caller keeps until the statement is reset and its bindings cleared (a literal in
// the binary, or the store's copies): bound without SQLite making a copy of its own.
static inline int sb_sqlite3_bind_kept_text(sqlite3_stmt *s, int i, const void *text, int n) {
    return sqlite3_bind_text(s, i, (const char *)text, n, SQLITE_STATIC);
}
static inline int sb_sqlite3_bind_kept_blob(sqlite3_stmt *s, int i, const void *data, int n) {
    return sqlite3_bind_blob(s, i, data, n, SQLITE_STATIC);
}
// Turns off SQLite's memory statistics, which take a process-wide mutex on every allocation
// and free. Only before SQLite is initialized (the first connection opened); SQLITE_MISUSE after.
static inline int sb_sqlite3_memstatus_off(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
// Records the number of frames in the WAL after each commit into *frames (the store
// checkpoints from its writer thread when the WAL has grown past a bound).
static inline int sb_wal_frames_hook(void *frames, sqlite3 *db, const char *name, int n) {
    (void)db; (void)name;
    *(int *)frames = n;
    return SQLITE_OK;
}
static inline void sb_sqlite3_count_wal_frames(sqlite3 *db, int *frames) {
    sqlite3_wal_hook(db, sb_wal_frames_hook, frames);
}
#endif
