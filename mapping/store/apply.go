package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/bridgeworks/bridge/mapping"
)

// identity is an identifier row as the writer needs it.
type identity struct {
	ID        int64        `db:"id"`
	Kind      mapping.Kind `db:"kind"`
	Value     string       `db:"value"`
	ProfileID int64        `db:"profile_id"`
	ClusterID int64        `db:"cluster_id"`
}

// candidate is an identifier a message names, with its field for notes.
type candidate struct {
	field string
	kind  mapping.Kind
	value string
}

// apply stores one message and applies it. It must run inside the group's
// transaction (see Store.commit).
func (w *writer) apply(ctx context.Context, m mapping.Message) (mapping.Receipt, error) {
	// Identifiers are read even from a rejected message, so that a privacy
	// deletion finds the message by them.
	ids, notes := w.identifiers(m)
	notes = append(slices.Clip(m.Notes), notes...)
	ids, err := w.previousIDKind(ctx, ids)
	if err != nil {
		return mapping.Receipt{}, err
	}
	if m.Rejected == "" && m.Type != "delete" && m.Type != "logout" && len(ids) == 0 {
		m.Rejected = "no_usable_identity"
	}

	// Erased identifiers never come back, by any path: the message keeps
	// its other identifiers (they are other people), but none of its
	// payload, and sends nothing.
	live, dead, err := w.withoutTombstoned(ctx, ids)
	if err != nil {
		return mapping.Receipt{}, err
	}
	for _, c := range dead {
		notes = append(notes, fmt.Sprintf("%s: %s", c.field, mapping.NoteDeletedID))
	}
	// A message naming someone a deletion took keeps no payload and sends
	// nothing; its traits stay only if they are about another person (its
	// most specific identifier is not the deleted one). The same holds when
	// the deletion comes later (holdBack), so arrival order does not matter.
	aboutDeleted := len(dead) > 0 && m.Type != "delete"
	firstDeleted := aboutDeleted && len(ids) > 0 && dead[0] == ids[0]
	if aboutDeleted {
		m.Raw = json.RawMessage(`{}`)
		if len(live) == 0 && m.Rejected == "" {
			m.Rejected = "deleted_identity"
		}
	}

	columns := live
	if m.Type == "delete" {
		// A privacy request keeps no trace of whom it was about.
		m.Raw, columns = json.RawMessage(`{"type":"delete"}`), nil
	}
	messageRow, err := w.insertMessage(ctx, m, columns, notes)
	if err != nil {
		return mapping.Receipt{}, err
	}
	if messageRow == 0 {
		return mapping.Receipt{Duplicate: true}, nil
	}
	if m.Rejected != "" {
		if err := w.warnRefused(ctx, m); err != nil {
			return mapping.Receipt{}, err
		}
		if err := w.blankIfNamesHeldBack(ctx, messageRow, live); err != nil {
			return mapping.Receipt{}, err
		}
		// A refused message is found (and deleted) by the values it names (refusedMessagesNaming).
		return mapping.Receipt{Notes: append(notes, "rejected: "+m.Rejected)}, nil
	}
	if m.Type == "delete" {
		if _, err := w.applyDelete(ctx, live, m); err != nil {
			return mapping.Receipt{}, err
		}
		return mapping.Receipt{Notes: notes}, nil
	}
	if len(live) == 0 {
		return mapping.Receipt{Notes: notes}, nil // a logout without a usable anonymous ID: stored, nothing to apply
	}

	rows, fresh, err := w.lookup(ctx, live)
	if err != nil {
		return mapping.Receipt{}, err
	}
	switch {
	case m.Impersonating:
		notes = append(notes, mapping.NoteImpersonating)
		for i := range rows {
			if rows[i].ID == 0 {
				if rows[i], err = w.createIdentifier(ctx, live[i], m); err != nil {
					return mapping.Receipt{}, err
				}
			}
		}
	case fresh == len(rows):
		// All new: decide the message's links among themselves, with no other state to consult.
		nodes := make([]mapping.Node, len(live))
		edges := make([]mapping.Edge, len(live)-1)
		for i, c := range live {
			nodes[i] = mapping.Node{Kind: c.kind, Value: c.value}
			if i > 0 {
				edges[i-1] = mapping.Edge{A: 0, B: i, OrderKey: mapping.OrderKey(m.Timestamp, m.Source, m.ID, i)}
			}
		}
		out := mapping.Unify(nodes, edges, w.opts.Caps)
		if rows, err = w.createCluster(ctx, live, edges, out, m); err != nil {
			return mapping.Receipt{}, err
		}
		for i, d := range out.Decisions {
			if d != mapping.DecisionApplied {
				notes = append(notes, refusedNote(live[0].value, live[i+1].value, d, out.Reasons[i]))
			}
		}
	default:
		for i := range rows {
			if rows[i].ID == 0 {
				if rows[i], err = w.createIdentifier(ctx, live[i], m); err != nil {
					return mapping.Receipt{}, err
				}
			}
		}
		// Every identifier links to the first (the most specific the message names).
		for i := 1; i < len(rows); i++ {
			// An earlier link of this message may have moved either identifier.
			if i > 1 {
				if rows[0], err = w.reload(ctx, rows[0].ID); err != nil {
					return mapping.Receipt{}, err
				}
				if rows[i], err = w.reload(ctx, rows[i].ID); err != nil {
					return mapping.Receipt{}, err
				}
			}
			note, err := w.link(ctx, rows[0], rows[i], mapping.OrderKey(m.Timestamp, m.Source, m.ID, i), m)
			if err != nil {
				return mapping.Receipt{}, err
			}
			if note != "" {
				notes = append(notes, note)
			}
		}
	}
	if err := w.refer(ctx, messageRow, rows); err != nil {
		return mapping.Receipt{}, err
	}
	heldRows, err := w.heldAmong(ctx, rows)
	if err != nil {
		return mapping.Receipt{}, err
	}
	// The Jimo token of a user ID a deletion took is taken too (Unify), also
	// when it is linked after the deletion, which decides nothing on the spot.
	for _, t := range rows {
		if t.Kind != mapping.KindJimoToken || t.ID == 0 || heldRows[t.ID] {
			continue
		}
		for _, u := range rows {
			if u.Kind == mapping.KindUserID && u.Value == t.Value && heldRows[u.ID] {
				now, err := w.reload(ctx, t.ID)
				if err != nil {
					return mapping.Receipt{}, err
				}
				if err := w.replay(ctx, now.ClusterID, "rules", "a deletion (privacy request)"); err != nil {
					return mapping.Receipt{}, err
				}
				heldRows[t.ID] = true
				break
			}
		}
	}
	if len(heldRows) > 0 {
		if err := w.later(ctx, "blank message", `UPDATE messages SET raw = '{}' WHERE id = ?`, messageRow); err != nil {
			return mapping.Receipt{}, err
		}
		notes = append(notes, mapping.NoteHeldBack)
	}
	// Traits go to the message's most specific identifier unless it was
	// erased; held back, it keeps them hidden, as if the deletion came later.
	if len(rows) > 0 && !m.Impersonating && !firstDeleted {
		if err := w.mergeTraits(ctx, rows[0].ID, m, fresh == len(rows)); err != nil {
			return mapping.Receipt{}, err
		}
	}
	if m.UserIDWarning != "" {
		for _, r := range rows {
			if r.Kind == mapping.KindUserID && !heldRows[r.ID] {
				if err := w.later(ctx, "record warning", `UPDATE identifiers SET warning = ? WHERE id = ?`, m.UserIDWarning, r.ID); err != nil {
					return mapping.Receipt{}, err
				}
			}
		}
	}
	if aboutDeleted {
		return mapping.Receipt{Notes: notes}, nil
	}
	for _, j := range m.Jobs {
		if err := w.enqueue(ctx, j, m, len(heldRows) > 0); err != nil {
			return mapping.Receipt{}, err
		}
	}
	return mapping.Receipt{Notes: notes}, nil
}

