package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
)

// Job states in the outbox.
const (
	JobPending = "pending" // waiting for its run_at
	JobRunning = "running" // claimed by a worker until locked_until
	JobDone    = "done"    // delivered
	JobDead    = "dead"    // failed permanently or too often; an operator may retry it
)

// OutboxOptions configures the delivery worker. Zero values mean the defaults.
type OutboxOptions struct {
	// Senders deliver jobs, by destination. Jobs for a destination without a
	// sender wait in the outbox until one is configured.
	Senders map[string]outbox.Sender
	// Workers is how many deliveries run at once; default 128.
	Workers int
	// Lease is how long a claim lasts before another worker may take the job
	// again (after a crash); default 2 minutes. It bounds a job's send time.
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
	// Delivered reports one attempt: the destination, the result
	// ("done", "retry", "dead", "released") and the attempt number.
	Delivered(destination, result string, attempt int)
}

// Backoff is the retry policy: capped exponential backoff with jitter. It
// returns how long to wait before attempt+1, given the attempt that just
// failed (1-based), the destination's Retry-After (0 if none) and a jitter
// value in [0, 1). The wait is at least half the exponential step, at most
// 15 minutes, and never shorter than a Retry-After (itself capped at 1 hour).
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

// outcome is what a delivery attempt leads to.
type outcome struct {
	state   string
	runAt   time.Time
	lastErr string
	result  string
}

// decideDelivery turns a send's error into the job's next state.
func decideDelivery(err error, attempt, maxAttempts int, now time.Time, jitter float64) outcome {
	if err == nil {
		return outcome{state: JobDone, result: "done"}
	}
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	if !outbox.Retryable(err) {
		return outcome{state: JobDead, lastErr: "permanent: " + msg, result: "dead"}
	}
	if attempt >= maxAttempts {
		return outcome{state: JobDead, lastErr: fmt.Sprintf("gave up after %d attempts: %s", attempt, msg), result: "dead"}
	}
	var retryAfter time.Duration
	var d *outbox.DeliveryError
	if errors.As(err, &d) {
		retryAfter = d.RetryAfter
	}
	return outcome{state: JobPending, runAt: now.Add(Backoff(attempt, retryAfter, jitter)), lastErr: msg, result: "retry"}
}

// claimedJob is a job a worker holds.
type claimedJob struct {
	ID          int64  `db:"id"`
	Destination string `db:"destination"`
	OrderingKey string `db:"ordering_key"`
	MessageID   string `db:"message_id"`
	Payload     string `db:"payload"`
	Attempts    int    `db:"attempts"`
	// probe is set on the one job that probes a paused destination.
	probe bool
}

// wakeOutbox tells an idle worker that new jobs were committed.
func (s *Store) wakeOutbox() {
	select {
	case s.outboxWake <- struct{}{}:
	default:
	}
}

// Outbox is the delivery worker of a Store: it claims due jobs, sends them,
// records their outcomes in batches, pauses destinations that keep failing
// and probes them until they answer again. Create it with NewOutbox; its
// Destinations method may be called at any time, also while Run runs.
type Outbox struct {
	s            *Store
	opts         OutboxOptions
	destinations []string
	breaker      *breaker
	// resumed carries destinations that answered again, for the
	// housekeeper to make their backlog due.
	resumed chan string
}

// NewOutbox returns the delivery worker for opts, with defaults applied. It
// does nothing until Run.
func (s *Store) NewOutbox(opts OutboxOptions) *Outbox {
	if opts.Workers <= 0 {
		opts.Workers = 128
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
		s:            s,
		opts:         opts,
		destinations: destinations,
		breaker:      newBreaker(destinations, opts, s.opts.Now),
		resumed:      make(chan string, len(destinations)+1),
	}
}

