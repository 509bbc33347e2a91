package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// Deletion (privacy requests, DESIGN §3) is part of rule 6. A deletion with
// event time T names an identifier; in the order of Unify it takes the whole
// profile holding that identifier as it stands at T, so the result is a
// function of the set of messages, whatever the arrival order:
//
//   - An identifier a deletion took is held back at once: it leaves its
//     profile (profile_id 0) and no page, lookup or listing shows it; the
//     raw payloads of the messages naming it are blanked; the deliveries
//     those messages caused, and those about it, are held (not claimed, not
//     listed). Its graph and traits stay, hidden, so that a message older
//     than the deletion that arrives after it is decided as if it had come
//     first (and an identifier such a message shows the deletion never took
//     comes back, with its held deliveries).
//   - A message naming a deleted identifier keeps its other identifiers
//     (they are other people) and its traits when its most specific
//     identifier is not the deleted one (they are about that other person);
//     it keeps no payload and sends nothing, whichever arrives first.
//   - The Jimo token of the value of a deleted user ID is deleted with it.
//   - Once Options.DeletionGrace has passed for every identifier held back
//     in a cluster, they are erased together: their rows, links, traits,
//     messages and deliveries go, and a tombstone (a hash) keeps each from
//     ever coming back. Past the grace period a late message can no longer
//     change who the deletion took.

// tombstoned reads, once per transaction and from the database (another
// process may have written one), whether any tombstone exists.
func (w *writer) tombstoned(ctx context.Context) (bool, error) {
	if w.tombstones == nil {
		var any bool
		if err := w.get(ctx, &any, `SELECT EXISTS (SELECT 1 FROM tombstones)`); err != nil {
			return false, fmt.Errorf("check tombstones: %w", err)
		}
		w.tombstones = &any
	}
	return *w.tombstones, nil
}

// deletions reads, once per transaction and from the database, whether any
// identifier was named by a deletion: only then can a message touch one
// that is held back.
func (w *writer) deletions(ctx context.Context) (bool, error) {
	if w.anyDeletions == nil {
		var any bool
		if err := w.get(ctx, &any, `SELECT EXISTS (SELECT 1 FROM identifiers WHERE delete_key <> '')`); err != nil {
			return false, fmt.Errorf("check deletions: %w", err)
		}
		w.anyDeletions = &any
	}
	return *w.anyDeletions, nil
}

// withoutTombstoned splits ids into those that may be used and those erased
// after a privacy deletion.
func (w *writer) withoutTombstoned(ctx context.Context, ids []candidate) (live, dead []candidate, err error) {
	if len(ids) == 0 {
		return ids, nil, nil
	}
	if any, err := w.tombstoned(ctx); err != nil || !any {
		return ids, nil, err
	}
	for _, c := range ids {
		// A Jimo token of the value of an erased user ID is that person's
		// token (shared mode): erased with them.
		also := c.kind
		if c.kind == mapping.KindJimoToken {
			also = mapping.KindUserID
		}
		var n int
		if err := w.get(ctx, &n, `SELECT COUNT(*) FROM tombstones WHERE kind IN (?, ?) AND value_hash = ?`, c.kind, also, valueHash(c.value)); err != nil {
			return nil, nil, fmt.Errorf("check tombstone: %w", err)
		}
		if n > 0 {
			dead = append(dead, c)
		} else {
			live = append(live, c)
		}
	}
	return live, dead, nil
}

