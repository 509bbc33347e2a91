package mapping

/*
int bridge_register_wal_buffer(const char *name);
*/
import "C"

import (
	"fmt"
	"sync"
)

// walBufferVFS names the SQLite VFS the writer connection opens the database
// with (walbuffer.c). It wraps the default VFS and changes one thing: a
// commit's writes to the write-ahead log are gathered in memory and written
// with one system call when SQLite syncs the log at the end of the commit,
// instead of two per page, before the commit is published to other
// connections. That sync does not wait for the disk: the store syncs the log
// itself before it acknowledges (see syncLoop), except after a new log
// header, which it syncs as SQLite asks. Every other file, and every other
// connection, uses the default VFS unchanged.
//
// Its contract with the connections that use it: synchronous=FULL, so that
// SQLite syncs the log at the end of each commit, before publishing it; and
// cache_spill=OFF (writerDriver), so that no frame is written outside a
// commit: a transaction rolled back after spilling would leave frames in the
// buffer, which a later flush would write over another connection's commits.
const walBufferVFS = "bridge-wal-buffer"

// registerWALBuffer registers walBufferVFS with SQLite, once per process.
var registerWALBuffer = sync.OnceValue(func() error {
	// SQLite keeps the name for as long as the VFS is registered: for the life of the process.
	if rc := C.bridge_register_wal_buffer(C.CString(walBufferVFS)); rc != 0 {
		return fmt.Errorf("register the write-ahead-log buffer with SQLite: error %d", int(rc))
	}
	return nil
})
