package mapping

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/jmoiron/sqlx"
)

// TestWALBufferKeepsSpilledTransactions runs a transaction far larger than
// its page cache through the writer's VFS: SQLite spills pages to the log
// before the commit, writes some of them again and reads them back. Another
// connection must then see exactly what was committed, in a sound database.
func TestWALBufferKeepsSpilledTransactions(t *testing.T) {
	ctx := context.Background()
	if err := registerWALBuffer(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "spill.db")
	w, err := sqlx.Open(sqliteDriver, SQLiteDSN(path, true)+"&vfs="+walBufferVFS)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	for _, q := range []string{`PRAGMA cache_size = 10`, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`, `CREATE INDEX t_v ON t (v)`} {
		if _, err := w.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	tx, err := w.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	const rows = 5000
	for i := range rows {
		if _, err := tx.ExecContext(ctx, `INSERT INTO t (id, v) VALUES (?, ?)`, i, fmt.Sprintf("%0200d", i*7919%rows)); err != nil {
			t.Fatal(err)
		}
	}
	// Pages spilled above are changed again, and read back to be changed.
	if _, err := tx.ExecContext(ctx, `UPDATE t SET v = v || 'x' WHERE id % 2 = 0`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	r, err := sqlx.Open(sqliteDriver, SQLiteDSN(path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var check string
	if err := r.GetContext(ctx, &check, `PRAGMA integrity_check`); err != nil || check != "ok" {
		t.Fatalf("integrity check: %q, %v", check, err)
	}
	var got struct {
		N       int `db:"n"`
		Changed int `db:"changed"`
		Length  int `db:"length"`
	}
	if err := r.GetContext(ctx, &got, `SELECT COUNT(*) AS n, SUM(v LIKE '%x') AS changed, SUM(LENGTH(v)) AS length FROM t`); err != nil {
		t.Fatal(err)
	}
	if got.N != rows || got.Changed != rows/2 || got.Length != rows*200+rows/2 {
		t.Errorf("another connection sees %d rows, %d changed, %d bytes; want %d, %d, %d", got.N, got.Changed, got.Length, rows, rows/2, rows*200+rows/2)
	}
}