// applyDelete records a deletion of the identifiers cands at the order key
// of m and re-decides their clusters. Identifiers not seen yet are created
// held back, so that they never appear. It returns the identifiers the
// deletion took (or held back before).
func (w *writer) applyDelete(ctx context.Context, cands []candidate, m mapping.Message) ([]mapping.Identifier, error) {
	key := mapping.OrderKey(m.Timestamp, m.Source, m.ID, 0)
	var taken []mapping.Identifier
	for _, c := range cands {
		rows, missing, err := w.lookup(ctx, []candidate{c})
		if err != nil {
			return nil, err
		}
		row := rows[0]
		if missing == 1 {
			if row, err = w.createIdentifier(ctx, c, m); err != nil {
				return nil, err
			}
		}
		if _, err := w.exec(ctx, `UPDATE identifiers SET delete_key = ? WHERE id = ? AND (delete_key = '' OR delete_key > ?)`, key, row.ID, key); err != nil {
			return nil, fmt.Errorf("record deletion: %w", err)
		}
		w.anyDeletions = nil
		last, err := w.clusterKey(ctx, row.ClusterID)
		if err != nil {
			return nil, err
		}
		if _, err := w.exec(ctx, `UPDATE clusters SET last_key = ? WHERE id = ?`, max(last, key), row.ClusterID); err != nil {
			return nil, fmt.Errorf("update cluster: %w", err)
		}
		held, err := w.replayHolding(ctx, row.ClusterID, "rules", "a deletion (privacy request)")
		if err != nil {
			return nil, err
		}
		taken = append(taken, held...)
	}
	if w.opts.DeletionGrace <= 0 {
		if _, err := w.eraseHeldBack(ctx, w.now, 0); err != nil {
			return nil, err
		}
	}
	return taken, nil
}

// holdBack takes identifiers out of their profiles for a deletion: they stay
// in their cluster (so a late message is decided in order) but no page shows
// them, their pending deliveries are dropped, and the messages naming them
// keep no payload.
func (w *writer) holdBack(ctx context.Context, rows []identity) error {
	if len(rows) == 0 {
		return nil
	}
	ids := make([]int64, len(rows))
	values := make([]string, len(rows))
	for i, r := range rows {
		ids[i], values[i] = r.ID, r.Value
	}
	for _, q := range []struct {
		query string
		args  []any
	}{
		{`UPDATE identifiers SET profile_id = 0, deleted_at = ?, warning = '' WHERE id IN (?)`, []any{w.now, ids}},
		// What the messages naming them caused, and what is about them, is
		// held: not sent nor listed until the deletion is final or undone.
		{`UPDATE jobs SET held = 1 WHERE source_message IN (SELECT source || ':' || message_id FROM messages WHERE ` + messagesReferencing + `)`, []any{ids}},
		{`UPDATE jobs SET held = 1 WHERE ordering_key IN (?)`, []any{values}},
		{`UPDATE messages SET raw = '{}' WHERE ` + messagesReferencing, []any{ids}},
		{`UPDATE messages SET raw = '{}' WHERE ` + refusedMessagesNaming, []any{values, values, values}},
	} {
		if err := w.execIn(ctx, q.query, q.args...); err != nil {
			return fmt.Errorf("hold back deleted identifiers: %w", err)
		}
	}
	return nil
}

// release makes due again the held deliveries of identifiers that came back
// (a message older than the deletion showed it never took them): those of
// the messages naming them and those about them, unless something else they
// name or are about is still held back.
func (w *writer) release(ctx context.Context, rows []identity) error {
	if len(rows) == 0 {
		return nil
	}
	ids := make([]int64, len(rows))
	values := make([]string, len(rows))
	for i, r := range rows {
		ids[i], values[i] = r.ID, r.Value
	}
	err := w.execIn(ctx, `UPDATE jobs SET held = 0 WHERE held = 1
		AND (source_message IN (SELECT source || ':' || message_id FROM messages WHERE `+messagesReferencing+`) OR ordering_key IN (?))
		AND NOT EXISTS (SELECT 1 FROM messages m JOIN message_refs r ON r.message_id = m.id JOIN identifiers i ON i.id = r.identifier_id
		                WHERE m.source || ':' || m.message_id = jobs.source_message AND i.profile_id = 0)
		AND NOT EXISTS (SELECT 1 FROM identifiers i WHERE i.kind IN ('user_id', 'anonymous_id', 'jimo_token', 'email')
		                AND i.value = jobs.ordering_key AND i.profile_id = 0)`, ids, values)
	if err != nil {
		return fmt.Errorf("release held deliveries: %w", err)
	}
	return nil
}

