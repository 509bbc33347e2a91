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

// groupOf has the committer take first's submission and then fn in one
// group: it holds the committer with a function until both are queued.
// It returns their errors.
func groupOf(t *testing.T, s *Store, first func() error, fn func(ctx context.Context, w *writer) error) (error, error) {
	t.Helper()
	release := holdCommitter(t, s)
	firstErr, fnErr := make(chan error, 1), make(chan error, 1)
	go func() { firstErr <- first() }()
	waitQueued(t, s, 1)
	go func() { fnErr <- s.inTx(context.Background(), fn) }()
	waitQueued(t, s, 2)
	release()
	return <-firstErr, <-fnErr
}

// holdCommitter keeps the committer in a function of its own until
// release is called, which returns once that function's group committed.
func holdCommitter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	running, done := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- s.inTx(context.Background(), func(context.Context, *writer) error { close(running); <-done; return nil })
	}()
	<-running
	return func() {
		close(done)
		if err := <-held; err != nil {
			t.Fatal(err)
		}
	}
}

// waitQueued waits until n submissions (messages and functions) wait for the committer.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.queue)+len(s.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d submissions queued after 10s; want %d", len(s.queue)+len(s.ops), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQueuedWriteFailsItsGroup checks that a message's write that fails
// when written behind, at the SAVEPOINT of a function after it in the same
// group, fails the message's submission (committed one by one, without it),
// not the function: no message is acknowledged half applied.
func TestQueuedWriteFailsItsGroup(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	trigger := []string{`CREATE TRIGGER boom BEFORE INSERT ON links WHEN NEW.message_id = 'bad' BEGIN SELECT RAISE(ABORT, 'boom'); END`}
	if s.postgres {
		trigger = []string{`CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN IF NEW.message_id = 'bad' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`,
			`CREATE TRIGGER boom BEFORE INSERT ON links FOR EACH ROW EXECUTE FUNCTION boom()`}
	}
	for _, q := range trigger {
		if _, err := s.write.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	ran := false
	msgErr, fnErr := groupOf(t, s, func() error {
		// The first message reads what the group needs once, so that the
		// second's link is still queued when the function starts.
		_, err := s.Submit(ctx, []mapping.Message{identify("ok", "user-0", "anon-0", 0), identify("bad", "user-1", "anon-1", time.Second)})
		return err
	}, func(ctx context.Context, w *writer) error { ran = true; return nil })
	if msgErr == nil || !strings.Contains(msgErr.Error(), "boom") {
		t.Errorf("submission whose link failed: error %v; want the trigger's", msgErr)
	}
	if fnErr != nil || !ran {
		t.Errorf("function after it in the group: ran %v, error %v; want it run, without error", ran, fnErr)
	}
	var messages, links int
	if err := s.read.GetContext(ctx, &messages, `SELECT COUNT(*) FROM messages`); err != nil {
		t.Fatal(err)
	}
	if err := s.read.GetContext(ctx, &links, `SELECT COUNT(*) FROM links`); err != nil {
		t.Fatal(err)
	}
	if messages != 0 || links != 0 {
		t.Errorf("%d messages and %d links stored; want none (the failed submission rolled back whole)", messages, links)
	}
}

// TestMessageAgainAfterItsErasureInTheGroup checks that a message erased
// by a deletion earlier in its group is stored again, as in a later group,
// rather than taken for a duplicate of the erased row.
func TestMessageAgainAfterItsErasureInTheGroup(t *testing.T) {
	for _, sameGroup := range []bool{true, false} {
		s := openTestStore(t, Options{}) // no deletion grace: erased at once
		ctx := context.Background()
		m1 := identify("m1", "user-1", "anon-1", 0)
		submit(t, s, m1)
		del := mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", UserID: "user-1", Timestamp: t0.Add(time.Hour), ReceivedAt: t0}
		var r mapping.Receipt
		if sameGroup {
			r = submit(t, s, del, m1)[1]
		} else {
			submit(t, s, del)
			r = submit(t, s, m1)[0]
		}
		var rows int
		if err := s.read.GetContext(ctx, &rows, `SELECT COUNT(*) FROM messages WHERE message_id = 'm1'`); err != nil {
			t.Fatal(err)
		}
		if r.Duplicate || rows != 1 {
			t.Errorf("same group %v: receipt %+v and %d rows for the message sent again after its erasure; want it stored, not a duplicate", sameGroup, r, rows)
		}
	}
}

// TestFunctionsGoAheadOfQueuedMessages checks that the store's own
// functions (outbox claims and outcomes) join the next group rather than
// wait behind every message queued before them: under a load that keeps
// the queue full, delivery would otherwise fall behind without end.
func TestFunctionsGoAheadOfQueuedMessages(t *testing.T) {
	s := openTestStore(t, Options{MaxGroup: 1})
	ctx := context.Background()
	const queued = 5
	release := holdCommitter(t, s)
	submitted := make(chan error, queued)
	for i := range queued {
		go func() {
			_, err := s.Submit(ctx, []mapping.Message{identify(fmt.Sprintf("m%d", i), fmt.Sprintf("user-%d", i), fmt.Sprintf("anon-%d", i), 0)})
			submitted <- err
		}()
		waitQueued(t, s, i+1)
	}
	var storedBefore int
	fnErr := make(chan error, 1)
	go func() {
		fnErr <- s.inTx(ctx, func(ctx context.Context, w *writer) error {
			return w.get(ctx, &storedBefore, `SELECT COUNT(*) FROM messages`)
		})
	}()
	waitQueued(t, s, queued+1)
	release()
	if err := <-fnErr; err != nil {
		t.Fatal(err)
	}
	for range queued {
		if err := <-submitted; err != nil {
			t.Fatal(err)
		}
	}
	// Groups hold one message each: the function joins the first of them.
	if storedBefore > 1 {
		t.Errorf("the function ran after %d of the %d messages queued before it; want it in the first group (at most 1)", storedBefore, queued)
	}
}
