package outbox

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// A transient failure that does not repeat PauseAfter times in a row pauses nothing.
func TestBreakerCountsConsecutiveFailures(t *testing.T) {
	b := newBreaker([]string{"d"}, Options{PauseAfter: 2, ProbeInterval: time.Second, MaxProbeInterval: time.Minute}, func() time.Time { return t0 })
	b.log = slog.New(slog.DiscardHandler)
	transient := errors.New("connection reset")
	b.result("d", transient, false)
	b.result("d", nil, false)
	b.result("d", transient, false)
	if active, _ := b.plan(); len(active) != 1 {
		t.Fatalf("paused after failures that were not consecutive")
	}
	b.result("d", ClassifyStatus(400, 0, errors.New("400")), false)
	b.result("d", transient, false)
	if active, _ := b.plan(); len(active) != 1 {
		t.Fatalf("a permanent refusal counted as a transient failure")
	}
	b.result("d", ClassifyStatus(429, 10*time.Second, errors.New("429")), false)
	if active, probes := b.plan(); len(active) != 0 || len(probes) != 0 {
		t.Fatalf("got active %v, probes %v; want paused, no probe before its time", active, probes)
	}
	if st := b.status()[0]; !st.NextProbe.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("next probe: got %v, want %v (the destination's Retry-After)", st.NextProbe, t0.Add(10*time.Second))
	}
}
