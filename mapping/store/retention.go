package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// RetentionOptions configures RunRetention. Zero values mean the defaults.
type RetentionOptions struct {
	// KeepMessages is how long a message's raw payload is kept after it was
	// received; 0 keeps payloads forever.
	KeepMessages time.Duration
	// Every is how often a pass runs; default 1 hour. The first runs at once.
	Every  time.Duration
	Logger *slog.Logger
}

// RunRetention expires old message payloads (see ExpireMessages) at once
// and then every opts.Every, until ctx ends. With KeepMessages 0 it only
// waits for ctx.
func (s *Store) RunRetention(ctx context.Context, opts RetentionOptions) error {
	if opts.Every <= 0 {
		opts.Every = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.KeepMessages <= 0 {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(opts.Every)
	defer tick.Stop()
	for {
		n, err := s.ExpireMessages(ctx, opts.KeepMessages)
		switch {
		case err != nil && ctx.Err() == nil:
			opts.Logger.Warn("expire message payloads", "err", err)
		case n > 0:
			opts.Logger.Info("message payloads expired", "messages", n, "keep", opts.KeepMessages.String())
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// ExpireMessages removes the raw payload of every message received more
// than keep ago and returns how many it expired: the payload becomes "" and
// the message records when it expired (History reports it); the row, the
// identifiers, links, link log and traits it led to stay until a deletion.
// It works in batches of a few hundred messages in ID order, each its own
// transaction, so ingestion goes on between them. keep <= 0 expires nothing.
func (s *Store) ExpireMessages(ctx context.Context, keep time.Duration) (int, error) {
	return s.expireMessages(ctx, keep, housekeepingBatch, nil)
}

// expireMessages is ExpireMessages with batches of batch message IDs;
// between, if not nil, runs after every batch but the last.
func (s *Store) expireMessages(ctx context.Context, keep time.Duration, batch int, between func()) (int, error) {
	if keep <= 0 {
		return 0, nil
	}
	now := s.opts.Now()
	cutoff := now.Add(-keep).UnixNano()
	// Messages before end were received before the cutoff (IDs grow with
	// arrival); a pass resumes a batch before the last payload it expired,
	// so a message committed a moment out of order is caught by the next.
	end, err := s.firstMessageSince(ctx, cutoff)
	if err != nil {
		return 0, fmt.Errorf("expire message payloads: %w", err)
	}
	var bounds struct {
		First   int64 `db:"first"`
		Expired int64 `db:"expired"`
	}
	if err := s.read.GetContext(ctx, &bounds, `SELECT COALESCE((SELECT MIN(id) FROM messages), 0) AS first,
		COALESCE((SELECT MAX(id) FROM messages WHERE raw_expired_at <> 0), 0) AS expired`); err != nil {
		return 0, fmt.Errorf("expire message payloads: %w", err)
	}
	after := max(bounds.First-1, bounds.Expired-int64(batch))
	total := 0
	for after < end-1 {
		upTo := min(after+int64(batch), end-1)
		var n int64
		err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
			res, err := w.exec(ctx, `UPDATE messages SET raw = '', raw_expired_at = ?
				WHERE id > ? AND id <= ? AND raw_expired_at = 0 AND received_at < ?`, now.UnixNano(), after, upTo, cutoff)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("expire message payloads: %w", err)
		}
		total += int(n)
		after = upTo
		if after < end-1 && between != nil {
			between()
		}
	}
	return total, nil
}
