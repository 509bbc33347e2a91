package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// What a delivery attempt led to: the Result of an Outcome, and the result
// label a DeliveryObserver is told.
const (
	ResultDone     = "done"     // delivered
	ResultRetry    = "retry"    // failed transiently; due again at RunAt
	ResultDead     = "dead"     // failed permanently or too often; an operator may retry it
	ResultReleased = "released" // given back unsent or at shutdown, without counting the attempt
)

// Outcome is what a delivery attempt leads to.
type Outcome struct {
	Result    string    // one of the Result constants
	RunAt     time.Time // when the job is due again (ResultRetry, ResultReleased)
	LastError string    // the failure, for operators; empty when delivered
}

// Backoff is the retry policy: capped exponential backoff with jitter. It
// returns how long to wait before attempt+1, given the attempt that just
// failed (1-based), the destination's Retry-After (0 if none) and a jitter
// value in [0, 1). The wait is at least half the exponential step, at most
// 15 minutes, and never shorter than a Retry-After (itself capped at 1 hour).
// Hand-written: it is the whole policy in a few lines, tested as a pure function.
func Backoff(attempt int, retryAfter time.Duration, jitter float64) time.Duration {
	const (
		base     = time.Second
		maxDelay = 15 * time.Minute
	)
	step := maxDelay
	if attempt < 20 {
		step = min(base<<(attempt-1), maxDelay)
	}
	d := step/2 + time.Duration(jitter*float64(step/2))
	if retryAfter > 0 {
		d = max(d, min(retryAfter, time.Hour))
	}
	return d
}

// Decide turns a send's error into the job's outcome: delivered, retried
// after Backoff, or dead (a permanent failure, or the last of maxAttempts).
func Decide(err error, attempt, maxAttempts int, now time.Time, jitter float64) Outcome {
	if err == nil {
		return Outcome{Result: ResultDone}
	}
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	if !Retryable(err) {
		return Outcome{Result: ResultDead, LastError: "permanent: " + msg}
	}
	if attempt >= maxAttempts {
		return Outcome{Result: ResultDead, LastError: fmt.Sprintf("gave up after %d attempts: %s", attempt, msg)}
	}
	var retryAfter time.Duration
	var d *DeliveryError
	if errors.As(err, &d) {
		retryAfter = d.RetryAfter
	}
	return Outcome{Result: ResultRetry, RunAt: now.Add(Backoff(attempt, retryAfter, jitter)), LastError: msg}
}

// Claimed is a job a worker holds until its outcome is recorded.
type Claimed struct {
	ID       int64
	Job      mapping.Job
	Attempts int  // attempts so far, this one included
	Probe    bool // the one job that probes a paused destination
}

// Delivery is a claimed job's outcome, to record.
type Delivery struct {
	ID          int64
	Destination string
	MessageID   string
	Attempts    int // attempts to record (a probe that failed transiently does not count its own)
	Claimed     int // attempts when claimed: the claim the outcome belongs to
	Outcome     Outcome
}

// Queue is where the outbox's jobs live (the store, in the same database as
// the changes that cause them). Its methods are safe for concurrent use.
type Queue interface {
	// ReleaseRunning makes every claimed job due again at once (for a
	// process that is the only one delivering, at its start).
	ReleaseRunning(ctx context.Context) error
	// Claim takes up to n due jobs of the active destinations, at most one
	// per (destination, ordering key), the oldest undelivered of each, so
	// per-user order holds; plus one job per probe destination. A claim
	// lasts lease; jobs whose lease ended are claimable again.
	Claim(ctx context.Context, active []string, n int, probes []string, lease time.Duration) ([]Claimed, error)
	// Record commits outcomes in one transaction; a job stays claimed until then.
	Record(ctx context.Context, deliveries []Delivery) error
	// Wake is signalled when new jobs were committed.
	Wake() <-chan struct{}
	// PruneDone deletes delivered jobs last updated more than keep ago, in small transactions.
	PruneDone(ctx context.Context, keep time.Duration) (int, error)
	// MakeDue makes every waiting job of destination due now, in small transactions.
	MakeDue(ctx context.Context, destination string) (int, error)
}