// warnRefused keeps the warning of a message refused for its user ID (a
// guessable Jimo token): the user ID is recorded, linked to nothing, so
// operators see it listed with the reason.
func (w *writer) warnRefused(ctx context.Context, m mapping.Message) error {
	if m.UserIDWarning == "" || m.UserID == "" || m.JimoToken != "" {
		return nil // no warning, or it is about a separate token, not the user ID
	}
	v, reason := w.opts.Blocklist.Check(m.UserID)
	if reason != "" {
		return nil
	}
	c := []candidate{{"userId", mapping.KindUserID, v}}
	if c, _, err := w.withoutTombstoned(ctx, c); err != nil || len(c) == 0 {
		return err // erased by a privacy deletion: it is not recorded again
	}
	rows, missing, err := w.lookup(ctx, c)
	if err != nil {
		return err
	}
	row := rows[0]
	if missing == 0 && row.ProfileID == 0 {
		return nil // held back by a deletion
	}
	if missing == 1 {
		if row, err = w.createIdentifier(ctx, c[0], m); err != nil {
			return err
		}
	}
	return w.later(ctx, "record warning", `UPDATE identifiers SET warning = ? WHERE id = ?`, m.UserIDWarning, row.ID)
}

func refusedNote(a, b string, d mapping.Decision, reason string) string {
	return fmt.Sprintf("link %s–%s not applied (%s): %s", a, b, d, reason)
}