// eraseHeldBack erases the identifiers held back in up to limit clusters
// (0: all) whose every held-back identifier was held back before cutoff
// (unix nanoseconds): tombstones, then the rows, links, traits, messages and
// deliveries. A cluster's held-back identifiers go together, so those a
// deletion took stay decided by it until all of them are erased. It returns
// how many identifiers it erased.
func (w *writer) eraseHeldBack(ctx context.Context, cutoff int64, limit int) (int, error) {
	query := `SELECT id, kind, value, profile_id, cluster_id FROM identifiers WHERE deleted_at > 0 AND cluster_id IN (
		SELECT cluster_id FROM identifiers WHERE deleted_at > 0 GROUP BY cluster_id HAVING MAX(deleted_at) <= ? ORDER BY cluster_id`
	args := []any{cutoff}
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	query += `)`
	var rows []identity
	if err := w.sel(ctx, &rows, query, args...); err != nil {
		return 0, fmt.Errorf("find deleted identifiers: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	var ids []int64
	var values []string
	for _, r := range rows {
		ids = append(ids, r.ID)
		values = append(values, r.Value)
		if err := w.tombstone(ctx, r.Kind, r.Value); err != nil {
			return 0, err
		}
	}
	for _, q := range []struct {
		query string
		args  []any
	}{
		{`DELETE FROM link_log WHERE link_id IN (SELECT id FROM links WHERE a_id IN (?) OR b_id IN (?))`, []any{ids, ids}},
		{`DELETE FROM links WHERE a_id IN (?) OR b_id IN (?)`, []any{ids, ids}},
		{`DELETE FROM traits WHERE identifier_id IN (?)`, []any{ids}},
		{`DELETE FROM jobs WHERE source_message IN (SELECT source || ':' || message_id FROM messages WHERE ` + messagesReferencing + `)`, []any{ids}},
		// The messages naming them go, with all their references (to other
		// identifiers too: message row IDs can be reused), and so do the
		// refused ones naming their values.
		{`DELETE FROM messages WHERE ` + messagesReferencing, []any{ids}},
		{`DELETE FROM message_refs WHERE message_id IN (SELECT message_id FROM message_refs WHERE identifier_id IN (?))`, []any{ids}},
		{`DELETE FROM messages WHERE ` + refusedMessagesNaming, []any{values, values, values}},
		{`DELETE FROM jobs WHERE ordering_key IN (?)`, []any{values}},
		{`DELETE FROM identifiers WHERE id IN (?)`, []any{ids}},
	} {
		if err := w.execIn(ctx, q.query, q.args...); err != nil {
			return 0, fmt.Errorf("erase deleted identifiers: %w", err)
		}
	}
	return len(rows), nil
}

// tombstone records that an identifier was erased, by hash, so it never comes back.
func (w *writer) tombstone(ctx context.Context, kind mapping.Kind, value string) error {
	if _, err := w.exec(ctx, `INSERT INTO tombstones (kind, value_hash, deleted_at) VALUES (?, ?, ?) ON CONFLICT (kind, value_hash) DO NOTHING`,
		kind, valueHash(value), w.now); err != nil {
		return fmt.Errorf("tombstone: %w", err)
	}
	t := true
	w.tombstones = &t
	return nil
}

// eraseBatch bounds how many clusters one transaction erases, so that many
// deletions do not stall ingestion.
const eraseBatch = 100

// eraseLoop erases held-back identifiers once their grace period is over, in
// small batches, each a function in one of the committer's groups.
func (s *Store) eraseLoop() {
	if s.opts.DeletionGrace <= 0 {
		return
	}
	every := min(s.opts.DeletionGrace/4, time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if _, err := s.EraseDeleted(context.Background()); err != nil && mapping.ErrorCode(err) != mapping.CodeUnavailable {
				s.log.Warn("erase deleted identifiers", "err", err)
			}
		case <-s.closing:
			return
		}
	}
}

// EraseDeleted erases every identifier whose deletion grace period is over,
// in transactions of at most eraseBatch clusters, and returns how many
// identifiers it erased. The store runs it by itself; it is exported for tools and tests.
func (s *Store) EraseDeleted(ctx context.Context) (int, error) {
	total := 0
	for {
		var n int
		err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
			var err error
			n, err = w.eraseHeldBack(ctx, w.now-int64(s.opts.DeletionGrace), eraseBatch)
			return err
		})
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// heldBack reads whether the identifier with row ID id is held back by a deletion.
func (w *writer) heldBack(ctx context.Context, id int64) (bool, error) {
	var profile int64
	err := w.get(ctx, &profile, `SELECT profile_id FROM identifiers WHERE id = ?`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read identifier %d: %w", id, err)
	}
	return profile == 0, nil
}
