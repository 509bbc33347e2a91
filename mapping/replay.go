package mapping

import (
	"context"
	"database/sql"
	"fmt"
	"sort"

	"github.com/jmoiron/sqlx"
)

type linkRow struct {
	ID        int64    `db:"id"`
	AID       int64    `db:"a_id"`
	BID       int64    `db:"b_id"`
	OrderKey  string   `db:"order_key"`
	Forced    bool     `db:"forced"`
	Withdrawn bool     `db:"withdrawn"`
	Decision  Decision `db:"decision"`
	Reason    string   `db:"reason"`
}

// replay re-decides every link of a cluster with Unify and writes what
// changed: profile membership, profile rows, and link decisions (each change
// appended to the link log under actor, with cause saying what triggered it).
func (w *writer) replay(ctx context.Context, cluster int64, actor, cause string) error {
	var idents []identity
	if err := w.sel(ctx, &idents, `SELECT id, kind, value, profile_id, cluster_id FROM identifiers WHERE cluster_id = ? ORDER BY id`, cluster); err != nil {
		return fmt.Errorf("replay cluster %d: %w", cluster, err)
	}
	var links []linkRow
	if err := w.sel(ctx, &links, `SELECT l.id, l.a_id, l.b_id, l.order_key, l.forced, l.withdrawn, l.decision, l.reason
		FROM links l JOIN identifiers i ON i.id = l.a_id WHERE i.cluster_id = ?`, cluster); err != nil {
		return fmt.Errorf("replay cluster %d: %w", cluster, err)
	}
	index := make(map[int64]int, len(idents))
	nodes := make([]Node, len(idents))
	for i, id := range idents {
		index[id.ID] = i
		nodes[i] = Node{Kind: id.Kind, Value: id.Value}
	}
	edges := make([]Edge, len(links))
	for i, l := range links {
		edges[i] = Edge{A: index[l.AID], B: index[l.BID], OrderKey: l.OrderKey, Forced: l.Forced, Withdrawn: l.Withdrawn}
	}
	out := Unify(nodes, edges, w.opts.Caps)

	// Link decisions.
	for i, l := range links {
		if l.Withdrawn || (out.Decisions[i] == l.Decision && out.Reasons[i] == l.Reason) {
			continue
		}
		if _, err := w.exec(ctx, `UPDATE links SET decision = ?, reason = ? WHERE id = ?`, out.Decisions[i], out.Reasons[i], l.ID); err != nil {
			return fmt.Errorf("replay: update link %d: %w", l.ID, err)
		}
		if err := w.logLink(ctx, l.ID, out.Decisions[i], redecided(cause, out.Reasons[i]), actor); err != nil {
			return err
		}
	}

	// Profile states per component.
	states := map[int]*profileState{}
	for i, n := range nodes {
		c := out.Component[i]
		st := states[c]
		if st == nil {
			st = &profileState{}
			states[c] = st
		}
		switch n.Kind {
		case KindUserID:
			st.userID = n.Value
		case KindAnonymousID:
			st.anonymousIDs++
		}
	}
	for i, l := range links {
		if !l.Withdrawn && out.Decisions[i] == DecisionApplied {
			states[out.Component[index[l.AID]]].links++
		}
	}

	// Keep profile IDs stable: each component keeps the smallest old profile ID
	// among its members that no earlier component took; the rest get new rows.
	members := map[int][]int{}
	var comps []int
	for i := range nodes {
		c := out.Component[i]
		if members[c] == nil {
			comps = append(comps, c)
		}
		members[c] = append(members[c], i)
	}
	sort.Ints(comps)
	taken := map[int64]bool{}
	old := map[int64]bool{}
	for _, id := range idents {
		old[id.ProfileID] = true
	}
	for _, c := range comps {
		var candidates []int64
		for _, i := range members[c] {
			candidates = append(candidates, idents[i].ProfileID)
		}
		sort.Slice(candidates, func(x, y int) bool { return candidates[x] < candidates[y] })
		var profileID int64
		for _, p := range candidates {
			if !taken[p] {
				profileID = p
				break
			}
		}
		st := *states[c]
		if profileID == 0 {
			var err error
			if profileID, err = w.insertProfileRow(ctx, st); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
		} else if err := w.saveProfile(ctx, profileID, st); err != nil {
			return err
		}
		taken[profileID] = true
		for _, i := range members[c] {
			if idents[i].ProfileID == profileID {
				continue
			}
			if _, err := w.exec(ctx, `UPDATE identifiers SET profile_id = ? WHERE id = ?`, profileID, idents[i].ID); err != nil {
				return fmt.Errorf("replay: move identifier: %w", err)
			}
		}
	}
	for p := range old {
		if !taken[p] {
			if _, err := w.exec(ctx, `DELETE FROM profiles WHERE id = ?`, p); err != nil {
				return fmt.Errorf("replay: drop profile: %w", err)
			}
		}
	}
	return nil
}

func redecided(cause, reason string) string {
	if reason == "" {
		return "re-decided after " + cause
	}
	return "re-decided after " + cause + ": " + reason
}

