package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

func TestInsertShape(t *testing.T) {
	tests := []struct {
		name, query            string
		head, tuple, tail, tbl string
		n                      int
	}{
		{"one row", `INSERT INTO clusters (id, last_key) VALUES (?, '')`, `INSERT INTO clusters (id, last_key) VALUES `, `(?, '')`, ``, "clusters", 1},
		{"rows and a tail", `INSERT INTO message_refs (identifier_id, message_id) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING`,
			`INSERT INTO message_refs (identifier_id, message_id) VALUES `, `(?, ?)`, ` ON CONFLICT DO NOTHING`, "message_refs", 2},
		{"an update", `UPDATE identifiers SET warning = ? WHERE id = ?`, ``, ``, ``, "identifiers", 1},
		{"a delete", `DELETE FROM profiles WHERE id = ?`, ``, ``, ``, "profiles", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, tuple, tail, n := insertShape(tt.query)
			if head != tt.head || tuple != tt.tuple || tail != tt.tail || n != tt.n {
				t.Errorf("insertShape = %q, %q, %q, %d; want %q, %q, %q, %d", head, tuple, tail, n, tt.head, tt.tuple, tt.tail, tt.n)
			}
			if got := tableOf(tt.query); got != tt.tbl {
				t.Errorf("tableOf = %q, want %q", got, tt.tbl)
			}
		})
	}
}

// TestWriteBehind checks, on either engine, what later promises: a read
// sees every write before it (rows merged or not), and a write that fails
// fails the function that made it, naming the statement, while the rest
// of the group stands.
func TestWriteBehind(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	var n int
	var key string
	err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
		for i := range 300 { // more than mergedRowsMax: several merged statements
			if err := w.later(ctx, "create cluster", `INSERT INTO clusters (id, last_key) VALUES (?, ?)`, 1000+i, fmt.Sprint("k", i)); err != nil {
				return err
			}
		}
		if err := w.later(ctx, "update cluster", `UPDATE clusters SET last_key = ? WHERE id = ?`, "updated", 1299); err != nil {
			return err
		}
		if err := w.get(ctx, &n, `SELECT COUNT(*) FROM clusters WHERE id >= 1000`); err != nil {
			return err
		}
		return w.get(ctx, &key, `SELECT last_key FROM clusters WHERE id = ?`, 1299)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 300 || key != "updated" {
		t.Errorf("read %d clusters, the last one's key %q; want 300 and %q", n, key, "updated")
	}

	// Two functions in one group: the first's failing write is rolled back with it, the second's stands.
	errs := make(chan error, 2)
	start := make(chan struct{})
	for i, id := range []int{1000, 2000} { // 1000 exists: the first fails, after writing 3000
		go func() {
			<-start
			errs <- s.inTx(ctx, func(ctx context.Context, w *writer) error {
				if err := w.later(ctx, "create cluster", `INSERT INTO clusters (id, last_key) VALUES (?, ?)`, id+2000, "new"); err != nil {
					return err
				}
				return w.later(ctx, fmt.Sprint("create cluster ", i), `INSERT INTO clusters (id, last_key) VALUES (?, ?)`, id, "again")
			})
		}()
	}
	close(start)
	var failed []error
	for range 2 {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0].Error(), "create cluster 0") {
		t.Fatalf("errors %v; want one, naming the statement %q", failed, "create cluster 0")
	}
	var ids []int64
	if err := s.read.SelectContext(ctx, &ids, s.read.Rebind(`SELECT id FROM clusters WHERE id IN (2000, 3000, 4000) ORDER BY id`)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids) != "[2000 4000]" {
		t.Errorf("clusters %v stored; want [2000 4000] (3000 rolled back with its function)", ids)
	}
}

// TestWriterAssignedIDs checks the IDs the writer assigns to the rows it
// creates: a profile's ID is never given again, even after the profile
// with the largest ID is gone (it names the profile's first cluster), and
// a message stored twice in one group, or again in a later one, is one row.
func TestWriterAssignedIDs(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	profileOf := func(userID string) int64 {
		t.Helper()
		p, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: userID})
		if err != nil {
			t.Fatal(err)
		}
		return p.ID
	}
	submit(t, s, identify("m1", "user-1", "anon-1", 0), identify("m2", "user-2", "", time.Second))
	first, second := profileOf("user-1"), profileOf("user-2")
	if second <= first {
		t.Fatalf("profiles %d then %d; want increasing IDs in the group's order", first, second)
	}
	// The profile with the largest ID goes (as an erasure would take it:
	// user-2 alone, with no links).
	for _, q := range []string{`DELETE FROM message_refs WHERE identifier_id IN (SELECT id FROM identifiers WHERE profile_id = ?)`,
		`DELETE FROM identifiers WHERE profile_id = ?`, `DELETE FROM profiles WHERE id = ?`} {
		if _, err := s.write.ExecContext(ctx, s.write.Rebind(q), second); err != nil {
			t.Fatal(err)
		}
	}
	r := submit(t, s, identify("m3", "user-3", "anon-3", 2*time.Second), identify("m3", "user-3", "anon-3", 2*time.Second))
	if third := profileOf("user-3"); third <= second {
		t.Errorf("a new profile got ID %d after profile %d was deleted; want a larger one (never reused)", third, second)
	}
	if r[0].Duplicate || !r[1].Duplicate {
		t.Errorf("receipts %+v for one message twice in a group; want the second a duplicate", r)
	}
	if r := submit(t, s, identify("m1", "user-1", "anon-1", 0)); !r[0].Duplicate {
		t.Errorf("receipt %+v for a message stored before; want a duplicate", r[0])
	}
	var messages int
	if err := s.read.GetContext(ctx, &messages, `SELECT COUNT(*) FROM messages`); err != nil {
		t.Fatal(err)
	}
	if messages != 3 {
		t.Errorf("%d messages stored; want 3", messages)
	}
}