// RunOutbox runs NewOutbox(opts) until ctx ends; see Outbox.Run.
func (s *Store) RunOutbox(ctx context.Context, opts OutboxOptions) error {
	return s.NewOutbox(opts).Run(ctx)
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
	s, opts := o.s, o.opts
	if len(o.destinations) == 0 {
		<-ctx.Done()
		return nil
	}
	if opts.ReleaseOnStart {
		if err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
			_, err := w.exec(ctx, `UPDATE jobs SET state = 'pending', locked_until = 0 WHERE state = 'running'`)
			return err
		}); err != nil {
			return fmt.Errorf("release jobs of a previous process: %w", err)
		}
	}
	// Sends outlive ctx by the grace period, so a shutdown finishes them.
	sendCtx, cancelSends := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSends()
	// Outcomes are recorded in batches by one goroutine: one transaction for
	// many deliveries. A job stays claimed (running) until its outcome is
	// committed, so neither it nor its user's next job is claimed meanwhile.
	results := make(chan delivery, opts.Workers)
	recorded := make(chan struct{})
	go func() { s.recordLoop(results, opts); close(recorded) }()
	// Pruning and draining a resumed destination's backlog run beside the
	// claims, in batches of their own.
	housekept := make(chan struct{})
	go func() { o.housekeep(ctx); close(housekept) }()
	slots := make(chan struct{}, opts.Workers)
	var inflight sync.WaitGroup
	for ctx.Err() == nil {
		// Wait for at least one free slot.
		select {
		case slots <- struct{}{}:
			<-slots
		case <-ctx.Done():
			continue
		}
		free := opts.Workers - len(slots)
		active, probes := o.breaker.plan()
		var jobs []claimedJob
		var err error
		if len(active) > 0 || len(probes) > 0 {
			jobs, err = s.claimJobs(ctx, active, free, probes, opts.Lease)
		}
		if err != nil {
			if ctx.Err() == nil {
				opts.Logger.Error("claim outbox jobs", "err", err)
				sleep(ctx, opts.Poll)
			}
			continue
		}
		if len(jobs) == 0 {
			select {
			case <-s.outboxWake:
			case <-time.After(opts.Poll):
			case <-ctx.Done():
			}
			continue
		}
		for _, j := range jobs {
			if j.probe {
				o.breaker.probing(j.Destination)
			}
			slots <- struct{}{}
			inflight.Add(1)
			go func() {
				defer func() { <-slots; inflight.Done() }()
				results <- o.deliver(sendCtx, j)
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
				n, err := o.s.makeDue(ctx, d, housekeepingBatch)
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
		if _, err := o.s.pruneDone(ctx, o.opts.KeepDone, housekeepingBatch, nil); err != nil && ctx.Err() == nil {
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

// claim takes up to n due jobs of destinations; see claimJobs.
func (s *Store) claim(ctx context.Context, destinations []string, n int, lease time.Duration) ([]claimedJob, error) {
	return s.claimJobs(ctx, destinations, n, nil, lease)
}

// claimJobs takes up to n due jobs of the active destinations, at most one
// per (destination, ordering key): the oldest undelivered job of each key,
// so per-user order holds. For each probe destination it takes one more job
// to probe it with: the oldest due one, or else the oldest one waiting.
// Jobs whose lease expired (their worker crashed) are made pending again
// first. Due jobs are found walking the (state, id) index, so a claim costs
// the same with a backlog of ten or of a million.
func (s *Store) claimJobs(ctx context.Context, active []string, n int, probes []string, lease time.Duration) ([]claimedJob, error) {
	var jobs []claimedJob
	err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
		jobs = jobs[:0] // the function runs again if its group is retried
		now := s.opts.Now().UnixNano()
		if _, err := w.exec(ctx, `UPDATE jobs SET state = 'pending', locked_until = 0 WHERE state = 'running' AND locked_until <= ?`, now); err != nil {
			return err
		}
		if len(active) > 0 && n > 0 {
			marks := strings.TrimSuffix(strings.Repeat("?,", len(active)), ",")
			args := []any{JobRunning, now + lease.Nanoseconds(), now}
			for _, d := range active {
				args = append(args, d)
			}
			args = append(args, now, n)
			if err := w.sel(ctx, &jobs, `UPDATE jobs SET state = ?, locked_until = ?, attempts = attempts + 1, updated_at = ?
				WHERE id IN (
					SELECT j.id FROM jobs j
					WHERE j.state = 'pending' AND j.destination IN (`+marks+`) AND j.run_at <= ?
					  AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.destination = j.destination AND e.ordering_key = j.ordering_key
					                  AND e.id < j.id AND e.state IN ('pending', 'running'))
					ORDER BY j.id LIMIT ?)
				RETURNING id, destination, ordering_key, message_id, payload, attempts`, args...); err != nil {
				return err
			}
		}
		for _, d := range probes {
			var probe []claimedJob
			// The oldest due job first: a job that failed a probe waits its
			// backoff, so the next probe tries another one.
			for _, due := range []int64{now, 1<<63 - 1} {
				if err := w.sel(ctx, &probe, `UPDATE jobs SET state = ?, locked_until = ?, attempts = attempts + 1, updated_at = ?
					WHERE id IN (
						SELECT j.id FROM jobs j
						WHERE j.state = 'pending' AND j.destination = ? AND j.run_at <= ?
						  AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.destination = j.destination AND e.ordering_key = j.ordering_key
						                  AND e.id < j.id AND e.state IN ('pending', 'running'))
						ORDER BY j.id LIMIT 1)
					RETURNING id, destination, ordering_key, message_id, payload, attempts`, JobRunning, now+lease.Nanoseconds(), now, d, due); err != nil {
					return err
				}
				if len(probe) > 0 {
					break
				}
			}
			for _, j := range probe {
				j.probe = true
				jobs = append(jobs, j)
			}
		}
		return nil
	})
	return jobs, err
}

// delivery is a job sent and what it led to, waiting to be recorded.
type delivery struct {
	job claimedJob
	out outcome
}

// deliver sends one job, tells the breaker how it went, and decides the
// job's outcome. A probe that fails transiently costs its job no attempt:
// the destination failed, not the job.
func (o *Outbox) deliver(ctx context.Context, j claimedJob) delivery {
	s, opts := o.s, o.opts
	sendCtx, cancel := context.WithTimeout(ctx, opts.Lease)
	err := opts.Senders[j.Destination].Send(sendCtx, mapping.Job{Destination: j.Destination, OrderingKey: j.OrderingKey, MessageID: j.MessageID, Payload: []byte(j.Payload)})
	cancel()
	now := s.opts.Now()
	if err != nil && ctx.Err() != nil {
		// Shutting down: give the job back without counting the attempt.
		j.Attempts--
		return delivery{job: j, out: outcome{state: JobPending, runAt: now, lastErr: "released at shutdown", result: "released"}}
	}
	if o.breaker.result(j.Destination, err, j.probe) {
		select {
		case o.resumed <- j.Destination:
		default: // already queued
		}
	}
	if j.probe && err != nil && outbox.Retryable(err) {
		j.Attempts--
		// It waits its backoff (never dead: it did not use an attempt), so
		// the next probe tries another job.
		out := decideDelivery(err, max(j.Attempts, 1), opts.MaxAttempts+1, now, opts.Jitter())
		out.lastErr = "probe: " + out.lastErr
		return delivery{job: j, out: out}
	}
	return delivery{job: j, out: decideDelivery(err, j.Attempts, opts.MaxAttempts, now, opts.Jitter())}
}

// recordLoop commits delivery outcomes, as many as are waiting in one
// transaction, until results is closed and drained. An outcome that cannot
// be recorded leaves its job claimed until the lease ends; it is then sent
// again, with the same message ID.
func (s *Store) recordLoop(results <-chan delivery, opts OutboxOptions) {
	for d := range results {
		batch := []delivery{d}
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
		err := s.inTx(context.Background(), func(ctx context.Context, w *writer) error {
			now := s.opts.Now().UnixNano()
			for _, d := range batch {
				// A delivered or dead job is due never: its run_at is 0, not
				// the zero time (which UnixNano cannot represent).
				var runAt int64
				if !d.out.runAt.IsZero() {
					runAt = d.out.runAt.UnixNano()
				}
				if _, err := w.exec(ctx, `UPDATE jobs SET state = ?, run_at = ?, attempts = ?, locked_until = 0, last_error = ?, updated_at = ? WHERE id = ?`,
					d.out.state, runAt, d.job.Attempts, d.out.lastErr, now, d.job.ID); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			opts.Logger.Error("record deliveries", "jobs", len(batch), "err", err)
			continue
		}
		for _, d := range batch {
			j, o := d.job, d.out
			if o.state == JobDead {
				opts.Logger.Warn("outbox job dead", "job_id", j.ID, "destination", j.Destination, "message_id", j.MessageID, "attempts", j.Attempts, "err", o.lastErr)
			}
			if opts.Observer != nil {
				opts.Observer.Delivered(j.Destination, o.result, j.Attempts)
			}
		}
	}
}

// PruneDone removes delivered jobs last updated more than keep ago and
// returns how many; the outbox worker calls it every hour. It deletes in
// batches of a few hundred jobs, each its own transaction, so ingestion
// goes on between them.
func (s *Store) PruneDone(ctx context.Context, keep time.Duration) (int, error) {
	return s.pruneDone(ctx, keep, housekeepingBatch, nil)
}

// JobInfo is an outbox job as operators see it.
type JobInfo struct {
	ID            int64     `json:"id" db:"id"`
	Destination   string    `json:"destination" db:"destination"`
	OrderingKey   string    `json:"orderingKey" db:"ordering_key"`
	MessageID     string    `json:"messageId" db:"message_id"`
	State         string    `json:"state" db:"state"`
	Attempts      int       `json:"attempts" db:"attempts"`
	LastError     string    `json:"lastError" db:"last_error"`
	SourceMessage string    `json:"sourceMessage" db:"source_message"`
	Payload       string    `json:"payload" db:"payload"`
	CreatedAt     time.Time `json:"createdAt" db:"-"`
	UpdatedAt     time.Time `json:"updatedAt" db:"-"`
	// RunAt is when a pending job is due (or a running one was); nil for
	// delivered and dead jobs, which are due never.
	RunAt *time.Time `json:"runAt,omitempty" db:"-"`
}

type jobRow struct {
	JobInfo
	Created int64 `db:"created_at"`
	Updated int64 `db:"updated_at"`
	Run     int64 `db:"run_at"`
}

// Jobs lists up to limit jobs in state (all states if empty), newest first.
func (s *Store) Jobs(ctx context.Context, state string, limit int) ([]JobInfo, error) {
	var rows []jobRow
	q := `SELECT id, destination, ordering_key, message_id, state, attempts, last_error, source_message, payload, created_at, updated_at, run_at FROM jobs`
	args := []any{}
	if state != "" {
		q += ` WHERE state = ?`
		args = append(args, state)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	if err := s.read.SelectContext(ctx, &rows, q, append(args, limit)...); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]JobInfo, len(rows))
	for i, r := range rows {
		out[i] = r.info()
	}
	return out, nil
}

// info is the row as operators see it. Only a pending or running job has a
// run_at that means something (older versions stored an overflowed zero
// time in delivered and dead ones).
func (r jobRow) info() JobInfo {
	j := r.JobInfo
	j.CreatedAt, j.UpdatedAt = time.Unix(0, r.Created).UTC(), time.Unix(0, r.Updated).UTC()
	if j.State == JobPending || j.State == JobRunning {
		t := time.Unix(0, r.Run).UTC()
		j.RunAt = &t
	}
	return j
}

// RetryJobs makes dead jobs due again with a fresh set of attempts: the
// given IDs, or every dead job when ids is empty. It returns how many it
// revived; an ID that is not a dead job is a CodeNotFound error. Every dead
// job is revived in batches of a few hundred, each its own transaction, so
// ingestion goes on between them; a job that dies again meanwhile is not
// revived twice.
func (s *Store) RetryJobs(ctx context.Context, ids []int64) (int, error) {
	if len(ids) == 0 {
		return s.retryAll(ctx, housekeepingBatch, nil)
	}
	var n int64
	err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
		n = 0 // the function runs again if its group is retried
		now := s.opts.Now().UnixNano()
		for _, id := range ids {
			res, err := w.exec(ctx, `UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ? WHERE id = ? AND state = 'dead'`, now, now, id)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if k == 0 {
				return mapping.Errorf(mapping.CodeNotFound, "job %d is not a dead job; list them with `bridge outbox list`", id)
			}
			n += k
		}
		return nil
	})
	if err == nil && n > 0 {
		s.wakeOutbox()
	}
	return int(n), err
}

// Backlog is the outbox's state for one destination.
type Backlog struct {
	Destination string
	Pending     int       // pending or running
	Dead        int       // waiting for an operator
	Oldest      time.Time // creation time of the oldest pending job; zero if none
}

// Backlogs reports the outbox per destination.
func (s *Store) Backlogs(ctx context.Context) ([]Backlog, error) {
	var rows []struct {
		Destination string `db:"destination"`
		State       string `db:"state"`
		N           int    `db:"n"`
		Oldest      int64  `db:"oldest"`
	}
	if err := s.read.SelectContext(ctx, &rows, `SELECT destination, state, COUNT(*) AS n, MIN(created_at) AS oldest
		FROM jobs WHERE state IN ('pending', 'running', 'dead') GROUP BY destination, state ORDER BY destination`); err != nil {
		return nil, fmt.Errorf("outbox backlog: %w", err)
	}
	var out []Backlog
	index := map[string]int{}
	for _, r := range rows {
		i, ok := index[r.Destination]
		if !ok {
			i = len(out)
			index[r.Destination] = i
			out = append(out, Backlog{Destination: r.Destination})
		}
		b := &out[i]
		if r.State == JobDead {
			b.Dead += r.N
			continue
		}
		b.Pending += r.N
		if t := time.Unix(0, r.Oldest).UTC(); b.Oldest.IsZero() || t.Before(b.Oldest) {
			b.Oldest = t
		}
	}
	return out, nil
}