// Options configures the outbox. Zero values mean the defaults.
type Options struct {
	// Senders deliver jobs, by destination. Jobs for a destination without a
	// sender wait in the outbox until one is configured.
	Senders map[string]Sender
	// Workers is how many deliveries run at once; default 128.
	Workers int
	// ClaimAhead is how many times Workers a claim takes beyond the free
	// workers; those jobs wait in this process for a worker (see Run).
	// Default 4; negative: none. It pays where a claim waits behind
	// ingestion's group commits (SQLite); on PostgreSQL claims run beside
	// them, and jobs claimed ahead would only be kept from other replicas.
	ClaimAhead int
	// Lease is how long a claim lasts before another worker may take the job
	// again (after a crash); default 2 minutes. A send must end by half of
	// it after the claim, so that its outcome is recorded while the claim
	// still holds (another replica taking the job meanwhile would send it
	// twice, and out of order); a job claimed ahead that waited a quarter of
	// it for a worker is given back unsent, so every send gets at least a
	// quarter.
	Lease time.Duration
	// MaxAttempts is how many deliveries a job gets before it is dead; default 12.
	MaxAttempts int
	// Poll is how often an idle worker looks for due jobs; default 500 ms
	// (new jobs wake it at once).
	Poll time.Duration
	// ReleaseOnStart makes jobs left running by a previous process due again
	// at once instead of after their lease: right when this process is the
	// only one delivering from the database (SQLite).
	ReleaseOnStart bool
	// KeepDone is how long delivered jobs stay visible (on the profile page,
	// in `bridge outbox list -state done`) before they are removed; default 7 days.
	KeepDone time.Duration
	// ShutdownGrace is how long Run waits for deliveries in flight when ctx ends; default 10 s.
	ShutdownGrace time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Jitter returns a number in [0, 1); default math/rand/v2.
	Jitter func() float64
	Logger *slog.Logger
	// Observer is told about every delivery; nil means none.
	Observer DeliveryObserver
	// PauseAfter is how many consecutive transient failures (network, 408,
	// 429, 5xx) pause a destination: its jobs are no longer claimed, and one
	// job at a time probes it; default 5.
	PauseAfter int
	// ProbeInterval is the wait before the first probe of a paused
	// destination; it doubles after each failed probe, up to MaxProbeInterval.
	// Defaults 1 s and 30 s.
	ProbeInterval, MaxProbeInterval time.Duration
}

// DeliveryObserver is told the result of every delivery attempt.
type DeliveryObserver interface {
	// Delivered reports one attempt: the destination, the result (one of
	// the Result constants) and the attempt number.
	Delivered(destination, result string, attempt int)
}

// Outbox is the delivery worker: it claims due jobs, sends them, records
// their outcomes in batches, pauses destinations that keep failing and
// probes them until they answer again. Create it with New; its Destinations
// method may be called at any time, also while Run runs.
type Outbox struct {
	q            Queue
	opts         Options
	destinations []string
	breaker      *breaker
	// resumed carries destinations that answered again, for the
	// housekeeper to make their backlog due.
	resumed chan string
}

