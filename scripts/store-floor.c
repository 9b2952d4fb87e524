// What the embedded engines cost per stored row, with nothing of Switchboard around them:
// the rows the store appends for a relayed command (a journal entry: session id, numbers,
// direction, a 300-byte message body, a command id), committed in groups of ROWS_PER_COMMIT
// as the group commit does at 100 sessions, each engine set for the same guarantee as the
// shipped store (a commit survives a crash of the process; no fsync per commit). Prints CPU
// microseconds per row (user + system, all threads of the process: a background flush or
// compaction counts) and wall microseconds per row.
//
//   cc -O2 scripts/store-floor.c -o /tmp/store-floor -lsqlite3 [-DWITH_LMDB -llmdb] [-DWITH_ROCKSDB -lrocksdb]
//   taskset -c 0 /tmp/store-floor DIR
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#ifdef WITH_LMDB
#include <lmdb.h>
#endif
#ifdef WITH_ROCKSDB
#include <rocksdb/c.h>
#endif

enum { TOTAL = 400000, ROWS_PER_COMMIT = 40, BODY = 300 };
static char body[BODY];
static char dir[512];

static double wall(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu(void) {
    struct rusage u; getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}
static double w0, c0;
static void start(void) { w0 = wall(); c0 = cpu(); }
static void report_rows(const char *name, long rows) {
    printf("%-44s cpu %5.2f us/row  wall %5.2f us/row\n", name, (cpu() - c0) / rows * 1e6, (wall() - w0) / rows * 1e6);
    fflush(stdout);
}
static void report(const char *name) { report_rows(name, TOTAL); }
static void path(char *out, const char *name) { snprintf(out, 600, "%s/%s", dir, name); }
static void check(int ok, const char *what) { if (!ok) { fprintf(stderr, "store-floor: %s failed\n", what); exit(1); } }

// SQLite as the shipped store sets it: WAL, synchronous=NORMAL, a checkpoint every 4096 WAL
// pages. `per` rows per INSERT statement (the store writes journal rows 8 per statement).
static void sqlite_run(int per, int checkpoints) {
    char p[600], sql[8192]; path(p, "floor.db");
    char w[700]; snprintf(w, sizeof w, "%s-wal", p); unlink(p); unlink(w);
    sqlite3 *db; check(sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, 0) == SQLITE_OK, "sqlite open");
    char pragmas[300];
    snprintf(pragmas, sizeof pragmas, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=%d;", checkpoints ? 4096 : 0);
    check(sqlite3_exec(db, pragmas, 0, 0, 0) == SQLITE_OK, "pragmas");
    check(sqlite3_exec(db, "CREATE TABLE entries (g INTEGER PRIMARY KEY, session TEXT NOT NULL, n INTEGER NOT NULL, direction TEXT NOT NULL, "
                           "ts INTEGER NOT NULL, body BLOB NOT NULL, stream INTEGER, seq INTEGER, command_id TEXT, journaled INTEGER NOT NULL)", 0, 0, 0) == SQLITE_OK, "create");
    strcpy(sql, "INSERT INTO entries (session, n, direction, ts, body, stream, seq, command_id, journaled) VALUES (?,?,?,?,?,?,?,?,?)");
    for (int i = 1; i < per; i++) strcat(sql, ",(?,?,?,?,?,?,?,?,?)");
    sqlite3_stmt *st; check(sqlite3_prepare_v2(db, sql, -1, &st, 0) == SQLITE_OK, "prepare");
    start();
    for (int n = 0; n < TOTAL;) {
        sqlite3_exec(db, "BEGIN", 0, 0, 0);
        for (int r = 0; r < ROWS_PER_COMMIT; r += per) {
            for (int j = 0; j < per; j++) {
                int b = j * 9;
                sqlite3_bind_text(st, b + 1, "0b7c5d3e-2f4a-4c1e-9a8b-6d5e4f3a2b1c", -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(st, b + 2, n + j);
                sqlite3_bind_text(st, b + 3, "server_to_client", -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, b + 4, 1764700000000);
                sqlite3_bind_blob(st, b + 5, body, BODY, SQLITE_TRANSIENT);
                sqlite3_bind_int64(st, b + 6, 1);
                sqlite3_bind_int64(st, b + 7, n + j);
                sqlite3_bind_text(st, b + 8, "cmd-000123", -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(st, b + 9, 1);
            }
            check(sqlite3_step(st) == SQLITE_DONE, "insert");
            sqlite3_reset(st);
            n += per;
        }
        check(sqlite3_exec(db, "COMMIT", 0, 0, 0) == SQLITE_OK, "commit");
    }
    char name[100];
    snprintf(name, sizeof name, "sqlite, %d row%s per INSERT%s", per, per > 1 ? "s" : "", checkpoints ? "" : ", no checkpoints");
    report(name);
    sqlite3_finalize(st); sqlite3_close(db); unlink(p); unlink(w);
}

// The row as one value: what an engine with byte keys and values would store.
static size_t encode(char *out, long n) {
    size_t k = (size_t)snprintf(out, 200, "0b7c5d3e-2f4a-4c1e-9a8b-6d5e4f3a2b1c|%ld|server_to_client|1764700000000|1|%ld|cmd-000123|1|", n, n);
    memcpy(out + k, body, BODY);
    return k + BODY;
}
static void key(unsigned char *k, unsigned long n) { for (int i = 7; i >= 0; i--) { k[i] = n & 0xFF; n >>= 8; } }

#ifdef WITH_LMDB
// LMDB appending in key order (MDB_APPEND). With MDB_NOSYNC no commit syncs: a commit survives
// the process, but an OS crash can leave the file corrupt. MDB_NOMETASYNC is LMDB's lightest
// setting that keeps the file intact through an OS crash (it may lose the latest commit): the
// data pages of every commit are synced, the meta page is not. That one runs `rows` rows.
static void lmdb_run(unsigned flags, long rows, const char *name) {
    char p[600]; path(p, "floor.mdb"); unlink(p); { char l[700]; snprintf(l, sizeof l, "%s-lock", p); unlink(l); }
    MDB_env *env; MDB_dbi dbi; MDB_txn *txn;
    check(mdb_env_create(&env) == 0, "lmdb env");
    mdb_env_set_mapsize(env, (size_t)4 << 30);
    check(mdb_env_open(env, p, MDB_NOSUBDIR | flags, 0600) == 0, "lmdb open");
    mdb_txn_begin(env, 0, 0, &txn); mdb_dbi_open(txn, 0, 0, &dbi); mdb_txn_commit(txn);
    char v[600]; unsigned char k[8];
    start();
    for (long n = 0; n < rows;) {
        check(mdb_txn_begin(env, 0, 0, &txn) == 0, "lmdb begin");
        for (int r = 0; r < ROWS_PER_COMMIT; r++, n++) {
            key(k, (unsigned long)n);
            MDB_val mk = { 8, k }, mv = { encode(v, n), v };
            check(mdb_put(txn, dbi, &mk, &mv, MDB_APPEND) == 0, "lmdb put");
        }
        check(mdb_txn_commit(txn) == 0, "lmdb commit");
    }
    report_rows(name, rows);
    mdb_env_close(env); unlink(p); { char l[700]; snprintf(l, sizeof l, "%s-lock", p); unlink(l); }
}

// What an LMDB store would write per relayed command, as `switchboard bench-store` does through
// the shipped store: four journal entries appended in key order and the session's state
// snapshot written twice (after the command, after its result; in place, one key per
// session), for 100 sessions in turn, `per_commit` commands per commit.
static void lmdb_commands(unsigned flags, int per_commit, long commands, const char *setting) {
    char p[600]; path(p, "floor.mdb"); unlink(p); { char l[700]; snprintf(l, sizeof l, "%s-lock", p); unlink(l); }
    MDB_env *env; MDB_dbi entries, states; MDB_txn *txn;
    check(mdb_env_create(&env) == 0, "lmdb env");
    mdb_env_set_mapsize(env, (size_t)4 << 30);
    mdb_env_set_maxdbs(env, 2);
    check(mdb_env_open(env, p, MDB_NOSUBDIR | flags, 0600) == 0, "lmdb open");
    mdb_txn_begin(env, 0, 0, &txn);
    check(mdb_dbi_open(txn, "entries", MDB_CREATE, &entries) == 0 && mdb_dbi_open(txn, "states", MDB_CREATE, &states) == 0, "lmdb dbs");
    mdb_txn_commit(txn);
    char v[600], s[400], id[64]; unsigned char k[8];
    long g = 0;
    start();
    for (long c = 0; c < commands;) {
        check(mdb_txn_begin(env, 0, 0, &txn) == 0, "lmdb begin");
        for (int r = 0; r < per_commit && c < commands; r++, c++) {
            int sid = (int)(c % 100);
            MDB_val ik = { (size_t)snprintf(id, sizeof id, "bench-%d", sid), id };
            for (int e = 0; e < 4; e++, g++) {
                key(k, (unsigned long)g);
                MDB_val mk = { 8, k }, mv = { encode(v, g), v };
                check(mdb_put(txn, entries, &mk, &mv, MDB_APPEND) == 0, "lmdb put");
                if (e == 1 || e == 3) {
                    MDB_val sv = { (size_t)snprintf(s, sizeof s, "{\"lastClientSeq\":%ld,\"commandCounter\":%ld,\"commandCount\":%ld,"
                        "\"seqReserved\":{\"worker\":10000,\"client\":10000},\"grace\":{}%s}", c, c, c,
                        e == 1 ? ",\"pending\":{\"id\":\"c1\",\"kind\":\"command\",\"command\":\"evaluate\",\"deadline\":1700000000000,"
                                 "\"startedAt\":1700000000000,\"optional\":false}" : ""), s };
                    check(mdb_put(txn, states, &ik, &sv, 0) == 0, "lmdb state");
                }
            }
        }
        check(mdb_txn_commit(txn) == 0, "lmdb commit");
    }
    printf("lmdb, %-14s %4d commands per commit: cpu %5.2f us/command  wall %6.2f us/command\n", setting, per_commit,
           (cpu() - c0) / commands * 1e6, (wall() - w0) / commands * 1e6);
    fflush(stdout);
    mdb_env_close(env); unlink(p); { char l[700]; snprintf(l, sizeof l, "%s-lock", p); unlink(l); }
}
#endif

#ifdef WITH_ROCKSDB
// RocksDB with its write-ahead log and no sync per write (a write survives the process);
// memtable flushes and compactions run on its background threads and count in the CPU.
static void rocksdb_run(void) {
    char p[600]; path(p, "floor.rocksdb");
    char cmd[700]; snprintf(cmd, sizeof cmd, "rm -rf '%s'", p); (void)system(cmd);
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    char *err = 0;
    rocksdb_t *db = rocksdb_open(o, p, &err); check(err == 0, "rocksdb open");
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 0);
    char v[600]; unsigned char k[8];
    start();
    for (long n = 0; n < TOTAL;) {
        rocksdb_writebatch_t *b = rocksdb_writebatch_create();
        for (int r = 0; r < ROWS_PER_COMMIT; r++, n++) { key(k, (unsigned long)n); rocksdb_writebatch_put(b, (char *)k, 8, v, encode(v, n)); }
        rocksdb_write(db, wo, b, &err); check(err == 0, "rocksdb write");
        rocksdb_writebatch_destroy(b);
    }
    report("rocksdb, WAL without sync, one batch per commit");
    rocksdb_writeoptions_destroy(wo); rocksdb_close(db); rocksdb_options_destroy(o);
    (void)system(cmd);
}
#endif

int main(int argc, char **argv) {
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : ".");
    memset(body, 'x', BODY);
    printf("%d rows of %d-byte bodies, %d rows per commit\n", TOTAL, BODY, ROWS_PER_COMMIT);
    sqlite_run(1, 1);
    sqlite_run(8, 1);
    sqlite_run(1, 0);
#ifdef WITH_LMDB
    lmdb_run(MDB_NOSYNC, TOTAL, "lmdb, MDB_NOSYNC, MDB_APPEND");
    lmdb_run(MDB_NOMETASYNC, TOTAL / 10, "lmdb, MDB_NOMETASYNC (a sync per commit)");
    printf("per relayed command (4 journal entries, 2 state writes; 100 sessions):\n");
    int sizes[] = { 5, 40, 130, 500 };
    for (int i = 0; i < 4; i++) lmdb_commands(MDB_NOSYNC, sizes[i], TOTAL / 4, "MDB_NOSYNC,");
    for (int i = 0; i < 4; i++) lmdb_commands(MDB_NOMETASYNC, sizes[i], sizes[i] * 400L, "MDB_NOMETASYNC,");
#endif
#ifdef WITH_ROCKSDB
    rocksdb_run();
#endif
    return 0;
}
