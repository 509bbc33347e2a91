package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
)

// scriptedSender records deliveries and fails according to a script.
type scriptedSender struct {
	mu        sync.Mutex
	delivered []string // message IDs, in order
	failures  map[string][]error
}

func (s *scriptedSender) Send(_ context.Context, j mapping.Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if errs := s.failures[j.MessageID]; len(errs) > 0 {
		s.failures[j.MessageID] = errs[1:]
		return errs[0]
	}
	s.delivered = append(s.delivered, j.MessageID)
	return nil
}

func (s *scriptedSender) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.delivered...)
}

func withJobs(id, user string, jobIDs ...string) mapping.Message {
	m := identify(id, user, "", 0)
	for _, j := range jobIDs {
		m.Jobs = append(m.Jobs, mapping.Job{Destination: "fake", OrderingKey: user, MessageID: j, Payload: []byte(`{}`)})
	}
	return m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOutboxDeliversInOrderAndRetries(t *testing.T) {
	s := openTestStore(t, Options{})
	sender := &scriptedSender{failures: map[string][]error{
		"a1": {errors.New("connection reset")},                   // transient: retried
		"b1": {outbox.ClassifyStatus(400, 0, errors.New("bad"))}, // permanent: dead
	}}
	submit(t, s, withJobs("m1", "user-a", "a1", "a2"), withJobs("m2", "user-b", "b1", "b2"), withJobs("m3", "user-a", "a3"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- outbox.New(s, outbox.Options{Senders: map[string]outbox.Sender{"fake": sender}, Poll: 10 * time.Millisecond,
			Jitter: func() float64 { return 0 }, MaxAttempts: 3}).Run(ctx)
	}()
	// a1 fails once and waits out its backoff (0.5 s); a2 and a3 must wait for it.
	waitFor(t, "user-a's jobs", func() bool { return len(sender.got()) >= 4 })
	cancel()
	<-done

	got := sender.got()
	var userA []string
	for _, id := range got {
		if id[0] == 'a' {
			userA = append(userA, id)
		}
	}
	if fmt.Sprint(userA) != "[a1 a2 a3]" {
		t.Errorf("user-a deliveries: got %v, want [a1 a2 a3] in order", userA)
	}
	dead, err := s.Jobs(context.Background(), JobDead, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].MessageID != "b1" || dead[0].LastError == "" {
		t.Fatalf("dead jobs: got %+v, want b1 with its error", dead)
	}
	// A dead job does not block the user's later jobs.
	if !contains(got, "b2") {
		t.Errorf("b2 not delivered after b1 died: %v", got)
	}

	// An operator retries the dead job; it is delivered.
	if n, err := s.RetryJobs(context.Background(), nil); err != nil || n != 1 {
		t.Fatalf("retry: got %d, %v; want 1 job", n, err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		done <- outbox.New(s, outbox.Options{Senders: map[string]outbox.Sender{"fake": sender}, Poll: 10 * time.Millisecond}).Run(ctx)
	}()
	waitFor(t, "retried job", func() bool { return contains(sender.got(), "b1") })
	cancel()
	<-done
	if _, err := s.RetryJobs(context.Background(), []int64{dead[0].ID}); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Errorf("retrying a delivered job: got %v, want not_found", err)
	}
}

func TestOutboxReclaimsAfterCrash(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	submit(t, s, withJobs("m1", "user-a", "a1"))
	// A worker claims the job and dies without recording anything.
	jobs, err := s.Claim(context.Background(), []string{"fake"}, 10, nil, time.Minute)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: got %v, %v", jobs, err)
	}
	if again, _ := s.Claim(context.Background(), []string{"fake"}, 10, nil, time.Minute); len(again) != 0 {
		t.Fatalf("claimed twice within the lease: %v", again)
	}
	clock.Advance(2 * time.Minute)
	again, err := s.Claim(context.Background(), []string{"fake"}, 10, nil, time.Minute)
	if err != nil || len(again) != 1 || again[0].Attempts != 2 {
		t.Fatalf("after the lease: got %+v, %v; want the job again, attempt 2", again, err)
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func TestPruneDone(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	submit(t, s, withJobs("m1", "user-a", "a1", "a2"))
	jobs, err := s.Claim(context.Background(), []string{"fake"}, 10, nil, time.Minute)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	if err := s.Record(context.Background(), []outbox.Delivery{{ID: jobs[0].ID, Attempts: jobs[0].Attempts, Claimed: jobs[0].Attempts, Outcome: outbox.Outcome{Result: outbox.ResultDone}}}); err != nil {
		t.Fatal(err)
	}

	clock.Advance(8 * 24 * time.Hour)
	n, err := s.PruneDone(context.Background(), 7*24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("prune: got %d, %v; want the one delivered job", n, err)
	}
	left, _ := s.Jobs(context.Background(), "", 10)
	if len(left) != 1 || left[0].MessageID != "a2" {
		t.Errorf("after pruning: got %+v, want only the pending a2", left)
	}
}

// gatedSender holds the first send of one message ID until open is
// closed, and records every send.
type gatedSender struct {
	scriptedSender
	gated         string
	started, open chan struct{}
	once          sync.Once
}

func (g *gatedSender) Send(ctx context.Context, j mapping.Job) error {
	if j.MessageID == g.gated {
		g.once.Do(func() { close(g.started); <-g.open })
	}
	return g.scriptedSender.Send(ctx, j)
}

// resultCounter counts delivery results by kind.
type resultCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *resultCounter) Delivered(_, result string, _ int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[result]++
}

func (c *resultCounter) count(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[result]
}

// TestOutboxGivesBackJobsThatWaitedForAWorker checks that jobs claimed
// ahead of the free workers are not sent once a quarter of their claim's
// lease has passed (a send must be recorded while the claim holds, and
// gets at least a quarter of it): such a job is given back unsent, without
// counting an attempt, and delivered by a later claim, once.
func TestOutboxGivesBackJobsThatWaitedForAWorker(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	submit(t, s, withJobs("m1", "user-a", "a1"), withJobs("m2", "user-b", "b1"))
	sender := &gatedSender{gated: "a1", started: make(chan struct{}), open: make(chan struct{})}
	results := &resultCounter{n: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		// One worker: the claim takes both jobs, and b1 waits for a1's send.
		done <- outbox.New(s, outbox.Options{Senders: map[string]outbox.Sender{"fake": sender}, Workers: 1, Lease: 10 * time.Second,
			Poll: 10 * time.Millisecond, Now: clock.Now, Observer: results}).Run(ctx)
	}()
	<-sender.started
	clock.Advance(3 * time.Second) // past a quarter of the lease of the claim that took b1
	close(sender.open)
	waitFor(t, "both jobs delivered", func() bool { return len(sender.got()) == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := sender.got(); fmt.Sprint(got) != "[a1 b1]" {
		t.Errorf("sends: %v; want a1, then b1 once", got)
	}
	if n := results.count(outbox.ResultReleased); n != 1 {
		t.Errorf("%d jobs given back unsent; want 1 (b1, which waited past a quarter of its lease)", n)
	}
	delivered, err := s.Jobs(context.Background(), JobDone, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range delivered {
		if j.Attempts != 1 {
			t.Errorf("job %s delivered at attempt %d; want 1 (giving it back counts no attempt)", j.MessageID, j.Attempts)
		}
	}
}
