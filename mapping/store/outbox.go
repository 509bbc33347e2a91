package store

import (
	"context"
	"fmt"
	"strings"
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

// wakeOutbox tells an idle worker that new jobs were committed.
func (s *Store) wakeOutbox() {
	select {
	case s.outboxWake <- struct{}{}:
	default:
	}
}

// Wake is signalled when a commit wrote new jobs (or revived dead ones);
// the outbox worker waits on it between claims. It is part of outbox.Queue.
func (s *Store) Wake() <-chan struct{} { return s.outboxWake }

// claimedRow is a claimed job as the claim query returns it.
type claimedRow struct {
	ID          int64  `db:"id"`
	Destination string `db:"destination"`
	OrderingKey string `db:"ordering_key"`
	MessageID   string `db:"message_id"`
	Payload     string `db:"payload"`
	Attempts    int    `db:"attempts"`
}

func (r claimedRow) claimed(probe bool) outbox.Claimed {
	return outbox.Claimed{ID: r.ID, Attempts: r.Attempts, Probe: probe,
		Job: mapping.Job{Destination: r.Destination, OrderingKey: r.OrderingKey, MessageID: r.MessageID, Payload: []byte(r.Payload)}}
}

// ReleaseRunning makes every claimed job due again at once; see outbox.Queue.
func (s *Store) ReleaseRunning(ctx context.Context) error {
	return s.inTx(ctx, func(ctx context.Context, w *writer) error {
		_, err := w.exec(ctx, `UPDATE jobs SET state = 'pending', locked_until = 0 WHERE state = 'running'`)
		return err
	})
}

// Claim takes up to n due jobs of the active destinations, at most one
// per (destination, ordering key): the oldest undelivered job of each key,
// so per-user order holds. For each probe destination it takes one more job
// to probe it with: the oldest due one, or else the oldest one waiting.
// Jobs whose lease expired (their worker crashed) are made pending again
// first. Due jobs are found walking the (state, id) index, so a claim costs
// the same with a backlog of ten or of a million. It is part of outbox.Queue.
func (s *Store) Claim(ctx context.Context, active []string, n int, probes []string, lease time.Duration) ([]outbox.Claimed, error) {
	var jobs []outbox.Claimed
	err := s.outboxTx(ctx, func(ctx context.Context, w *writer) error {
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
			var rows []claimedRow
			if err := w.sel(ctx, &rows, `UPDATE jobs SET state = ?, locked_until = ?, attempts = attempts + 1, updated_at = ?
				WHERE id IN (
					SELECT j.id FROM jobs j
					WHERE j.state = 'pending' AND j.held = 0 AND j.destination IN (`+marks+`) AND j.run_at <= ?
					  AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.destination = j.destination AND e.ordering_key = j.ordering_key
					                  AND e.id < j.id AND e.state IN ('pending', 'running') AND e.held = 0)
					ORDER BY j.id LIMIT ?`+s.skipLocked()+`)
				RETURNING id, destination, ordering_key, message_id, payload, attempts`, args...); err != nil {
				return err
			}
			for _, r := range rows {
				jobs = append(jobs, r.claimed(false))
			}
		}
		for _, d := range probes {
			var probe []claimedRow
			// The oldest due job first: a job that failed a probe waits its
			// backoff, so the next probe tries another one.
			for _, due := range []int64{now, 1<<63 - 1} {
				if err := w.sel(ctx, &probe, `UPDATE jobs SET state = ?, locked_until = ?, attempts = attempts + 1, updated_at = ?
					WHERE id IN (
						SELECT j.id FROM jobs j
						WHERE j.state = 'pending' AND j.held = 0 AND j.destination = ? AND j.run_at <= ?
						  AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.destination = j.destination AND e.ordering_key = j.ordering_key
						                  AND e.id < j.id AND e.state IN ('pending', 'running') AND e.held = 0)
						ORDER BY j.id LIMIT 1`+s.skipLocked()+`)
					RETURNING id, destination, ordering_key, message_id, payload, attempts`, JobRunning, now+lease.Nanoseconds(), now, d, due); err != nil {
					return err
				}
				if len(probe) > 0 {
					break
				}
			}
			for _, r := range probe {
				jobs = append(jobs, r.claimed(true))
			}
		}
		return nil
	})
	return jobs, err
}

// stateOf is the job state an outcome leaves a job in.
var stateOf = map[string]string{
	outbox.ResultDone:     JobDone,
	outbox.ResultDead:     JobDead,
	outbox.ResultRetry:    JobPending,
	outbox.ResultReleased: JobPending,
}

// Record commits delivery outcomes in one transaction; see outbox.Queue.
func (s *Store) Record(ctx context.Context, deliveries []outbox.Delivery) error {
	return s.outboxTx(ctx, func(ctx context.Context, w *writer) error {
		now := s.opts.Now().UnixNano()
		for _, d := range deliveries {
			state, ok := stateOf[d.Outcome.Result]
			if !ok {
				return fmt.Errorf("record job %d: unknown result %q", d.ID, d.Outcome.Result)
			}
			// A delivered or dead job is due never: its run_at is 0, not
			// the zero time (which UnixNano cannot represent).
			var runAt int64
			if !d.Outcome.RunAt.IsZero() {
				runAt = d.Outcome.RunAt.UnixNano()
			}
			// Only the claim this outcome belongs to: not a job that was
			// claimed again after the lease ended, nor a new job that took
			// the ID of one deleted meanwhile.
			if _, err := w.exec(ctx, `UPDATE jobs SET state = ?, run_at = ?, attempts = ?, locked_until = 0, last_error = ?, updated_at = ?
				WHERE id = ? AND state = 'running' AND attempts = ?`,
				state, runAt, d.Attempts, d.Outcome.LastError, now, d.ID, d.Claimed); err != nil {
				return err
			}
		}
		return nil
	})
}

// MakeDue makes every waiting job of destination due now, in transactions
// of a few hundred jobs; see outbox.Queue.
func (s *Store) MakeDue(ctx context.Context, destination string) (int, error) {
	return s.makeDue(ctx, destination, housekeepingBatch)
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
	q := `SELECT id, destination, ordering_key, message_id, state, attempts, last_error, source_message, payload, created_at, updated_at, run_at FROM jobs WHERE held = 0`
	args := []any{}
	if state != "" {
		q += ` AND state = ?`
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
			res, err := w.exec(ctx, `UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ? WHERE id = ? AND state = 'dead' AND held = 0`, now, now, id)
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
		FROM jobs WHERE state IN ('pending', 'running', 'dead') AND held = 0 GROUP BY destination, state ORDER BY destination`); err != nil {
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