func (w *writer) logLink(ctx context.Context, linkID int64, d Decision, reason, actor string) error {
	if _, err := w.exec(ctx, `INSERT INTO link_log (link_id, at, decision, reason, actor) VALUES (?, ?, ?, ?, ?)`,
		linkID, w.now, d, reason, actor); err != nil {
		return fmt.Errorf("log link %d: %w", linkID, err)
	}
	return nil
}

// deleteProfile deletes the profile holding id, cascading to its identifiers,
// their links, traits and messages, and leaves a tombstone per identifier. The
// rest of the cluster is re-decided, since a conflict with the deleted profile
// may no longer stand. It returns the identifiers deleted.
func (w *writer) deleteProfile(ctx context.Context, id Identifier) ([]Identifier, error) {
	var profileID int64
	err := w.get(ctx, &profileID, `SELECT profile_id FROM identifiers WHERE kind = ? AND value = ?`, id.Kind, id.Value)
	if err == sql.ErrNoRows {
		return nil, Errorf(CodeNotFound, "no profile has %s", id)
	}
	if err != nil {
		return nil, fmt.Errorf("delete %s: %w", id, err)
	}
	var members []identity
	if err := w.sel(ctx, &members, `SELECT id, kind, value, profile_id, cluster_id FROM identifiers WHERE profile_id = ?`, profileID); err != nil {
		return nil, fmt.Errorf("delete %s: %w", id, err)
	}
	var deleted []Identifier
	var ids []int64
	var values []string
	for _, m := range members {
		deleted = append(deleted, Identifier{Kind: m.Kind, Value: m.Value})
		ids = append(ids, m.ID)
		values = append(values, m.Value)
		if err := w.tombstone(ctx, m.Kind, m.Value); err != nil {
			return nil, err
		}
	}
	statements := []string{
		`DELETE FROM link_log WHERE link_id IN (SELECT id FROM links WHERE a_id IN (?) OR b_id IN (?))`,
		`DELETE FROM links WHERE a_id IN (?) OR b_id IN (?)`,
	}
	for _, s := range statements {
		if err := w.execIn(ctx, s, ids, ids); err != nil {
			return nil, fmt.Errorf("delete %s: %w", id, err)
		}
	}
	for _, s := range []string{`DELETE FROM traits WHERE identifier_id IN (?)`, `DELETE FROM identifiers WHERE id IN (?)`} {
		if err := w.execIn(ctx, s, ids); err != nil {
			return nil, fmt.Errorf("delete %s: %w", id, err)
		}
	}
	// The messages naming the profile's identifiers go, with all their
	// references (to other profiles' identifiers too: message IDs can be
	// reused), and so do the refused ones naming their values.
	for _, s := range []string{
		`DELETE FROM messages WHERE ` + messagesReferencing,
		`DELETE FROM message_refs WHERE message_id IN (SELECT message_id FROM message_refs WHERE identifier_id IN (?))`,
	} {
		if err := w.execIn(ctx, s, ids); err != nil {
			return nil, fmt.Errorf("delete %s: %w", id, err)
		}
	}
	if err := w.execIn(ctx, `DELETE FROM messages WHERE `+refusedMessagesNaming, values, values, values); err != nil {
		return nil, fmt.Errorf("delete %s: %w", id, err)
	}
	// Deliveries carry traits too: none is sent (or kept) after the deletion.
	if err := w.execIn(ctx, `DELETE FROM jobs WHERE ordering_key IN (?)`, values); err != nil {
		return nil, fmt.Errorf("delete %s: %w", id, err)
	}
	if _, err := w.exec(ctx, `DELETE FROM profiles WHERE id = ?`, profileID); err != nil {
		return nil, fmt.Errorf("delete %s: %w", id, err)
	}
	var rest int
	if err := w.get(ctx, &rest, `SELECT COUNT(*) FROM identifiers WHERE cluster_id = ?`, members[0].ClusterID); err != nil {
		return nil, fmt.Errorf("delete %s: %w", id, err)
	}
	if rest > 0 {
		if err := w.replay(ctx, members[0].ClusterID, "rules", "a profile in the cluster was deleted"); err != nil {
			return nil, err
		}
	}
	return deleted, nil
}

// tombstone records that an identifier was deleted, by hash, so it never comes back.
func (w *writer) tombstone(ctx context.Context, kind Kind, value string) error {
	if _, err := w.exec(ctx, `INSERT INTO tombstones (kind, value_hash, deleted_at) VALUES (?, ?, ?) ON CONFLICT (kind, value_hash) DO NOTHING`,
		kind, valueHash(value), w.now); err != nil {
		return fmt.Errorf("tombstone: %w", err)
	}
	// From now on messages are checked against tombstones. (Should this
	// transaction roll back, they are checked needlessly: harmless.)
	w.store.anyTombstones = true
	return nil
}

// execIn runs a statement whose IN (?) lists are expanded from slices. Such
// statements vary with the list lengths, so they are not kept prepared.
func (w *writer) execIn(ctx context.Context, query string, args ...any) error {
	q, a, err := sqlx.In(query, args...)
	if err != nil {
		return err
	}
	_, err = w.conn.ExecContext(ctx, w.store.write.Rebind(q), a...)
	return err
}
