package mapping

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/jmoiron/sqlx"
)

// TestWALBufferKeepsLargeTransactions runs a transaction far larger than
// its page cache through a writer connection: it changes pages again and
// reads them back before one commit writes them all. Another connection
// must then see exactly what was committed, in a sound database.
func TestWALBufferKeepsLargeTransactions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "large.db")
	w, err := openSQLite(path, true)
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

// TestWALBufferRollbackWritesNothing is the case the writers' contract
// (cache_spill=OFF) exists for: a transaction larger than the page cache is
// rolled back, another connection commits, then the writer commits. Had the
// rolled-back transaction left frames in the buffer, the writer's commit
// would write them over the other connection's.
func TestWALBufferRollbackWritesNothing(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rollback.db")
	w, err := openSQLite(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	other, err := sqlx.Open(sqliteDriver, SQLiteDSN(path, true))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := w.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{`PRAGMA cache_size = 10`, `CREATE TABLE big (v BLOB)`, `CREATE TABLE small (v TEXT)`,
		`BEGIN IMMEDIATE`} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for range 25 {
		if _, err := conn.ExecContext(ctx, `INSERT INTO big VALUES (randomblob(3000))`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := other.ExecContext(ctx, `INSERT INTO small VALUES ('other')`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO small VALUES ('writer')`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := other.GetContext(ctx, &n, `SELECT COUNT(*) FROM small`); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d rows committed are there, want 4", n)
	}
}