// New returns the delivery worker of q for opts, with defaults applied. It
// does nothing until Run.
func New(q Queue, opts Options) *Outbox {
	if opts.Workers <= 0 {
		opts.Workers = 128
	}
	switch {
	case opts.ClaimAhead == 0:
		opts.ClaimAhead = 4
	case opts.ClaimAhead < 0:
		opts.ClaimAhead = 0
	}
	if opts.Lease <= 0 {
		opts.Lease = 2 * time.Minute
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 12
	}
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	if opts.KeepDone <= 0 {
		opts.KeepDone = 7 * 24 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PauseAfter <= 0 {
		opts.PauseAfter = 5
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = time.Second
	}
	if opts.MaxProbeInterval <= 0 {
		opts.MaxProbeInterval = 30 * time.Second
	}
	opts.MaxProbeInterval = max(opts.MaxProbeInterval, opts.ProbeInterval)
	var destinations []string
	for d := range opts.Senders {
		destinations = append(destinations, d)
	}
	sort.Strings(destinations)
	return &Outbox{
		q:            q,
		opts:         opts,
		destinations: destinations,
		breaker:      newBreaker(destinations, opts, opts.Now),
		resumed:      make(chan string, len(destinations)+1),
	}
}

// Run delivers outbox jobs until ctx ends, then waits up to ShutdownGrace
// for deliveries in flight and releases the rest (they are claimed again
// later, without counting the attempt). Jobs with the same destination and
// ordering key are delivered one at a time, in the order they were written.
// A job claimed by a worker that crashed is claimed again when its lease
// expires. A destination that fails PauseAfter times in a row is paused:
// none of its jobs is claimed but one probe at a time, at a capped
// backoff; once a probe gets through, its waiting jobs are due at once.
// Delivered jobs older than KeepDone are pruned every hour, in batches.
func (o *Outbox) Run(ctx context.Context) error {
	opts := o.opts
	if len(o.destinations) == 0 {
		<-ctx.Done()
		return nil
	}
	if opts.ReleaseOnStart {
		if err := o.q.ReleaseRunning(ctx); err != nil {
			return fmt.Errorf("release jobs of a previous process: %w", err)
		}
	}
	// Sends outlive ctx by the grace period, so a shutdown finishes them.
	sendCtx, cancelSends := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSends()
	// Outcomes are recorded in batches by one goroutine: one transaction for
	// many deliveries. A job stays claimed (running) until its outcome is
	// committed, so neither it nor its user's next job is claimed meanwhile.
	// Outcomes wait here while the last batch is being recorded, room
	// enough for a whole claim's: a worker hands its outcome over and is
	// free for the next job. Should recording fall behind even so, the
	// workers wait, and so do the claims.
	results := make(chan Delivery, (opts.ClaimAhead+1)*opts.Workers)
	recorded := make(chan struct{})
	go func() { o.recordLoop(results); close(recorded) }()
	// Pruning and draining a resumed destination's backlog run beside the
	// claims, in batches of their own.
	housekept := make(chan struct{})
	go func() { o.housekeep(ctx); close(housekept) }()
	slots := make(chan struct{}, opts.Workers)
	var inflight sync.WaitGroup
claims:
	for ctx.Err() == nil {
		// Wait for at least one free slot.
		select {
		case slots <- struct{}{}:
			<-slots
		case <-ctx.Done():
			continue
		}
		// Jobs are claimed ahead of the free workers: a claim waits for a
		// group commit, which under heavy ingestion takes as long as
		// sending many jobs, so claiming only for the free workers would
		// leave them idle most of the time.
		want := opts.Workers - len(slots) + opts.ClaimAhead*opts.Workers
		active, probes := o.breaker.plan()
		var jobs []Claimed
		var err error
		claimedAt := opts.Now()
		if len(active) > 0 || len(probes) > 0 {
			jobs, err = o.q.Claim(ctx, active, want, probes, opts.Lease)
		}
		if err != nil {
			// A store that cannot store says so itself, once; its refusals
			// are not logged again at every poll.
			if ctx.Err() == nil && mapping.ErrorCode(err) != mapping.CodeUnavailable {
				opts.Logger.Error("claim outbox jobs", "err", err)
			}
			sleep(ctx, opts.Poll)
			continue
		}
		if len(jobs) == 0 {
			select {
			case <-o.q.Wake():
			case <-time.After(opts.Poll):
			case <-ctx.Done():
			}
			continue
		}
		// Probes go first: a paused destination waits for its probe.
		slices.SortStableFunc(jobs, func(a, b Claimed) int {
			if a.Probe == b.Probe {
				return 0
			}
			if a.Probe {
				return -1
			}
			return 1
		})
		for _, j := range jobs {
			if j.Probe {
				o.breaker.probing(j.Job.Destination)
			}
		}
		by := deadlines{waitUntil: claimedAt.Add(opts.Lease / 4), sendBy: claimedAt.Add(opts.Lease / 2)}
		for i, j := range jobs {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				for _, j := range jobs[i:] {
					results <- o.giveBack(j, "released at shutdown")
				}
				continue claims
			}
			inflight.Add(1)
			go func() {
				defer func() { <-slots; inflight.Done() }()
				results <- o.deliver(sendCtx, j, by)
			}()
		}
	}
	done := make(chan struct{})
	go func() { inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(opts.ShutdownGrace):
		cancelSends() // deliver releases what it could not finish
		<-done
	}
	close(results)
	<-recorded
	<-housekept
	return nil
}