// previousIDKind reads an alias call's previousId, which Segment documents as
// the user's previous ID: an earlier user ID when a user ID of that value is
// stored (the alias then joins two user IDs, which rule 3 leaves to an
// operator as a conflict), otherwise the anonymous ID it usually is. It
// returns ids with the previousId candidate's kind so decided (and dropped
// if another candidate is then the same identifier).
//
// The reading depends on what is stored when the alias arrives: an alias
// from a user ID that arrives before any message naming that user ID links
// it as an anonymous ID (the README says so).
func (w *writer) previousIDKind(ctx context.Context, ids []candidate) ([]candidate, error) {
	for i, c := range ids {
		if c.field != "previousId" {
			continue
		}
		// Known: stored, held back by a deletion, or erased (a tombstone).
		var known bool
		if err := w.get(ctx, &known, `SELECT EXISTS (SELECT 1 FROM identifiers WHERE kind = ? AND value = ?)
			OR EXISTS (SELECT 1 FROM tombstones WHERE kind = ? AND value_hash = ?)`, mapping.KindUserID, c.value, mapping.KindUserID, valueHash(c.value)); err != nil {
			return nil, fmt.Errorf("read previousId: %w", err)
		}
		if !known {
			continue
		}
		for _, o := range ids[:i] {
			if o.kind == mapping.KindUserID && o.value == c.value {
				return append(ids[:i:i], ids[i+1:]...), nil // alias of a user ID to itself
			}
		}
		ids[i].kind = mapping.KindUserID
	}
	return ids, nil
}

