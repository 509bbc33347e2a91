package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/bridgeworks/bridge/mapping"
)

// link records a link between a and b (one row per pair, keeping the
// earliest order key) and decides it. A link that is new and later than
// every other link of its cluster is decided on the spot; a link that is
// older than what its cluster has seen re-decides the whole cluster. It
// returns a note when the link is not applied.
func (w *writer) link(ctx context.Context, a, b identity, key string, m mapping.Message) (string, error) {
	lo, hi := a.ID, b.ID
	if hi < lo {
		lo, hi = hi, lo
	}
	var existing linkRow
	err := w.get(ctx, &existing, `SELECT id, a_id, b_id, order_key, forced, withdrawn, decision, reason FROM links WHERE a_id = ? AND b_id = ?`, lo, hi)
	switch {
	case err == nil && key >= existing.OrderKey:
		// Seen before, earlier: nothing changes.
		if existing.Withdrawn || existing.Decision == mapping.DecisionApplied {
			return "", nil
		}
		return refusedNote(a.Value, b.Value, existing.Decision, existing.Reason), nil
	case err == nil:
		// The same link, caused earlier than we knew: it may now win a conflict.
		if err := w.later(ctx, "update link", `UPDATE links SET order_key = ?, source = ?, message_id = ?, event_at = ? WHERE id = ?`,
			key, m.Source, m.ID, m.Timestamp.UnixNano(), existing.ID); err != nil {
			return "", err
		}
		return w.redecide(ctx, a, b, a.ClusterID, lo, hi)
	case !errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("find link: %w", err)
	}

	cluster := a.ClusterID
	lastKey, err := w.clusterKey(ctx, a.ClusterID)
	if err != nil {
		return "", err
	}
	if b.ClusterID != a.ClusterID {
		otherKey, err := w.clusterKey(ctx, b.ClusterID)
		if err != nil {
			return "", err
		}
		cluster, lastKey, err = w.mergeClusters(ctx, a.ClusterID, lastKey, b.ClusterID, otherKey)
		if err != nil {
			return "", err
		}
	}
	inOrder := key > lastKey
	decision, reason := mapping.DecisionApplied, ""
	if inOrder && (a.ProfileID == 0 || b.ProfileID == 0) {
		// A deletion earlier in the order took one of them (see deletion.go).
		decision, reason = mapping.DecisionDeleted, mapping.DeletedReason
	} else if inOrder && a.ProfileID != b.ProfileID {
		if decision, reason, err = w.mergeProfiles(ctx, a.ProfileID, b.ProfileID); err != nil {
			return "", err
		}
	} else if inOrder {
		if err := w.later(ctx, "count link", `UPDATE profiles SET links = links + 1, updated_at = ? WHERE id = ?`, w.now, a.ProfileID); err != nil {
			return "", err
		}
	}
	if err := w.insertLink(ctx, lo, hi, key, decision, reason, m); err != nil {
		return "", err
	}
	if err := w.later(ctx, "update cluster", `UPDATE clusters SET last_key = ? WHERE id = ?`, max(key, lastKey), cluster); err != nil {
		return "", err
	}
	if !inOrder {
		return w.redecide(ctx, a, b, cluster, lo, hi)
	}
	if decision != mapping.DecisionApplied {
		return refusedNote(a.Value, b.Value, decision, reason), nil
	}
	return "", nil
}

// redecide replays cluster and returns the note for the link (lo, hi).
func (w *writer) redecide(ctx context.Context, a, b identity, cluster, lo, hi int64) (string, error) {
	if err := w.replay(ctx, cluster, "rules", "an earlier event arrived"); err != nil {
		return "", err
	}
	var l linkRow
	if err := w.get(ctx, &l, `SELECT id, a_id, b_id, order_key, forced, withdrawn, decision, reason FROM links WHERE a_id = ? AND b_id = ?`, lo, hi); err != nil {
		return "", fmt.Errorf("read decision: %w", err)
	}
	if l.Decision != mapping.DecisionApplied {
		return refusedNote(a.Value, b.Value, l.Decision, l.Reason), nil
	}
	return "", nil
}

// clusterKey returns the greatest order key decided in a cluster ("" for a new one), creating its row.
func (w *writer) clusterKey(ctx context.Context, id int64) (string, error) {
	var key string
	err := w.get(ctx, &key, `SELECT last_key FROM clusters WHERE id = ?`, id)
	if errors.Is(err, sql.ErrNoRows) {
		if err := w.later(ctx, "create cluster", `INSERT INTO clusters (id, last_key) VALUES (?, '')`, id); err != nil {
			return "", err
		}
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read cluster: %w", err)
	}
	return key, nil
}

// mergeClusters folds the cluster with the larger ID into the other and returns the survivor and its key.
func (w *writer) mergeClusters(ctx context.Context, a int64, aKey string, b int64, bKey string) (int64, string, error) {
	if b < a {
		a, b = b, a
	}
	if err := w.later(ctx, "merge clusters", `UPDATE identifiers SET cluster_id = ? WHERE cluster_id = ?`, a, b); err != nil {
		return 0, "", err
	}
	if err := w.later(ctx, "merge clusters", `DELETE FROM clusters WHERE id = ?`, b); err != nil {
		return 0, "", err
	}
	return a, max(aKey, bKey), nil
}

type profileRow struct {
	ID           int64          `db:"id"`
	UserID       sql.NullString `db:"user_id"`
	AnonymousIDs int            `db:"anonymous_ids"`
	Links        int            `db:"links"`
}

func (p profileRow) state() mapping.ProfileState {
	return mapping.ProfileState{UserID: p.UserID.String, AnonymousIDs: p.AnonymousIDs, Links: p.Links}
}

// mergeProfiles decides an in-order link between two profiles and, if the
// rules allow it, merges the one with the larger ID into the other.
func (w *writer) mergeProfiles(ctx context.Context, a, b int64) (mapping.Decision, string, error) {
	var rows []profileRow
	if err := w.sel(ctx, &rows, `SELECT id, user_id, anonymous_ids, links FROM profiles WHERE id IN (?, ?)`, a, b); err != nil {
		return "", "", fmt.Errorf("read profiles: %w", err)
	}
	if len(rows) != 2 {
		return "", "", fmt.Errorf("profiles %d and %d: found %d rows", a, b, len(rows))
	}
	keep, drop := rows[0], rows[1]
	if drop.ID < keep.ID {
		keep, drop = drop, keep
	}
	decision, reason, merged := mapping.Decide(keep.state(), drop.state(), w.opts.Caps, false)
	if decision != mapping.DecisionApplied {
		return decision, reason, nil
	}
	if err := w.later(ctx, "merge profiles", `UPDATE identifiers SET profile_id = ? WHERE profile_id = ?`, keep.ID, drop.ID); err != nil {
		return "", "", err
	}
	if err := w.saveProfile(ctx, keep.ID, merged); err != nil {
		return "", "", err
	}
	if err := w.later(ctx, "merge profiles", `DELETE FROM profiles WHERE id = ?`, drop.ID); err != nil {
		return "", "", err
	}
	return mapping.DecisionApplied, "", nil
}

func (w *writer) saveProfile(ctx context.Context, id int64, st mapping.ProfileState) error {
	return w.later(ctx, fmt.Sprintf("save profile %d", id), `UPDATE profiles SET user_id = ?, anonymous_ids = ?, links = ?, updated_at = ? WHERE id = ?`,
		nullString(st.UserID), st.AnonymousIDs, st.Links, w.now, id)
}
