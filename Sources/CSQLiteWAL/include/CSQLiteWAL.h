#ifndef SWITCHBOARD_CSQLITEWAL_H
#define SWITCHBOARD_CSQLITEWAL_H
#include <sqlite3.h>

// A SQLite VFS over the platform's default one that gathers the appends to a WAL file and
// writes them with one pwrite when a transaction's commit frame is complete (see
// wal_vfs.c). Every other file, and every other call, goes to the default VFS unchanged.

// The VFS's name, for sqlite3_open_v2.
#define SB_WAL_VFS_NAME "switchboard-wal"

// Registers the VFS (not as the default). Safe to call more than once; SQLITE_OK or an error.
int sb_wal_vfs_register(void);

// For the WAL of connection db (on the thread using db): the writes SQLite made to it since it
// was opened, and the writes made to the file for them. SQLITE_NOTFOUND when the connection has
// no WAL open through this VFS.
int sb_wal_vfs_file_stats(sqlite3 *db, long long *sqlite_writes, long long *file_writes);

#endif
