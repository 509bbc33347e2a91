/*
** A VFS for the store's writer connection: it gathers a commit's writes to
** the write-ahead log in memory and hands them to the operating system in
** one write at the commit's sync point, instead of two system calls per
** page (a frame header and the page). See walbuffer.go for the contract.
**
** Only files opened as write-ahead logs are wrapped; the database file and
** every other file are opened directly by the underlying VFS.
*/
#include <stdlib.h>
#include <string.h>

#include "sqlite_vfs.h"

/* The most the default (unix) VFS writes in one call: 31 frames of 4 KiB pages. */
#define WAL_BUFFER_SIZE 0x1ffff

/* A write-ahead log opened through the buffering VFS. The underlying
** VFS's file follows it in the memory SQLite allocates (szOsFile). */
typedef struct BufferedLog {
  sqlite3_file base;
  sqlite3_file *real;
  char *buf;          /* writes not yet passed on */
  int len;            /* bytes in buf */
  sqlite3_int64 at;   /* file offset of buf[0] */
} BufferedLog;

static sqlite3_vfs *underlying;
static sqlite3_vfs buffering;

/* flush passes the pending writes on. The buffer is empty afterwards even
** if the write fails: SQLite then fails the transaction, and frames past
** the last commit are never read. */
static int flush(BufferedLog *f) {
  int rc;
  if (f->len == 0) return SQLITE_OK;
  rc = f->real->pMethods->xWrite(f->real, f->buf, f->len, f->at);
  f->len = 0;
  return rc;
}

static int overlapsPending(BufferedLog *f, sqlite3_int64 off, int n) {
  return f->len > 0 && off < f->at + f->len && off + n > f->at;
}

/* logWrite adds a write that continues the pending ones to the buffer;
** any other write first passes the pending ones on, so the file sees every
** write in the order SQLite made it. */
static int logWrite(sqlite3_file *p, const void *data, int n, sqlite3_int64 off) {
  BufferedLog *f = (BufferedLog *)p;
  int rc;
  if (f->len > 0 && off == f->at + f->len && f->len + n <= WAL_BUFFER_SIZE) {
    memcpy(f->buf + f->len, data, n);
    f->len += n;
    return SQLITE_OK;
  }
  rc = flush(f);
  if (rc != SQLITE_OK) return rc;
  if (n > WAL_BUFFER_SIZE) return f->real->pMethods->xWrite(f->real, data, n, off);
  memcpy(f->buf, data, n);
  f->at = off;
  f->len = n;
  return SQLITE_OK;
}

static int logRead(sqlite3_file *p, void *data, int n, sqlite3_int64 off) {
  BufferedLog *f = (BufferedLog *)p;
  if (overlapsPending(f, off, n)) {
    int rc = flush(f);
    if (rc != SQLITE_OK) return rc;
  }
  return f->real->pMethods->xRead(f->real, data, n, off);
}

/* logSync is the commit's sync point: the pending writes are passed on
** before SQLite publishes the commit to other connections. It does not
** wait for the disk, the store syncs the log itself before acknowledging,
** except after a new log header: that sync orders the header before the
** frames that follow it, and a log that starts over relies on it. */
static int logSync(sqlite3_file *p, int flags) {
  BufferedLog *f = (BufferedLog *)p;
  int header = f->len > 0 && f->at == 0;
  int rc = flush(f);
  if (rc != SQLITE_OK || !header) return rc;
  return f->real->pMethods->xSync(f->real, flags);
}

static int logClose(sqlite3_file *p) {
  BufferedLog *f = (BufferedLog *)p;
  int rc = flush(f);
  int rc2 = f->real->pMethods->xClose(f->real);
  free(f->buf);
  f->buf = NULL;
  return rc != SQLITE_OK ? rc : rc2;
}

static int logTruncate(sqlite3_file *p, sqlite3_int64 size) {
  BufferedLog *f = (BufferedLog *)p;
  int rc = flush(f);
  if (rc != SQLITE_OK) return rc;
  return f->real->pMethods->xTruncate(f->real, size);
}

static int logFileSize(sqlite3_file *p, sqlite3_int64 *size) {
  BufferedLog *f = (BufferedLog *)p;
  int rc = flush(f);
  if (rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileSize(f->real, size);
}

static int logFileControl(sqlite3_file *p, int op, void *arg) {
  BufferedLog *f = (BufferedLog *)p;
  int rc = flush(f);
  if (rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileControl(f->real, op, arg);
}

#define REAL(p) (((BufferedLog *)(p))->real)

static int logLock(sqlite3_file *p, int level) { return REAL(p)->pMethods->xLock(REAL(p), level); }
static int logUnlock(sqlite3_file *p, int level) { return REAL(p)->pMethods->xUnlock(REAL(p), level); }
static int logCheckReservedLock(sqlite3_file *p, int *out) { return REAL(p)->pMethods->xCheckReservedLock(REAL(p), out); }
static int logSectorSize(sqlite3_file *p) { return REAL(p)->pMethods->xSectorSize(REAL(p)); }
static int logDeviceCharacteristics(sqlite3_file *p) { return REAL(p)->pMethods->xDeviceCharacteristics(REAL(p)); }

/* A log has no shared memory or memory map of its own; version 1 methods suffice. */
static const sqlite3_io_methods logMethods = {
  1,
  logClose,
  logRead,
  logWrite,
  logTruncate,
  logSync,
  logFileSize,
  logLock,
  logUnlock,
  logCheckReservedLock,
  logFileControl,
  logSectorSize,
  logDeviceCharacteristics,
};

static int bufferingOpen(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *p, int flags, int *outFlags) {
  BufferedLog *f = (BufferedLog *)p;
  int rc;
  (void)vfs;
  if (!(flags & SQLITE_OPEN_WAL)) return underlying->xOpen(underlying, name, p, flags, outFlags);
  memset(f, 0, sizeof(*f));
  f->real = (sqlite3_file *)&f[1];
  f->buf = malloc(WAL_BUFFER_SIZE);
  if (f->buf == NULL) return SQLITE_IOERR_NOMEM;
  rc = underlying->xOpen(underlying, name, f->real, flags, outFlags);
  if (rc != SQLITE_OK) {
    if (f->real->pMethods != NULL) f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    return rc;
  }
  p->pMethods = &logMethods;
  return SQLITE_OK;
}

static int bufferingDelete(sqlite3_vfs *vfs, const char *name, int syncDir) {
  (void)vfs;
  return underlying->xDelete(underlying, name, syncDir);
}

static int bufferingAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
  (void)vfs;
  return underlying->xAccess(underlying, name, flags, out);
}

static int bufferingFullPathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
  (void)vfs;
  return underlying->xFullPathname(underlying, name, n, out);
}

/* bridge_register_wal_buffer registers the VFS under name, wrapping the
** default VFS. It returns an SQLite result code. */
int bridge_register_wal_buffer(const char *name) {
  underlying = sqlite3_vfs_find(NULL);
  if (underlying == NULL) return 1; /* SQLITE_ERROR */
  buffering = *underlying;
  buffering.pNext = NULL;
  buffering.zName = name;
  buffering.szOsFile = (int)sizeof(BufferedLog) + underlying->szOsFile;
  buffering.xOpen = bufferingOpen;
  buffering.xDelete = bufferingDelete;
  buffering.xAccess = bufferingAccess;
  buffering.xFullPathname = bufferingFullPathname;
  return sqlite3_vfs_register(&buffering, 0);
}
