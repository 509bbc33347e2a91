package mapping

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Notes recorded on messages when a rule fires.
const (
	NoteImpersonating = "impersonating: stored, links nothing"
	NoteDeletedID     = "identifier was deleted (privacy request); not linked"
)

// identity is an identifier row as the writer needs it.
type identity struct {
	ID        int64  `db:"id"`
	Kind      Kind   `db:"kind"`
	Value     string `db:"value"`
	ProfileID int64  `db:"profile_id"`
	ClusterID int64  `db:"cluster_id"`
}

// candidate is an identifier a message names, with its field for notes.
type candidate struct {
	field string
	kind  Kind
	value string
}

// apply stores one message and applies it. It must run inside w.tx.
func (w *writer) apply(ctx context.Context, m Message) (Receipt, error) {
	var notes []string
	var ids []candidate
	if m.Rejected == "" {
		ids, notes = w.identifiers(m)
	}
	if m.Rejected == "" && m.Type != "delete" && m.Type != "logout" && len(ids) == 0 {
		m.Rejected = "no_usable_identity"
	}

	// Identifiers that were deleted stay deleted: the message is kept without them.
	var live []candidate
	for _, c := range ids {
		dead, err := w.tombstoned(ctx, c.kind, c.value)
		if err != nil {
			return Receipt{}, err
		}
		if dead {
			notes = append(notes, fmt.Sprintf("%s: %s", c.field, NoteDeletedID))
			continue
		}
		live = append(live, c)
	}
	if len(ids) > 0 && len(live) == 0 && m.Type != "delete" {
		m.Rejected = "deleted_identity"
		m.Raw = json.RawMessage(`{}`)
	}

	inserted, err := w.insertMessage(ctx, m, live, notes)
	if err != nil {
		return Receipt{}, err
	}
	if !inserted {
		return Receipt{Duplicate: true}, nil
	}
	if m.Rejected != "" {
		return Receipt{Notes: append(notes, "rejected: "+m.Rejected)}, nil
	}
	if m.Type == "delete" {
		for _, c := range live {
			if _, err := w.deleteProfile(ctx, Identifier{Kind: c.kind, Value: c.value}); err != nil && ErrorCode(err) != CodeNotFound {
				return Receipt{}, err
			}
		}
		return Receipt{Notes: notes}, nil
	}

	rows := make([]identity, len(live))
	for i, c := range live {
		if rows[i], err = w.ensureIdentifier(ctx, c.kind, c.value, m); err != nil {
			return Receipt{}, err
		}
	}
	if m.Impersonating {
		notes = append(notes, NoteImpersonating)
	} else {
		// Every identifier links to the first (the most specific the message names).
		for i := 1; i < len(rows); i++ {
			// An earlier link of this message may have moved either identifier.
			if i > 1 {
				if rows[0], err = w.reload(ctx, rows[0].ID); err != nil {
					return Receipt{}, err
				}
				if rows[i], err = w.reload(ctx, rows[i].ID); err != nil {
					return Receipt{}, err
				}
			}
			note, err := w.link(ctx, rows[0], rows[i], OrderKey(m.Timestamp, m.Source, m.ID, i), m)
			if err != nil {
				return Receipt{}, err
			}
			if note != "" {
				notes = append(notes, note)
			}
		}
	}
	if len(rows) > 0 && !m.Impersonating {
		if err := w.mergeTraits(ctx, rows[0].ID, m); err != nil {
			return Receipt{}, err
		}
	}
	if m.UserIDWarning != "" {
		for _, r := range rows {
			if r.Kind == KindUserID {
				if _, err := w.tx.ExecContext(ctx, `UPDATE identifiers SET warning = ? WHERE id = ?`, m.UserIDWarning, r.ID); err != nil {
					return Receipt{}, fmt.Errorf("record warning: %w", err)
				}
			}
		}
	}
	for _, j := range m.Jobs {
		if err := w.enqueue(ctx, j, m); err != nil {
			return Receipt{}, err
		}
	}
	return Receipt{Notes: notes}, nil
}

// identifiers normalises the identifiers a message names, most specific
// first, dropping (with a note) the values the rules refuse.
func (w *writer) identifiers(m Message) ([]candidate, []string) {
	fields := []candidate{
		{"userId", KindUserID, m.UserID},
		{"jimoToken", KindJimoToken, m.JimoToken},
		{"anonymousId", KindAnonymousID, m.AnonymousID},
		{"previousId", KindAnonymousID, m.PreviousID},
	}
	if w.opts.MergeOnEmail {
		fields = append(fields, candidate{"email", KindEmail, m.Email})
	}
	var out []candidate
	var notes []string
	for _, f := range fields {
		if f.value == "" {
			continue
		}
		v, reason := w.opts.Blocklist.Check(f.value)
		if reason != "" {
			notes = append(notes, fmt.Sprintf("%s refused: %s", f.field, reason))
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || (o.kind == f.kind && o.value == v)
		}
		if !dup {
			out = append(out, candidate{f.field, f.kind, v})
		}
	}
	return out, notes
}

