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

// testClock is a clock that moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// switchSender fails every send with a 503 while down, and records what it delivered.
type switchSender struct {
	mu        sync.Mutex
	down      bool
	attempts  int
	delivered []string
}

func (s *switchSender) Send(_ context.Context, j mapping.Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if s.down {
		return outbox.ClassifyStatus(503, 0, errors.New("503 service unavailable"))
	}
	s.delivered = append(s.delivered, j.MessageID)
	return nil
}

func (s *switchSender) set(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *switchSender) counts() (attempts, delivered int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts, len(s.delivered)
}

func statusOf(o *outbox.Outbox, destination string) outbox.DestinationStatus {
	for _, d := range o.Destinations() {
		if d.Destination == destination {
			return d
		}
	}
	return outbox.DestinationStatus{}
}

// A destination that keeps failing is paused: its due jobs are no longer
// claimed while another destination's are delivered, one probe at a time
// tests it (at a doubling interval, costing its job no attempt), and when a
// probe gets through its whole backlog is delivered.
func TestOutboxPausesFailingDestination(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	down, up := &switchSender{down: true}, &switchSender{}
	var msgs []mapping.Message
	for i := range 10 {
		m := identify(fmt.Sprintf("d%d", i), fmt.Sprintf("user-d%d", i), "", 0)
		m.Jobs = []mapping.Job{{Destination: "down", OrderingKey: m.UserID, MessageID: m.ID, Payload: []byte(`{}`)}}
		msgs = append(msgs, m)
	}
	for i := range 3 {
		m := identify(fmt.Sprintf("u%d", i), fmt.Sprintf("user-u%d", i), "", 0)
		m.Jobs = []mapping.Job{{Destination: "up", OrderingKey: m.UserID, MessageID: m.ID, Payload: []byte(`{}`)}}
		msgs = append(msgs, m)
	}
	submit(t, s, msgs...)

	// One worker: jobs are claimed one at a time in ID order, so every
	// "down" job comes before the "up" ones unless "down" is paused.
	ob := outbox.New(s, outbox.Options{Senders: map[string]outbox.Sender{"down": down, "up": up}, Workers: 1, Poll: 5 * time.Millisecond, Now: clock.Now,
		Jitter: func() float64 { return 0 }, PauseAfter: 3, ProbeInterval: time.Minute, MaxProbeInterval: 10 * time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ob.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "the healthy destination's deliveries", func() bool { _, n := up.counts(); return n == 3 })
	if attempts, _ := down.counts(); attempts != 3 {
		t.Errorf("failing destination: got %d attempts, want 3 (then paused, its other due jobs left alone)", attempts)
	}
	st := statusOf(ob, "down")
	if !st.Paused || !st.PausedSince.Equal(t0) || st.Failures != 3 || st.LastError == "" || !st.NextProbe.Equal(t0.Add(time.Minute)) {
		t.Errorf("status: got %+v, want paused since %v with the last error, next probe a minute later", st, t0)
	}

	// Every job is due by its own backoff now; only the probe is sent.
	clock.Advance(time.Hour)
	waitFor(t, "a failed probe", func() bool { return statusOf(ob, "down").Probes == 1 })
	if attempts, _ := down.counts(); attempts != 4 {
		t.Errorf("after the first probe: got %d attempts, want 4", attempts)
	}
	st = statusOf(ob, "down")
	if want := t0.Add(time.Hour + 2*time.Minute); !st.NextProbe.Equal(want) {
		t.Errorf("next probe: got %v, want %v (the interval doubles)", st.NextProbe, want)
	}
	jobs, err := s.Jobs(context.Background(), JobPending, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Attempts > 1 {
			t.Errorf("job %s: got %d attempts, want at most 1 (a probe costs no attempt)", j.MessageID, j.Attempts)
		}
	}

	down.set(false)
	clock.Advance(2 * time.Minute)
	waitFor(t, "the backlog", func() bool { _, n := down.counts(); return n == 10 })
	waitFor(t, "the jobs recorded", func() bool {
		jobs, err := s.Jobs(context.Background(), JobDone, 100)
		return err == nil && len(jobs) == 13
	})
	if st := statusOf(ob, "down"); st.Paused || st.Failures != 0 {
		t.Errorf("after recovery: got %+v, want not paused", st)
	}
}
