package store

import (
	"context"
	"fmt"
	"sort"

	"github.com/jmoiron/sqlx"

	"github.com/bridgeworks/bridge/mapping"
)

type linkRow struct {
	ID        int64            `db:"id"`
	AID       int64            `db:"a_id"`
	BID       int64            `db:"b_id"`
	OrderKey  string           `db:"order_key"`
	Forced    bool             `db:"forced"`
	Withdrawn bool             `db:"withdrawn"`
	Decision  mapping.Decision `db:"decision"`
	Reason    string           `db:"reason"`
}

// replay re-decides every link of a cluster with Unify and writes what
// changed: profile membership, profile rows, link decisions (each change
// appended to the link log under actor, with cause saying what triggered it),
// and which identifiers a deletion holds back.
func (w *writer) replay(ctx context.Context, cluster int64, actor, cause string) error {
	_, err := w.replayHolding(ctx, cluster, actor, cause)
	return err
}

// clusterMember is an identifier row as replay needs it.
type clusterMember struct {
	identity
	DeleteKey string `db:"delete_key"`
}

// replayHolding is replay; it returns the identifiers that a deletion newly holds back.
func (w *writer) replayHolding(ctx context.Context, cluster int64, actor, cause string) ([]mapping.Identifier, error) {
	var idents []clusterMember
	if err := w.sel(ctx, &idents, `SELECT id, kind, value, profile_id, cluster_id, delete_key FROM identifiers WHERE cluster_id = ? ORDER BY id`, cluster); err != nil {
		return nil, fmt.Errorf("replay cluster %d: %w", cluster, err)
	}
	var links []linkRow
	if err := w.sel(ctx, &links, `SELECT l.id, l.a_id, l.b_id, l.order_key, l.forced, l.withdrawn, l.decision, l.reason
		FROM links l JOIN identifiers i ON i.id = l.a_id WHERE i.cluster_id = ?`, cluster); err != nil {
		return nil, fmt.Errorf("replay cluster %d: %w", cluster, err)
	}
	index := make(map[int64]int, len(idents))
	nodes := make([]mapping.Node, len(idents))
	for i, id := range idents {
		index[id.ID] = i
		nodes[i] = mapping.Node{Kind: id.Kind, Value: id.Value, DeleteKey: id.DeleteKey}
	}
	edges := make([]mapping.Edge, len(links))
	for i, l := range links {
		edges[i] = mapping.Edge{A: index[l.AID], B: index[l.BID], OrderKey: l.OrderKey, Forced: l.Forced, Withdrawn: l.Withdrawn}
	}
	out := mapping.Unify(nodes, edges, w.opts.Caps)

	// Link decisions.
	for i, l := range links {
		if l.Withdrawn || (out.Decisions[i] == l.Decision && out.Reasons[i] == l.Reason) {
			continue
		}
		if _, err := w.exec(ctx, `UPDATE links SET decision = ?, reason = ? WHERE id = ?`, out.Decisions[i], out.Reasons[i], l.ID); err != nil {
			return nil, fmt.Errorf("replay: update link %d: %w", l.ID, err)
		}
		if err := w.logLink(ctx, l.ID, out.Decisions[i], redecided(cause, out.Reasons[i]), actor); err != nil {
			return nil, err
		}
	}

	// Identifiers a deletion takes leave their profiles.
	var hold []identity
	var held []mapping.Identifier
	for i, id := range idents {
		if out.Deleted[i] && id.ProfileID != 0 {
			hold = append(hold, id.identity)
			held = append(held, mapping.Identifier{Kind: id.Kind, Value: id.Value})
		}
	}
	if err := w.holdBack(ctx, hold); err != nil {
		return nil, err
	}

	// Profile states per component.
	states := map[int]*mapping.ProfileState{}
	for i, n := range nodes {
		if out.Deleted[i] {
			continue
		}
		c := out.Component[i]
		st := states[c]
		if st == nil {
			st = &mapping.ProfileState{}
			states[c] = st
		}
		switch n.Kind {
		case mapping.KindUserID:
			st.UserID = n.Value
		case mapping.KindAnonymousID:
			st.AnonymousIDs++
		}
	}
	for i, l := range links {
		if !l.Withdrawn && out.Decisions[i] == mapping.DecisionApplied && !out.Deleted[index[l.AID]] {
			states[out.Component[index[l.AID]]].Links++
		}
	}

	// Keep profile IDs stable: each component keeps the smallest old profile ID
	// among its members that no earlier component took; the rest get new rows.
	members := map[int][]int{}
	var comps []int
	for i := range nodes {
		if out.Deleted[i] {
			continue
		}
		c := out.Component[i]
		if members[c] == nil {
			comps = append(comps, c)
		}
		members[c] = append(members[c], i)
	}
	sort.Ints(comps)
	taken := map[int64]bool{}
	old := map[int64]bool{}
	var back []identity // held back before, live again
	for _, id := range idents {
		if id.ProfileID != 0 {
			old[id.ProfileID] = true
		}
	}
	for _, c := range comps {
		var candidates []int64
		for _, i := range members[c] {
			if p := idents[i].ProfileID; p != 0 {
				candidates = append(candidates, p)
			}
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
				return nil, fmt.Errorf("replay: %w", err)
			}
		} else if err := w.saveProfile(ctx, profileID, st); err != nil {
			return nil, err
		}
		taken[profileID] = true
		for _, i := range members[c] {
			if idents[i].ProfileID == profileID {
				continue
			}
			// A held-back identifier that an earlier message shows the
			// deletion never took comes back (its payloads stay blank).
			if _, err := w.exec(ctx, `UPDATE identifiers SET profile_id = ?, deleted_at = 0 WHERE id = ?`, profileID, idents[i].ID); err != nil {
				return nil, fmt.Errorf("replay: move identifier: %w", err)
			}
			if idents[i].ProfileID == 0 {
				back = append(back, idents[i].identity)
			}
		}
	}
	if err := w.release(ctx, back); err != nil {
		return nil, err
	}
	for p := range old {
		if !taken[p] {
			if _, err := w.exec(ctx, `DELETE FROM profiles WHERE id = ?`, p); err != nil {
				return nil, fmt.Errorf("replay: drop profile: %w", err)
			}
		}
	}
	return held, nil
}

func redecided(cause, reason string) string {
	if reason == "" {
		return "re-decided after " + cause
	}
	return "re-decided after " + cause + ": " + reason
}

func (w *writer) logLink(ctx context.Context, linkID int64, d mapping.Decision, reason, actor string) error {
	if _, err := w.exec(ctx, `INSERT INTO link_log (link_id, at, decision, reason, actor) VALUES (?, ?, ?, ?, ?)`,
		linkID, w.now, d, reason, actor); err != nil {
		return fmt.Errorf("log link %d: %w", linkID, err)
	}
	return nil
}

// execIn runs a statement whose IN (?) lists are expanded from slices. Such
// statements vary with the list lengths, so they are not kept prepared.
func (w *writer) execIn(ctx context.Context, query string, args ...any) error {
	q, a, err := sqlx.In(query, args...)
	if err != nil {
		return err
	}
	w.behind.changes(query)
	if err := w.flush(ctx); err != nil {
		return err
	}
	_, err = w.conn.ExecContext(ctx, w.store.write.Rebind(q), a...)
	return err
}