// identifiers normalises the identifiers a message names, most specific
// first, dropping (with a note) the values the rules refuse.
func (w *writer) identifiers(m mapping.Message) ([]candidate, []string) {
	fields := []candidate{
		{"userId", mapping.KindUserID, m.UserID},
		{"jimoToken", mapping.KindJimoToken, m.JimoToken},
		{"anonymousId", mapping.KindAnonymousID, m.AnonymousID},
		{"previousId", mapping.KindAnonymousID, m.PreviousID},
	}
	if t := m.JimoTokenOrUserID; t != "" && m.UserID == "" && m.JimoToken == "" {
		// The token Jimo reports, which is the user ID unless the page made it
		// a legacy token of another user: it is recorded as the Jimo token
		// (first, so the message's traits land wherever the token belongs)
		// linked to the user ID of the same value. For a legacy token the
		// session report's earlier link to the real user wins that
		// contest (rule 3, decided by event time), whatever the arrival order.
		fields[0], fields[1] = candidate{"jimoToken", mapping.KindJimoToken, t}, candidate{"userId", mapping.KindUserID, t}
	}
	if w.opts.MergeOnEmail {
		fields = append(fields, candidate{"email", mapping.KindEmail, m.Email})
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

// insertMessage stores the message unless its (source, ID) is already
// stored. It returns the new row's ID, or 0 for a message stored before.
func (w *writer) insertMessage(ctx context.Context, m mapping.Message, ids []candidate, notes []string) (int64, error) {
	var userID, anonymousID sql.NullString
	var jimoToken sql.NullString
	for _, c := range ids {
		switch c.field {
		case "userId":
			userID = sql.NullString{String: c.value, Valid: true}
		case "anonymousId":
			anonymousID = sql.NullString{String: c.value, Valid: true}
		case "jimoToken":
			jimoToken = sql.NullString{String: c.value, Valid: true}
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
	// A message stored before is told without ON CONFLICT (see newMessage).
	if fresh, err := w.newMessage(ctx, m); err != nil || !fresh {
		return 0, err
	}
	id, err := w.insertRow(ctx, "insert message", "messages",
		`source, message_id, type, event, user_id, anonymous_id, jimo_token, event_at, received_at, rejected, notes, raw`,
		m.Source, m.ID, m.Type, m.Event, userID, anonymousID, jimoToken, m.Timestamp.UnixNano(), m.ReceivedAt.UnixNano(), m.Rejected, notesJSON, raw)
	if err != nil {
		return 0, fmt.Errorf("insert message: %w", err)
	}
	return id, nil
}

// How the messages naming some identifiers are found (migration 3): those
// applied through references to the identifiers' rows (IN takes their IDs),
// refused ones, which created no identifier, by the values they name (the
// three INs take the values).
const (
	messagesReferencing   = `id IN (SELECT message_id FROM message_refs WHERE identifier_id IN (?))`
	refusedMessagesNaming = `rejected <> '' AND (user_id IN (?) OR anonymous_id IN (?) OR jimo_token IN (?))`
)

// referQueries insert one to five message references in one statement.
var referQueries = func() []string {
	q := make([]string, 6)
	for n := 1; n <= 5; n++ {
		q[n] = `INSERT INTO message_refs (identifier_id, message_id) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?, ?), ", n), ", ") + ` ON CONFLICT DO NOTHING`
	}
	return q
}()

// refer records that the message in row messageRow names the identifiers
// of rows that exist (ID not 0): the profile's history and a deletion find
// it through them.
func (w *writer) refer(ctx context.Context, messageRow int64, rows []identity) error {
	args := make([]any, 0, 2*len(rows))
	for _, r := range rows {
		if r.ID != 0 {
			args = append(args, r.ID, messageRow)
		}
	}
	if len(args) == 0 {
		return nil
	}
	return w.later(ctx, "refer to message", referQueries[len(args)/2], args...)
}

// lookupQueries select one to four identifiers by (kind, value) in one statement.
var lookupQueries = func() []string {
	q := make([]string, 5)
	for n := 1; n <= 4; n++ {
		where := make([]string, n)
		for i := range where {
			where[i] = "(kind = ? AND value = ?)"
		}
		q[n] = `SELECT id, kind, value, profile_id, cluster_id FROM identifiers WHERE ` + strings.Join(where, " OR ")
	}
	return q
}()

// lookup finds the rows of cands, in their order; a missing one has ID 0.
// It also returns how many are missing.
func (w *writer) lookup(ctx context.Context, cands []candidate) ([]identity, int, error) {
	rows := make([]identity, len(cands))
	if len(cands) == 0 {
		return rows, 0, nil
	}
	args := make([]any, 0, 2*len(cands))
	for _, c := range cands {
		args = append(args, c.kind, c.value)
	}
	var found []identity
	// Every message reads its identifiers: past what is written behind (see lookupBehind).
	if err := w.lookupBehind(ctx, lookupQueries[len(cands)], args, cands, func(f identity) { found = append(found, f) }); err != nil {
		return nil, 0, fmt.Errorf("find identifiers: %w", err)
	}
	missing := len(cands)
	for i, c := range cands {
		for _, f := range found {
			if f.Kind == c.kind && f.Value == c.value {
				rows[i] = f
				missing--
			}
		}
	}
	return rows, missing, nil
}

// createIdentifier inserts c alone in a new profile and cluster.
func (w *writer) createIdentifier(ctx context.Context, c candidate, m mapping.Message) (identity, error) {
	rows, err := w.insertProfile(ctx, []candidate{c}, 0, m)
	if err != nil {
		return identity{}, err
	}
	return rows[0], nil
}

// insertProfile creates a profile holding cands (in cluster, or a new one
// named after the profile when cluster is 0) and returns their rows.
func (w *writer) insertProfile(ctx context.Context, cands []candidate, cluster int64, m mapping.Message) ([]identity, error) {
	var st mapping.ProfileState
	for _, c := range cands {
		switch c.kind {
		case mapping.KindUserID:
			st.UserID = c.value
		case mapping.KindAnonymousID:
			st.AnonymousIDs++
		}
	}
	st.Links = len(cands) - 1
	profileID, err := w.insertProfileRow(ctx, st)
	if err != nil {
		return nil, err
	}
	if cluster == 0 {
		cluster = profileID
	}
	rows := make([]identity, len(cands))
	for i, c := range cands {
		rows[i] = identity{Kind: c.kind, Value: c.value, ProfileID: profileID, ClusterID: cluster}
		if rows[i].ID, err = w.insertRow(ctx, "create identifier", "identifiers", `kind, value, profile_id, cluster_id, first_seen_at, first_source, first_message_id`,
			c.kind, c.value, profileID, cluster, m.Timestamp.UnixNano(), m.Source, m.ID); err != nil {
			return nil, fmt.Errorf("create identifier: %w", err)
		}
		w.behind.create(rows[i]) // its lookup does not wait for its INSERT (lookupBehind)
	}
	return rows, nil
}

// createCluster inserts identifiers that are all new, with the links among
// them as Unify decided them (edges all start at node 0), and returns their rows.
func (w *writer) createCluster(ctx context.Context, cands []candidate, edges []mapping.Edge, out mapping.Outcome, m mapping.Message) ([]identity, error) {
	rows := make([]identity, len(cands))
	var cluster int64
	components := map[int][]int{}
	var order []int
	for i := range cands {
		c := out.Component[i]
		if components[c] == nil {
			order = append(order, c)
		}
		components[c] = append(components[c], i)
	}
	for _, c := range order {
		members := components[c]
		group := make([]candidate, len(members))
		for j, i := range members {
			group[j] = cands[i]
		}
		created, err := w.insertProfile(ctx, group, cluster, m)
		if err != nil {
			return nil, err
		}
		for j, i := range members {
			rows[i] = created[j]
		}
		cluster = created[0].ClusterID
	}
	lastKey := ""
	for i, e := range edges {
		if err := w.insertLink(ctx, rows[e.A].ID, rows[e.B].ID, e.OrderKey, out.Decisions[i], out.Reasons[i], m); err != nil {
			return nil, err
		}
		lastKey = max(lastKey, e.OrderKey)
	}
	if len(edges) > 0 {
		if err := w.later(ctx, "create cluster", `INSERT INTO clusters (id, last_key) VALUES (?, ?)`, cluster, lastKey); err != nil {
			return nil, err
		}
	}
	return rows, nil
}

func (w *writer) insertLink(ctx context.Context, a, b int64, key string, d mapping.Decision, reason string, m mapping.Message) error {
	if b < a {
		a, b = b, a
	}
	return w.later(ctx, "insert link", `INSERT INTO links (a_id, b_id, order_key, source, message_id, event_at, decision, reason, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, a, b, key, m.Source, m.ID, m.Timestamp.UnixNano(), d, reason, w.now)
}

func (w *writer) insertProfileRow(ctx context.Context, st mapping.ProfileState) (int64, error) {
	id, err := w.insertRow(ctx, "create profile", "profiles", `user_id, anonymous_ids, links, updated_at`,
		nullString(st.UserID), st.AnonymousIDs, st.Links, w.now)
	if err != nil {
		return 0, fmt.Errorf("create profile: %w", err)
	}
	return id, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// flag is a boolean as the schema stores it: an integer, 1 or 0 (SQLite
// has no boolean type, and PostgreSQL does not take a Go bool for an integer).
func flag(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (w *writer) reload(ctx context.Context, id int64) (identity, error) {
	var row identity
	if err := w.get(ctx, &row, `SELECT id, kind, value, profile_id, cluster_id FROM identifiers WHERE id = ?`, id); err != nil {
		return row, fmt.Errorf("reload identifier %d: %w", id, err)
	}
	return row, nil
}

// enqueue writes an outbox job. It runs only for a message stored for the
// first time, so a job is never written twice.
// A held job waits for a deletion to be final or undone (see holdBack).
func (w *writer) enqueue(ctx context.Context, j mapping.Job, m mapping.Message, held bool) error {
	return w.later(ctx, "enqueue "+j.Destination+" job", `INSERT INTO jobs
		(destination, ordering_key, message_id, payload, state, attempts, run_at, source_message, created_at, updated_at, held)
		VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?)`,
		j.Destination, j.OrderingKey, j.MessageID, string(j.Payload), w.now, string(m.Source)+":"+m.ID, w.now, w.now, flag(held))
}

// heldAmong returns the row IDs among rows that a deletion holds back (after
// the message's links were decided). It reads nothing when no identifier was
// ever named by a deletion.
func (w *writer) heldAmong(ctx context.Context, rows []identity) (map[int64]bool, error) {
	if any, err := w.deletions(ctx); err != nil || !any {
		return nil, err
	}
	var held map[int64]bool
	for _, r := range rows {
		if r.ID == 0 {
			continue
		}
		h, err := w.heldBack(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		if h {
			if held == nil {
				held = map[int64]bool{}
			}
			held[r.ID] = true
		}
	}
	return held, nil
}

// blankIfNamesHeldBack blanks the payload of the refused message in row
// messageRow when one of the identifiers it names is held back by a
// deletion (as holdBack does when the deletion comes later).
func (w *writer) blankIfNamesHeldBack(ctx context.Context, messageRow int64, cands []candidate) error {
	if any, err := w.deletions(ctx); err != nil || !any || len(cands) == 0 {
		return err
	}
	rows, _, err := w.lookup(ctx, cands)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if r.ID != 0 && r.ProfileID == 0 {
			return w.later(ctx, "blank message", `UPDATE messages SET raw = '{}' WHERE id = ?`, messageRow)
		}
	}
	return nil
}
