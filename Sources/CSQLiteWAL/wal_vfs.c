// Write coalescing for SQLite's WAL.
//
// SQLite appends a transaction to the WAL as frames, each with two writes: a 24-byte frame
// header, then the page. On Linux a small unaligned pwrite into the page cache costs about as
// much as a whole page, so a commit of n frames costs 2n syscalls that each touch one or two
// pages. This VFS keeps the appends of a WAL file in a buffer and writes them in one pwrite.
//
// When the buffer is written (the invariant the rest relies on):
// - when the commit frame is complete: the frame whose header has a non-zero "database size
//   after commit" field (bytes 4-7, big-endian; the WAL format). SQLite updates the shared
//   WAL index, which makes a transaction visible to other connections and processes, only after
//   its frames were written, and returns from the commit after that; so by then every byte of
//   the transaction is in the file, as without this VFS. A crash of the process loses at most
//   the frames of a transaction that has not committed, which recovery ignores anyway;
// - before anything else touches the file: a read (SQLite rereads frames to checkpoint or to
//   recompute checksums), a sync, a truncate, a size query, a file control, a close; and before
//   a write that does not append to the buffer, so writes reach the file in the order made;
// - before it would overflow (128 KiB, the most the unix VFS writes at once: a large
//   transaction goes out in writes of up to 128 KiB).
// A write error is returned from the write that flushed: for the commit frame, from the
// commit's last write, so the transaction fails as it would have.
// The page size comes from the WAL header (written or read at offset 0); until it is known,
// writes go straight through.

#include "CSQLiteWAL.h"
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define WAL_HEADER 32
#define FRAME_HEADER 24
// The unix VFS writes at most 0x1ffff bytes per call (longer writes fail as short writes).
#define CAPACITY 0x1ffff

typedef struct {
    const sqlite3_io_methods *inner;  // the default VFS's methods for this file
    unsigned char *buffer;            // CAPACITY bytes once the file is first written
    sqlite3_int64 start;              // the file offset of buffer[0]
    int length;                       // bytes held
    int pageSize;                     // from the WAL header; 0 until known
    sqlite3_int64 commitEnd;          // the end of a commit frame being written, or 0
    long long sqliteWrites;           // writes SQLite made to this file
    long long fileWrites;             // writes made to the file for them
} Coalescing;

static sqlite3_vfs *base;
static sqlite3_vfs vfs;
static sqlite3_io_methods methods;
static int innerSize;  // the default VFS's file object, rounded up to 8 bytes

static Coalescing *state(sqlite3_file *f) { return (Coalescing *)((char *)f + innerSize); }

static unsigned read32(const unsigned char *p) {
    return ((unsigned)p[0] << 24) | ((unsigned)p[1] << 16) | ((unsigned)p[2] << 8) | (unsigned)p[3];
}

// The WAL header's page size field: a power of two from 512 to 32768, or 1 for 65536.
static void learnPageSize(Coalescing *c, const unsigned char *header) {
    unsigned size = read32(header + 8);
    if (size == 1) size = 65536;
    c->pageSize = (size >= 512 && size <= 65536 && (size & (size - 1)) == 0) ? (int)size : 0;
}

static int flush(sqlite3_file *f) {
    Coalescing *c = state(f);
    if (c->length == 0) return SQLITE_OK;
    int length = c->length;
    c->length = 0;
    c->fileWrites += 1;
    return c->inner->xWrite(f, c->buffer, length, c->start);
}

static int walWrite(sqlite3_file *f, const void *data, int n, sqlite3_int64 offset) {
    Coalescing *c = state(f);
    c->sqliteWrites += 1;
    if (offset == 0 && n >= WAL_HEADER) learnPageSize(c, data);
    if (c->buffer == NULL && c->pageSize > 0) c->buffer = malloc(CAPACITY);
    if (c->buffer == NULL || c->pageSize == 0 || n < 0 || n > CAPACITY) {
        int rc = flush(f);
        if (rc != SQLITE_OK) return rc;
        c->fileWrites += 1;
        c->commitEnd = 0;
        return c->inner->xWrite(f, data, n, offset);
    }
    if (c->length > 0 && (offset != c->start + c->length || n > CAPACITY - c->length)) {
        int rc = flush(f);
        if (rc != SQLITE_OK) return rc;
    }
    if (c->length == 0) c->start = offset;
    memcpy(c->buffer + c->length, data, (size_t)n);
    c->length += n;
    // A frame header starts at 32 + k * (page size + 24). The commit frame's end stays armed
    // across a flush between its header and its page (the buffer was full).
    if (n == FRAME_HEADER && offset >= WAL_HEADER && (offset - WAL_HEADER) % (c->pageSize + FRAME_HEADER) == 0 &&
        read32((const unsigned char *)data + 4) != 0) {
        c->commitEnd = offset + FRAME_HEADER + c->pageSize;
    }
    int committed = c->commitEnd != 0 && offset + n >= c->commitEnd;
    if (committed) c->commitEnd = 0;
    return committed || c->length == CAPACITY ? flush(f) : SQLITE_OK;
}

