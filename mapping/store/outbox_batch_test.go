package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
)

// jobsInState writes n messages with one job each and puts every job in state.
func jobsInState(t *testing.T, s *Store, n int, state string) {
	t.Helper()
	var msgs []mapping.Message
	for i := range n {
		msgs = append(msgs, withJobs(fmt.Sprintf("m%d", i), fmt.Sprintf("user-%d", i), fmt.Sprintf("j%d", i)))
	}
	submit(t, s, msgs...)
	if err := s.inTx(context.Background(), func(ctx context.Context, w *writer) error {
		_, err := w.exec(ctx, `UPDATE jobs SET state = ?, attempts = 3`, state)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func countJobs(t *testing.T, s *Store, state string) int {
	t.Helper()
	var n int
	if err := s.read.Get(&n, `SELECT COUNT(*) FROM jobs WHERE state = ?`, state); err != nil {
		t.Fatal(err)
	}
	return n
}

// Pruning more delivered jobs than a batch holds takes several
// transactions, and a message submitted between two of them is stored
// while the pruning is still under way.
func TestPruneDoneInBatches(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	jobsInState(t, s, 250, JobDone)
	clock.Advance(8 * 24 * time.Hour)
	batches := 0
	n, err := s.pruneDone(context.Background(), 7*24*time.Hour, 100, func() {
		batches++
		submit(t, s, identify(fmt.Sprintf("during-%d", batches), "user-during", "", 0))
		if left := countJobs(t, s, JobDone); left == 0 || left == 250 {
			t.Errorf("between batches: %d delivered jobs left, want some pruned and some not", left)
		}
	})
	if err != nil || n != 250 {
		t.Fatalf("prune: got %d, %v; want 250", n, err)
	}
	if batches != 2 {
		t.Errorf("got %d pauses between batches, want 2 (250 jobs, 100 a batch)", batches)
	}
	if left := countJobs(t, s, JobDone); left != 0 {
		t.Errorf("got %d delivered jobs left, want 0", left)
	}
}

// Retrying every dead job revives them in batches, lets ingestion commit
// between batches, and does not revive twice a job that died again meanwhile.
func TestRetryAllInBatches(t *testing.T) {
	s := openTestStore(t, Options{})
	jobsInState(t, s, 250, JobDead)
	var first int64
	if err := s.read.Get(&first, `SELECT MIN(id) FROM jobs`); err != nil {
		t.Fatal(err)
	}
	batches := 0
	n, err := s.retryAll(context.Background(), 100, func() {
		batches++
		submit(t, s, identify(fmt.Sprintf("during-%d", batches), "user-during", "", 0))
		if batches == 1 {
			// The first job was revived and dies again at once.
			if err := s.inTx(context.Background(), func(ctx context.Context, w *writer) error {
				_, err := w.exec(ctx, `UPDATE jobs SET state = 'dead' WHERE id = ?`, first)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
	})
	if err != nil || n != 250 {
		t.Fatalf("retry all: got %d, %v; want 250", n, err)
	}
	if batches != 2 {
		t.Errorf("got %d pauses between batches, want 2", batches)
	}
	if dead := countJobs(t, s, JobDead); dead != 1 {
		t.Errorf("got %d dead jobs, want 1 (the one that died again)", dead)
	}
	var stored int
	if err := s.read.Get(&stored, `SELECT COUNT(*) FROM messages WHERE message_id LIKE 'during-%'`); err != nil || stored != 2 {
		t.Errorf("messages stored between batches: got %d, %v; want 2", stored, err)
	}
}

// Done and dead jobs report no runAt; a pending one its due time.
func TestJobsRunAt(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	submit(t, s, withJobs("m1", "user-a", "a1"), withJobs("m2", "user-b", "b1"), withJobs("m3", "user-c", "c1"))
	jobs, err := s.Claim(context.Background(), []string{"fake"}, 10, nil, time.Minute)
	if err != nil || len(jobs) != 3 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	if err := s.Record(context.Background(), []outbox.Delivery{
		{ID: jobs[0].ID, Attempts: jobs[0].Attempts, Claimed: jobs[0].Attempts, Outcome: outbox.Outcome{Result: outbox.ResultDone}},
		{ID: jobs[1].ID, Attempts: jobs[1].Attempts, Claimed: jobs[1].Attempts, Outcome: outbox.Outcome{Result: outbox.ResultDead, LastError: "permanent: 400"}},
		{ID: jobs[2].ID, Attempts: jobs[2].Attempts, Claimed: jobs[2].Attempts, Outcome: outbox.Outcome{Result: outbox.ResultRetry, RunAt: t0.Add(time.Minute), LastError: "503"}},
	}); err != nil {
		t.Fatal(err)
	}
	all, err := s.Jobs(context.Background(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range all {
		switch j.State {
		case JobDone, JobDead:
			if j.RunAt != nil {
				t.Errorf("%s job: got runAt %v, want none", j.State, *j.RunAt)
			}
		case JobPending:
			if j.RunAt == nil || !j.RunAt.Equal(t0.Add(time.Minute)) {
				t.Errorf("pending job: got runAt %v, want %v", j.RunAt, t0.Add(time.Minute))
			}
		}
	}
	var stored []int64
	if err := s.read.Select(&stored, `SELECT run_at FROM jobs WHERE state IN ('done', 'dead')`); err != nil {
		t.Fatal(err)
	}
	for _, r := range stored {
		if r != 0 {
			t.Errorf("done or dead job stored run_at %d, want 0", r)
		}
	}
}

// makeDue walks the pending jobs in windows of a batch and makes only the
// given destination's waiting jobs due; other destinations keep their time.
func TestMakeDueInBatches(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	var msgs []mapping.Message
	for i := range 35 {
		m := identify(fmt.Sprintf("m%d", i), fmt.Sprintf("user-%d", i), "", 0)
		dest := "resumed"
		if i%3 == 0 {
			dest = "other"
		}
		m.Jobs = []mapping.Job{{Destination: dest, OrderingKey: m.UserID, MessageID: m.ID, Payload: []byte(`{}`)}}
		msgs = append(msgs, m)
	}
	submit(t, s, msgs...)
	later := t0.Add(time.Hour).UnixNano()
	if err := s.inTx(context.Background(), func(ctx context.Context, w *writer) error {
		_, err := w.exec(ctx, `UPDATE jobs SET run_at = ?, attempts = 2`, later)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	n, err := s.makeDue(context.Background(), "resumed", 10)
	if err != nil || n != 23 {
		t.Fatalf("makeDue: got %d, %v; want the 23 jobs of the resumed destination", n, err)
	}
	var rows []struct {
		Destination string `db:"destination"`
		RunAt       int64  `db:"run_at"`
	}
	if err := s.read.Select(&rows, `SELECT destination, run_at FROM jobs`); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		want := later
		if r.Destination == "resumed" {
			want = t0.UnixNano()
		}
		if r.RunAt != want {
			t.Errorf("%s job: got run_at %d, want %d", r.Destination, r.RunAt, want)
		}
	}
}