// housekeep prunes delivered jobs every hour and, beside it, makes the
// backlog of a destination that answered again due at once, until ctx ends.
func (o *Outbox) housekeep(ctx context.Context) {
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case d := <-o.resumed:
				n, err := o.q.MakeDue(ctx, d)
				if err != nil && ctx.Err() == nil {
					o.opts.Logger.Warn("make a resumed destination's jobs due", "destination", d, "err", err)
				}
				o.opts.Logger.Info("destination backlog due again", "destination", d, "jobs", n)
			case <-ctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		if _, err := o.q.PruneDone(ctx, o.opts.KeepDone); err != nil && ctx.Err() == nil {
			o.opts.Logger.Warn("prune delivered jobs", "err", err)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			<-drained
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// deadlines are a claim's: its jobs still waiting for a worker at
// waitUntil are given back unsent, and every send ends by sendBy.
type deadlines struct{ waitUntil, sendBy time.Time }

// deliver sends one job, tells the breaker how it went, and decides the
// job's outcome. A probe that fails transiently costs its job no attempt:
// the destination failed, not the job.
func (o *Outbox) deliver(ctx context.Context, j Claimed, by deadlines) Delivery {
	opts := o.opts
	d := Delivery{ID: j.ID, Destination: j.Job.Destination, MessageID: j.Job.MessageID, Attempts: j.Attempts, Claimed: j.Attempts}
	// A job claimed ahead waits for a worker; meanwhile its destination
	// may have been paused, or too much of its lease may have passed.
	now := opts.Now()
	switch {
	case !j.Probe && o.breaker.paused(j.Job.Destination):
		return o.giveBack(j, "released unsent: its destination was paused")
	case !now.Before(by.waitUntil) && !j.Probe, !now.Before(by.sendBy):
		return o.giveBack(j, "released unsent: it waited a quarter of its lease for a free worker")
	}
	sendCtx, cancel := context.WithTimeout(ctx, by.sendBy.Sub(now))
	err := opts.Senders[j.Job.Destination].Send(sendCtx, j.Job)
	cancel()
	now = opts.Now()
	if err != nil && ctx.Err() != nil {
		// Shutting down: give the job back without counting the attempt.
		return o.giveBack(j, "released at shutdown")
	}
	if o.breaker.result(j.Job.Destination, err, j.Probe) {
		select {
		case o.resumed <- j.Job.Destination:
		default: // already queued
		}
	}
	if j.Probe && err != nil && Retryable(err) {
		d.Attempts--
		// It waits its backoff (never dead: it did not use an attempt), so
		// the next probe tries another job.
		d.Outcome = Decide(err, max(d.Attempts, 1), opts.MaxAttempts+1, now, opts.Jitter())
		d.Outcome.LastError = "probe: " + d.Outcome.LastError
		return d
	}
	d.Outcome = Decide(err, j.Attempts, opts.MaxAttempts, now, opts.Jitter())
	return d
}

// giveBack is the outcome of a claimed job given back unsent, or whose
// send was cut short by a shutdown: due at once, without counting the
// attempt. A probe given back leaves its destination free to be probed again.
func (o *Outbox) giveBack(j Claimed, why string) Delivery {
	if j.Probe {
		o.breaker.probeGivenBack(j.Job.Destination)
	}
	return Delivery{ID: j.ID, Destination: j.Job.Destination, MessageID: j.Job.MessageID, Attempts: j.Attempts - 1, Claimed: j.Attempts,
		Outcome: Outcome{Result: ResultReleased, RunAt: o.opts.Now(), LastError: why}}
}

// recordLoop commits delivery outcomes, as many as are waiting in one
// transaction, until results is closed and drained. An outcome that cannot
// be recorded leaves its job claimed until the lease ends; it is then sent
// again, with the same message ID.
func (o *Outbox) recordLoop(results <-chan Delivery) {
	opts := o.opts
	for d := range results {
		batch := []Delivery{d}
	gather:
		for len(batch) < 512 {
			select {
			case d, ok := <-results:
				if !ok {
					break gather
				}
				batch = append(batch, d)
			default:
				break gather
			}
		}
		if err := o.q.Record(context.Background(), batch); err != nil {
			opts.Logger.Error("record deliveries", "jobs", len(batch), "err", err)
			continue
		}
		for _, d := range batch {
			if d.Outcome.Result == ResultDead {
				opts.Logger.Warn("outbox job dead", "job_id", d.ID, "destination", d.Destination, "message_id", d.MessageID, "attempts", d.Attempts, "err", d.Outcome.LastError)
			}
			if opts.Observer != nil {
				opts.Observer.Delivered(d.Destination, d.Outcome.Result, d.Attempts)
			}
		}
	}
}

// Destinations reports every destination the outbox delivers to, in name
// order, with whether it is paused. Its state lives in this process: each
// replica pauses and probes on its own.
func (o *Outbox) Destinations() []DestinationStatus {
	return o.breaker.status()
}