static int walRead(sqlite3_file *f, void *data, int n, sqlite3_int64 offset) {
    Coalescing *c = state(f);
    int rc = flush(f);
    if (rc != SQLITE_OK) return rc;
    rc = c->inner->xRead(f, data, n, offset);
    if (rc == SQLITE_OK && offset == 0 && n >= WAL_HEADER) learnPageSize(c, data);
    return rc;
}

static int walClose(sqlite3_file *f) {
    Coalescing *c = state(f);
    int flushed = flush(f);
    free(c->buffer);
    c->buffer = NULL;
    int rc = c->inner->xClose(f);
    return flushed != SQLITE_OK ? flushed : rc;
}

static int walTruncate(sqlite3_file *f, sqlite3_int64 size) {
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : state(f)->inner->xTruncate(f, size);
}
static int walSync(sqlite3_file *f, int flags) {
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : state(f)->inner->xSync(f, flags);
}
static int walFileSize(sqlite3_file *f, sqlite3_int64 *size) {
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : state(f)->inner->xFileSize(f, size);
}
static int walFileControl(sqlite3_file *f, int op, void *arg) {
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : state(f)->inner->xFileControl(f, op, arg);
}
static int walLock(sqlite3_file *f, int level) { return state(f)->inner->xLock(f, level); }
static int walUnlock(sqlite3_file *f, int level) { return state(f)->inner->xUnlock(f, level); }
static int walCheckReservedLock(sqlite3_file *f, int *out) { return state(f)->inner->xCheckReservedLock(f, out); }
static int walSectorSize(sqlite3_file *f) { return state(f)->inner->xSectorSize(f); }
static int walDeviceCharacteristics(sqlite3_file *f) { return state(f)->inner->xDeviceCharacteristics(f); }
static int walShmMap(sqlite3_file *f, int region, int size, int extend, void volatile **out) {
    return state(f)->inner->xShmMap(f, region, size, extend, out);
}
static int walShmLock(sqlite3_file *f, int offset, int n, int flags) { return state(f)->inner->xShmLock(f, offset, n, flags); }
static void walShmBarrier(sqlite3_file *f) { state(f)->inner->xShmBarrier(f); }
static int walShmUnmap(sqlite3_file *f, int deleteFlag) { return state(f)->inner->xShmUnmap(f, deleteFlag); }
static int walFetch(sqlite3_file *f, sqlite3_int64 offset, int n, void **out) {
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : state(f)->inner->xFetch(f, offset, n, out);
}
static int walUnfetch(sqlite3_file *f, sqlite3_int64 offset, void *p) { return state(f)->inner->xUnfetch(f, offset, p); }

static int walVfsOpen(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *outFlags) {
    (void)v;
    Coalescing *c = state(f);
    memset(c, 0, sizeof *c);
    int rc = base->xOpen(base, name, f, flags, outFlags);
    // Other files keep the default VFS's methods (and never reach the functions above).
    if (rc != SQLITE_OK || f->pMethods == NULL || (flags & SQLITE_OPEN_WAL) == 0 || f->pMethods->iVersion < 3) return rc;
    c->inner = f->pMethods;
    f->pMethods = &methods;
    return rc;
}

int sb_wal_vfs_register(void) {
    if (sqlite3_vfs_find(SB_WAL_VFS_NAME) != NULL) return SQLITE_OK;
    base = sqlite3_vfs_find(NULL);
    if (base == NULL) return SQLITE_ERROR;
    innerSize = (base->szOsFile + 7) & ~7;
    vfs = *base;
    vfs.szOsFile = innerSize + (int)sizeof(Coalescing);
    vfs.zName = SB_WAL_VFS_NAME;
    vfs.pNext = NULL;
    vfs.xOpen = walVfsOpen;
    methods = (sqlite3_io_methods){
        .iVersion = 3,
        .xClose = walClose, .xRead = walRead, .xWrite = walWrite, .xTruncate = walTruncate, .xSync = walSync,
        .xFileSize = walFileSize, .xLock = walLock, .xUnlock = walUnlock, .xCheckReservedLock = walCheckReservedLock,
        .xFileControl = walFileControl, .xSectorSize = walSectorSize, .xDeviceCharacteristics = walDeviceCharacteristics,
        .xShmMap = walShmMap, .xShmLock = walShmLock, .xShmBarrier = walShmBarrier, .xShmUnmap = walShmUnmap,
        .xFetch = walFetch, .xUnfetch = walUnfetch,
    };
    return sqlite3_vfs_register(&vfs, 0);
}

int sb_wal_vfs_file_stats(sqlite3 *db, long long *sqlite_writes, long long *file_writes) {
    sqlite3_file *f = NULL;
    int rc = sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
    if (rc != SQLITE_OK) return rc;
    if (f == NULL || f->pMethods != &methods) return SQLITE_NOTFOUND;
    *sqlite_writes = state(f)->sqliteWrites;
    *file_writes = state(f)->fileWrites;
    return SQLITE_OK;
}