func valueHash(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

func (w *writer) tombstoned(ctx context.Context, kind Kind, value string) (bool, error) {
	var n int
	err := w.tx.GetContext(ctx, &n, `SELECT COUNT(*) FROM tombstones WHERE kind = ? AND value_hash = ?`, kind, valueHash(value))
	if err != nil {
		return false, fmt.Errorf("check tombstone: %w", err)
	}
	return n > 0, nil
}

// insertMessage stores the message unless its (source, ID) is already stored; it reports whether it inserted.
func (w *writer) insertMessage(ctx context.Context, m Message, ids []candidate, notes []string) (bool, error) {
	var userID, anonymousID sql.NullString
	for _, c := range ids {
		switch {
		case c.field == "userId":
			userID = sql.NullString{String: c.value, Valid: true}
		case c.field == "anonymousId":
			anonymousID = sql.NullString{String: c.value, Valid: true}
		}
	}
	notesJSON := ""
	if len(notes) > 0 {
		b, _ := json.Marshal(notes)
		notesJSON = string(b)
	}
	raw := string(m.Raw)
	if raw == "" {
		raw = "{}"
	}
	res, err := w.tx.ExecContext(ctx, `INSERT INTO messages
		(source, message_id, type, event, user_id, anonymous_id, event_at, received_at, rejected, notes, raw)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (source, message_id) DO NOTHING`,
		m.Source, m.ID, m.Type, m.Event, userID, anonymousID, m.Timestamp.UnixNano(), m.ReceivedAt.UnixNano(), m.Rejected, notesJSON, raw)
	if err != nil {
		return false, fmt.Errorf("insert message: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("insert message: %w", err)
	}
	return n == 1, nil
}

// ensureIdentifier returns the identifier's row, creating it (alone in a new profile) if it is new.
func (w *writer) ensureIdentifier(ctx context.Context, kind Kind, value string, m Message) (identity, error) {
	var row identity
	err := w.tx.GetContext(ctx, &row, `SELECT id, kind, value, profile_id, cluster_id FROM identifiers WHERE kind = ? AND value = ?`, kind, value)
	if err == nil {
		return row, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return row, fmt.Errorf("find identifier: %w", err)
	}
	var userID sql.NullString
	anonymous := 0
	switch kind {
	case KindUserID:
		userID = sql.NullString{String: value, Valid: true}
	case KindAnonymousID:
		anonymous = 1
	}
	var profileID int64
	if err := w.tx.GetContext(ctx, &profileID, `INSERT INTO profiles (user_id, anonymous_ids, links, updated_at) VALUES (?, ?, 0, ?) RETURNING id`, userID, anonymous, w.now); err != nil {
		return row, fmt.Errorf("create profile: %w", err)
	}
	row = identity{Kind: kind, Value: value, ProfileID: profileID, ClusterID: profileID}
	if err := w.tx.GetContext(ctx, &row.ID, `INSERT INTO identifiers (kind, value, profile_id, cluster_id, first_seen_at, first_source, first_message_id)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`, kind, value, profileID, profileID, m.Timestamp.UnixNano(), m.Source, m.ID); err != nil {
		return row, fmt.Errorf("create identifier: %w", err)
	}
	return row, nil
}

func (w *writer) reload(ctx context.Context, id int64) (identity, error) {
	var row identity
	if err := w.tx.GetContext(ctx, &row, `SELECT id, kind, value, profile_id, cluster_id FROM identifiers WHERE id = ?`, id); err != nil {
		return row, fmt.Errorf("reload identifier %d: %w", id, err)
	}
	return row, nil
}

// link records a link between a and b and decides it. A link that arrives
// after every other link of its cluster (by order key) is decided on the
// spot; an older one re-decides the whole cluster. It returns a note when the
// link is refused.
func (w *writer) link(ctx context.Context, a, b identity, key string, m Message) (string, error) {
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
	decision, reason := DecisionApplied, ""
	if inOrder && a.ProfileID != b.ProfileID {
		if decision, reason, err = w.mergeProfiles(ctx, a.ProfileID, b.ProfileID); err != nil {
			return "", err
		}
	} else if inOrder {
		if _, err := w.tx.ExecContext(ctx, `UPDATE profiles SET links = links + 1, updated_at = ? WHERE id = ?`, w.now, a.ProfileID); err != nil {
			return "", fmt.Errorf("count link: %w", err)
		}
	}
	if _, err := w.tx.ExecContext(ctx, `INSERT INTO links (a_id, b_id, order_key, source, message_id, event_at, decision, reason, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_key) DO NOTHING`,
		a.ID, b.ID, key, m.Source, m.ID, m.Timestamp.UnixNano(), decision, reason, w.now); err != nil {
		return "", fmt.Errorf("insert link: %w", err)
	}
	if key > lastKey {
		lastKey = key
	}
	if _, err := w.tx.ExecContext(ctx, `UPDATE clusters SET last_key = ? WHERE id = ?`, lastKey, cluster); err != nil {
		return "", fmt.Errorf("update cluster: %w", err)
	}
	if !inOrder {
		if err := w.replay(ctx, cluster, "rules"); err != nil {
			return "", err
		}
		if err := w.tx.GetContext(ctx, &decision, `SELECT decision FROM links WHERE order_key = ?`, key); err != nil {
			return "", fmt.Errorf("read decision: %w", err)
		}
		if err := w.tx.GetContext(ctx, &reason, `SELECT reason FROM links WHERE order_key = ?`, key); err != nil {
			return "", fmt.Errorf("read decision: %w", err)
		}
	}
	if decision != DecisionApplied {
		return fmt.Sprintf("link %s–%s not applied (%s): %s", a.Value, b.Value, decision, reason), nil
	}
	return "", nil
}

// clusterKey returns the greatest order key decided in a cluster ("" for a new one), creating its row.
func (w *writer) clusterKey(ctx context.Context, id int64) (string, error) {
	var key string
	err := w.tx.GetContext(ctx, &key, `SELECT last_key FROM clusters WHERE id = ?`, id)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := w.tx.ExecContext(ctx, `INSERT INTO clusters (id, last_key) VALUES (?, '')`, id); err != nil {
			return "", fmt.Errorf("create cluster: %w", err)
		}
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read cluster: %w", err)
	}
	return key, nil
}

// mergeClusters folds cluster b into a (or a into b, keeping the smaller ID) and returns the survivor and its key.
func (w *writer) mergeClusters(ctx context.Context, a int64, aKey string, b int64, bKey string) (int64, string, error) {
	if b < a {
		a, b = b, a
	}
	key := max(aKey, bKey)
	if _, err := w.tx.ExecContext(ctx, `UPDATE identifiers SET cluster_id = ? WHERE cluster_id = ?`, a, b); err != nil {
		return 0, "", fmt.Errorf("merge clusters: %w", err)
	}
	if _, err := w.tx.ExecContext(ctx, `DELETE FROM clusters WHERE id = ?`, b); err != nil {
		return 0, "", fmt.Errorf("merge clusters: %w", err)
	}
	return a, key, nil
}

type profileRow struct {
	ID           int64          `db:"id"`
	UserID       sql.NullString `db:"user_id"`
	AnonymousIDs int            `db:"anonymous_ids"`
	Links        int            `db:"links"`
}

func (p profileRow) state() profileState {
	return profileState{userID: p.UserID.String, anonymousIDs: p.AnonymousIDs, links: p.Links}
}

// mergeProfiles decides an in-order link between two profiles and, if the
// rules allow it, merges the one with the larger ID into the other.
func (w *writer) mergeProfiles(ctx context.Context, a, b int64) (Decision, string, error) {
	var rows []profileRow
	if err := w.tx.SelectContext(ctx, &rows, `SELECT id, user_id, anonymous_ids, links FROM profiles WHERE id IN (?, ?)`, a, b); err != nil {
		return "", "", fmt.Errorf("read profiles: %w", err)
	}
	if len(rows) != 2 {
		return "", "", fmt.Errorf("profiles %d and %d: found %d rows", a, b, len(rows))
	}
	keep, drop := rows[0], rows[1]
	if drop.ID < keep.ID {
		keep, drop = drop, keep
	}
	decision, reason, merged := decide(keep.state(), drop.state(), w.opts.Caps, false)
	if decision != DecisionApplied {
		return decision, reason, nil
	}
	if _, err := w.tx.ExecContext(ctx, `UPDATE identifiers SET profile_id = ? WHERE profile_id = ?`, keep.ID, drop.ID); err != nil {
		return "", "", fmt.Errorf("merge profiles: %w", err)
	}
	if err := w.saveProfile(ctx, keep.ID, merged); err != nil {
		return "", "", err
	}
	if _, err := w.tx.ExecContext(ctx, `DELETE FROM profiles WHERE id = ?`, drop.ID); err != nil {
		return "", "", fmt.Errorf("merge profiles: %w", err)
	}
	return DecisionApplied, "", nil
}

func (w *writer) saveProfile(ctx context.Context, id int64, st profileState) error {
	userID := sql.NullString{String: st.userID, Valid: st.userID != ""}
	if _, err := w.tx.ExecContext(ctx, `UPDATE profiles SET user_id = ?, anonymous_ids = ?, links = ?, updated_at = ? WHERE id = ?`,
		userID, st.anonymousIDs, st.links, w.now, id); err != nil {
		return fmt.Errorf("save profile %d: %w", id, err)
	}
	return nil
}

// enqueue writes an outbox job unless the same destination already has that message ID.
func (w *writer) enqueue(ctx context.Context, j Job, m Message) error {
	if _, err := w.tx.ExecContext(ctx, `INSERT INTO jobs
		(destination, ordering_key, message_id, payload, state, attempts, run_at, source_message, created_at, updated_at)
		VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?) ON CONFLICT (destination, message_id) DO NOTHING`,
		j.Destination, j.OrderingKey, j.MessageID, string(j.Payload), w.now, string(m.Source)+":"+m.ID, w.now, w.now); err != nil {
		return fmt.Errorf("enqueue %s job: %w", j.Destination, err)
	}
	return nil
}
