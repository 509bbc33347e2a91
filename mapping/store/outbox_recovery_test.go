package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/jimo/jimotest"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
	"github.com/bridgeworks/bridge/mapping/store"
)

// frozenClock moves only when told, so no job becomes due by its own backoff.
type frozenClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *frozenClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *frozenClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Jimo answers 503 for a while, then 200: the outbox pauses it, probes it,
// and once a probe gets through delivers the whole backlog, although the
// clock never reaches the backoff any failed job waits for.
func TestOutboxDrainsBacklogWhenDestinationRecovers(t *testing.T) {
	const apiKey = "test-jimo-key"
	fake := jimotest.NewServer(t, apiKey)
	fake.FailWith(503, -1)
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := &frozenClock{now: t0}
	s, err := store.Open(context.Background(), store.TestDSN(t), store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	const n = 40
	var msgs []mapping.Message
	for i := range n {
		user := fmt.Sprintf("user-%02d-7c1e9a3f", i)
		msgs = append(msgs, mapping.Message{Source: mapping.SourceSegmentAPI, ID: fmt.Sprintf("m%02d", i), Type: "identify", UserID: user,
			Timestamp: t0, ReceivedAt: t0, Raw: []byte(`{}`),
			Jobs: []mapping.Job{{Destination: jimo.Destination, OrderingKey: user, MessageID: fmt.Sprintf("job-%02d", i),
				Payload: []byte(`{"userId":"` + user + `","type":"identify","timestamp":"2026-11-01T12:00:00Z","traits":{}}`)}}})
	}
	if _, err := s.Submit(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}

	ob := outbox.New(s, outbox.Options{Now: clock.Now, Senders: map[string]outbox.Sender{jimo.Destination: jimo.NewClient(fake.URL, apiKey, nil)},
		Workers: 4, Poll: 5 * time.Millisecond, Jitter: func() float64 { return 0 },
		PauseAfter: 3, ProbeInterval: 100 * time.Millisecond, MaxProbeInterval: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ob.Run(ctx) }()
	defer func() { cancel(); <-done }()

	paused := func() bool {
		st := ob.Destinations()
		return len(st) == 1 && st[0].Paused
	}
	deadline := time.Now().Add(10 * time.Second)
	for !paused() {
		if time.Now().After(deadline) {
			t.Fatalf("Jimo not paused after its 503s: %+v", ob.Destinations())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The jobs that failed wait at least half a second of the (frozen)
	// clock; wait until every one sent is recorded so.
	var failed []store.JobInfo
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		running, _ := s.Jobs(context.Background(), store.JobRunning, n)
		pending, err := s.Jobs(context.Background(), store.JobPending, n)
		if err != nil {
			t.Fatal(err)
		}
		failed = failed[:0]
		for _, j := range pending {
			if j.Attempts > 0 {
				failed = append(failed, j)
			}
		}
		if len(running) == 0 && len(failed) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("failed jobs not recorded: %d running, %d failed", len(running), len(failed))
		}
	}
	if got := fake.Attempts(); got >= n {
		t.Errorf("got %d attempts during the outage, want fewer than the %d jobs (claims stop when paused)", got, n)
	}

	fake.Recover()
	clock.Advance(100 * time.Millisecond) // the probe is due; no job's backoff is
	reqs, err := fake.WaitFor(n, 20*time.Second)
	if err != nil {
		t.Fatalf("backlog not delivered after Jimo recovered: %v (status %+v)", err, ob.Destinations())
	}
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[r.IdempotencyKey] = true
	}
	if len(seen) != n {
		t.Errorf("got %d distinct jobs delivered, want %d", len(seen), n)
	}
	for _, j := range failed {
		if !j.RunAt.After(clock.Now()) {
			t.Fatalf("job %s was due by its own backoff at %v (clock %v): the test proves nothing", j.MessageID, j.RunAt, clock.Now())
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		delivered, err := s.Jobs(context.Background(), store.JobDone, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(delivered) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d jobs recorded as delivered, want %d", len(delivered), n)
		}
	}
	if st := ob.Destinations(); st[0].Paused {
		t.Errorf("still paused after recovery: %+v", st[0])
	}
}
