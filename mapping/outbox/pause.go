package outbox

import (
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// DestinationStatus is how the outbox sees one destination right now.
type DestinationStatus struct {
	Destination string `json:"destination"`
	// Paused is true while the destination's jobs are not claimed (but for
	// one probe at a time) because it kept failing.
	Paused bool `json:"paused"`
	// PausedSince is when the current pause began; zero when not paused.
	PausedSince time.Time `json:"pausedSince,omitzero"`
	// Failures counts the transient failures in a row since the last success.
	Failures int `json:"failures"`
	// LastError is the last failure's error; it stays after a recovery.
	LastError string `json:"lastError,omitempty"`
	// Probes counts the failed probes of the current pause.
	Probes int `json:"probes"`
	// NextProbe is when the next probe may be sent; zero when not paused.
	NextProbe time.Time `json:"nextProbe,omitzero"`
}

// breaker pauses a destination after consecutive transient failures and
// schedules its probes: a circuit breaker per destination, kept by hand
// because it is a few lines and its state must be shown to operators.
type breaker struct {
	mu        sync.Mutex
	now       func() time.Time
	after     int
	first     time.Duration
	cap       time.Duration
	log       *slog.Logger
	dests     map[string]*destinationState
	listOrder []string
}

type destinationState struct {
	failures    int
	lastErr     string
	pausedSince time.Time
	probes      int
	nextProbe   time.Time
	probing     bool // a probe is in flight
}

func newBreaker(destinations []string, opts Options, now func() time.Time) *breaker {
	b := &breaker{now: now, after: opts.PauseAfter, first: opts.ProbeInterval, cap: opts.MaxProbeInterval,
		log: opts.Logger, dests: map[string]*destinationState{}}
	for _, d := range destinations {
		b.dests[d] = &destinationState{}
		b.listOrder = append(b.listOrder, d)
	}
	sort.Strings(b.listOrder)
	return b
}

// plan says which destinations to claim jobs for, and which paused ones are
// due for a probe (none already in flight).
func (b *breaker) plan() (active, probes []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for _, d := range b.listOrder {
		st := b.dests[d]
		switch {
		case st.pausedSince.IsZero():
			active = append(active, d)
		case !st.probing && !now.Before(st.nextProbe):
			probes = append(probes, d)
		}
	}
	return active, probes
}

// paused reports whether d is paused.
func (b *breaker) paused(d string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.dests[d]
	return st != nil && !st.pausedSince.IsZero()
}

// probeGivenBack records that the probe of d in flight was given back unsent.
func (b *breaker) probeGivenBack(d string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.dests[d]; st != nil {
		st.probing = false
	}
}

// probing records that a probe of d was claimed and is in flight.
func (b *breaker) probing(d string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.dests[d]; st != nil {
		st.probing = true
	}
}

// result records a send to d and reports whether it ended a pause. Any
// answer from the destination (a success, or a permanent refusal) shows it
// is up; a transient failure counts toward a pause, or, for a probe,
// doubles the wait for the next one.
func (b *breaker) result(d string, err error, probe bool) (resumed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.dests[d]
	if st == nil {
		return false
	}
	now := b.now()
	if probe {
		st.probing = false
	}
	if err == nil || !Retryable(err) {
		st.failures = 0
		if st.pausedSince.IsZero() {
			return false
		}
		b.log.Info("destination answers again; delivering its backlog", "destination", d,
			"paused_for", now.Sub(st.pausedSince).Round(time.Second).String(), "probes", st.probes)
		st.pausedSince, st.probes, st.nextProbe = time.Time{}, 0, time.Time{}
		return true
	}
	st.failures++
	st.lastErr = err.Error()
	if len(st.lastErr) > 500 {
		st.lastErr = st.lastErr[:500]
	}
	// A destination that asked for a pause (429 or 503 with Retry-After,
	// at most an hour) is not probed before it ends.
	var asked time.Duration
	var de *DeliveryError
	if errors.As(err, &de) {
		asked = min(de.RetryAfter, time.Hour)
	}
	switch {
	case !st.pausedSince.IsZero() && probe:
		st.probes++
		wait := b.cap
		if st.probes < 30 {
			wait = min(b.first<<st.probes, b.cap)
		}
		st.nextProbe = now.Add(max(wait, asked))
	case st.pausedSince.IsZero() && st.failures >= b.after:
		st.pausedSince, st.probes, st.nextProbe = now, 0, now.Add(max(b.first, asked))
		b.log.Warn("destination keeps failing; pausing its deliveries and probing it", "destination", d,
			"failures", st.failures, "err", st.lastErr)
	}
	return false
}

func (b *breaker) status() []DestinationStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]DestinationStatus, 0, len(b.listOrder))
	for _, d := range b.listOrder {
		st := b.dests[d]
		out = append(out, DestinationStatus{Destination: d, Paused: !st.pausedSince.IsZero(), PausedSince: st.pausedSince,
			Failures: st.failures, LastError: st.lastErr, Probes: st.probes, NextProbe: st.nextProbe})
	}
	return out
}
