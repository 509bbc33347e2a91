package store

import (
	"context"
	"time"
)

// housekeepingBatch is how many rows one transaction of a large outbox or
// retention operation touches: small enough that the group commit holding
// it stays short, so ingestion goes on between batches.
const housekeepingBatch = 500

// pruneDone deletes delivered jobs last updated more than keep ago, batch
// at a time, each batch its own transaction, and returns how many. between,
// if not nil, runs after every batch but the last.
func (s *Store) pruneDone(ctx context.Context, keep time.Duration, batch int, between func()) (int, error) {
	cutoff := s.opts.Now().Add(-keep).UnixNano()
	total := 0
	for {
		var n int64
		err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
			res, err := w.exec(ctx, `DELETE FROM jobs WHERE id IN (
				SELECT id FROM jobs WHERE state = 'done' AND updated_at < ? ORDER BY updated_at LIMIT ?)`, cutoff, batch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		total += int(n)
		if err != nil || n < int64(batch) {
			return total, err
		}
		if between != nil {
			between()
		}
	}
}

// retryAll revives every dead job, batch at a time in ID order, each batch
// its own transaction, and returns how many. A job that dies again while it
// runs is behind the cursor and is not revived twice. between, if not nil,
// runs after every batch but the last.
func (s *Store) retryAll(ctx context.Context, batch int, between func()) (int, error) {
	var after int64
	total := 0
	for {
		var ids []int64
		err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
			ids = ids[:0]
			now := s.opts.Now().UnixNano()
			return w.sel(ctx, &ids, `UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?
				WHERE id IN (SELECT id FROM jobs WHERE state = 'dead' AND held = 0 AND id > ? ORDER BY id LIMIT ?)
				RETURNING id`, now, now, after, batch)
		})
		if err != nil {
			return total, err
		}
		total += len(ids)
		for _, id := range ids {
			after = max(after, id)
		}
		if len(ids) > 0 {
			s.wakeOutbox()
		}
		if len(ids) < batch {
			return total, nil
		}
		if between != nil {
			between()
		}
	}
}

// makeDue makes every waiting job of destination due now, batch at a time
// in ID order (each batch its own transaction), and returns how many: the
// backlog a paused destination built up is delivered at once when it
// answers again, not each job after its own backoff.
func (s *Store) makeDue(ctx context.Context, destination string, batch int) (int, error) {
	var after int64
	total := 0
	for {
		var last int64
		var n int64
		more := false
		err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
			now := s.opts.Now().UnixNano()
			// The window is a batch of the pending index, whichever
			// destination its jobs are for, so each transaction stays small.
			var ids []int64
			if err := w.sel(ctx, &ids, `SELECT id FROM jobs WHERE state = 'pending' AND id > ? ORDER BY id LIMIT ?`, after, batch); err != nil {
				return err
			}
			if len(ids) == 0 {
				return nil
			}
			more, last = len(ids) == batch, ids[len(ids)-1]
			res, err := w.exec(ctx, `UPDATE jobs SET run_at = ? WHERE state = 'pending' AND id > ? AND id <= ? AND destination = ? AND run_at > ?`,
				now, after, last, destination, now)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
		total += int(n)
		if n > 0 {
			s.wakeOutbox()
		}
		if !more {
			return total, nil
		}
		after = last
	}
}
