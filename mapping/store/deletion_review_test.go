package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping/outbox"

	"github.com/bridgeworks/bridge/mapping"
)

func del(id string, kind mapping.Kind, v string, at time.Duration) mapping.Message {
	m := mapping.Message{Source: mapping.SourceSegmentWebhook, ID: id, Type: "delete", Timestamp: t0.Add(at), ReceivedAt: t0.Add(at)}
	if kind == mapping.KindUserID {
		m.UserID = v
	} else {
		m.AnonymousID = v
	}
	return m
}

// TestMessageNamingDeletedIdentifier: a message naming an identifier a
// deletion took keeps its traits on its own (other) person, and sends
// nothing (its delivery is held, neither claimable nor listed), whatever the
// arrival order.
func TestMessageNamingDeletedIdentifier(t *testing.T) {
	ctx := context.Background()
	named := identify("m1", "user-a", "anon-2", 4*time.Minute)
	named.Traits = map[string]any{"plan": "x"}
	named.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: "user-a", MessageID: "j1", Payload: []byte(`{"traits":{"plan":"x"}}`)}}
	d := del("d1", mapping.KindAnonymousID, "anon-2", time.Minute)
	for _, order := range [][]mapping.Message{{d, named}, {named, d}} {
		s := openTestStore(t, Options{DeletionGrace: time.Hour})
		for _, m := range order {
			submit(t, s, m)
		}
		p, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-a"})
		if err != nil || p.Traits["plan"] != "x" {
			t.Errorf("arrival %s,%s: user-a traits %v (%v), want plan x", order[0].ID, order[1].ID, p.Traits, err)
		}
		listed, err := s.Jobs(ctx, "", 10)
		if err != nil || len(listed) != 0 {
			t.Errorf("arrival %s,%s: jobs listed %v (%v), want none", order[0].ID, order[1].ID, listed, err)
		}
		claimed, err := s.Claim(ctx, []string{"jimo"}, 10, nil, time.Minute)
		if err != nil || len(claimed) != 0 {
			t.Errorf("arrival %s,%s: claimed %v (%v), want nothing to send", order[0].ID, order[1].ID, claimed, err)
		}
	}
}

// An alias whose previousId is a deleted user ID (held back or erased) is
// read as that user ID, and creates nothing of it.
func TestAliasFromDeletedUserIDCreatesNothing(t *testing.T) {
	ctx := context.Background()
	for _, grace := range []time.Duration{0, time.Hour} {
		s := openTestStore(t, Options{DeletionGrace: grace})
		submit(t, s, identify("m1", "old-user-7f3a9c2b51d4aa", "anon-1", 0))
		submit(t, s, del("d1", mapping.KindUserID, "old-user-7f3a9c2b51d4aa", time.Minute))
		alias := mapping.Message{Source: mapping.SourceSegmentAPI, ID: "a1", Type: "alias", UserID: "new-user-99", PreviousID: "old-user-7f3a9c2b51d4aa",
			Timestamp: t0.Add(2 * time.Minute), ReceivedAt: t0.Add(2 * time.Minute), Raw: []byte(`{"previousId":"old-user-7f3a9c2b51d4aa"}`),
			Jobs: []mapping.Job{{Destination: "segment", OrderingKey: "new-user-99", MessageID: "j1", Payload: []byte(`{}`)}}}
		submit(t, s, alias)
		res, _ := s.Search(ctx, SearchQuery{Value: "old-user-7f3a9c2b51d4aa"})
		var raw string
		s.read.Get(&raw, `SELECT raw FROM messages WHERE message_id = 'a1'`)
		var jobs int
		s.read.Get(&jobs, `SELECT COUNT(*) FROM jobs`)
		if len(res.Hits) != 0 {
			t.Errorf("grace %v: deleted user ID found again: %+v (message raw %s, jobs %d)", grace, res.Hits, raw, jobs)
		}
	}
}

// A Jimo webhook (shared mode) naming a deleted user ID does not bring it
// back as a jimo_token: the token of a deleted user ID is deleted with it.
func TestJimoTokenOfDeletedUserIsDeletedToo(t *testing.T) {
	ctx := context.Background()
	for _, grace := range []time.Duration{0, time.Hour} {
		s := openTestStore(t, Options{DeletionGrace: grace})
		submit(t, s, identify("m1", "user-7f3a9c2b51d4aa", "anon-1", 0))
		submit(t, s, del("d1", mapping.KindUserID, "user-7f3a9c2b51d4aa", time.Minute))
		wh := mapping.Message{Source: mapping.SourceJimoWebhook, ID: "w1", Type: "tour.completed", Event: "tour.completed", JimoTokenOrUserID: "user-7f3a9c2b51d4aa",
			Timestamp: t0.Add(2 * time.Minute), ReceivedAt: t0.Add(2 * time.Minute), Raw: []byte(`{}`)}
		submit(t, s, wh)
		res, _ := s.Search(ctx, SearchQuery{Value: "user-7f3a9c2b51d4aa"})
		if len(res.Hits) != 0 {
			t.Errorf("grace %v: deleted user ID found again: %+v", grace, res.Hits)
		}
	}
}

// A refused message naming a held-back identifier keeps no payload.
func TestRefusedMessageNamingHeldBackKeepsNoPayload(t *testing.T) {
	s := openTestStore(t, Options{DeletionGrace: time.Hour})
	submit(t, s, identify("m1", "12345", "anon-1", 0))
	submit(t, s, del("d1", mapping.KindAnonymousID, "anon-1", time.Minute))
	r := mapping.Message{Source: mapping.SourceJimoSession, ID: "s1", Type: "session", UserID: "12345", UserIDWarning: "guessable", Rejected: "guessable_token",
		Timestamp: t0.Add(2 * time.Minute), ReceivedAt: t0.Add(2 * time.Minute), Raw: []byte(`{"email":"pat@example.com","name":"Pat"}`)}
	submit(t, s, r)
	var raw string
	s.read.Get(&raw, `SELECT raw FROM messages WHERE message_id = 's1'`)
	if raw != "{}" {
		t.Errorf("refused message naming held-back user 12345 kept payload %s", raw)
	}
}

// leftovers counts rows of any table (tombstones aside) whose text mentions v.
func leftovers(t *testing.T, s *Store, v string) map[string]int {
	out := map[string]int{}
	for _, q := range map[string]string{
		"messages":    `SELECT COUNT(*) FROM messages WHERE raw LIKE '%'||?1||'%' OR user_id = ?1 OR anonymous_id = ?1 OR jimo_token = ?1 OR notes LIKE '%'||?1||'%'`,
		"identifiers": `SELECT COUNT(*) FROM identifiers WHERE value = ?1`,
		"jobs":        `SELECT COUNT(*) FROM jobs WHERE payload LIKE '%'||?1||'%' OR ordering_key = ?1 OR last_error LIKE '%'||?1||'%'`,
		"link_log":    `SELECT COUNT(*) FROM link_log WHERE reason LIKE '%'||?1||'%'`,
		"links":       `SELECT COUNT(*) FROM links WHERE reason LIKE '%'||?1||'%'`,
		"profiles":    `SELECT COUNT(*) FROM profiles WHERE user_id = ?1`,
		"traits":      `SELECT COUNT(*) FROM traits WHERE doc LIKE '%'||?1||'%'`,
	} {
		_ = q
	}
	for table, q := range map[string]string{
		"messages":    `SELECT COUNT(*) FROM messages WHERE raw LIKE '%'||?||'%' OR notes LIKE '%'||?||'%' OR COALESCE(user_id,'')||COALESCE(anonymous_id,'')||COALESCE(jimo_token,'') LIKE '%'||?||'%'`,
		"identifiers": `SELECT COUNT(*) FROM identifiers WHERE value LIKE '%'||?||'%' OR warning LIKE '%'||?||'%' OR first_message_id LIKE '%'||?||'%'`,
		"jobs":        `SELECT COUNT(*) FROM jobs WHERE payload LIKE '%'||?||'%' OR ordering_key LIKE '%'||?||'%' OR last_error LIKE '%'||?||'%'`,
		"link_log":    `SELECT COUNT(*) FROM link_log WHERE reason LIKE '%'||?||'%' OR reason LIKE '%'||?||'%' OR actor LIKE '%'||?||'%'`,
		"links":       `SELECT COUNT(*) FROM links WHERE reason LIKE '%'||?||'%' OR message_id LIKE '%'||?||'%' OR reason LIKE '%'||?||'%'`,
		"profiles":    `SELECT COUNT(*) FROM profiles WHERE COALESCE(user_id,'') LIKE '%'||?||'%' OR '' = ? OR '' = ?`,
		"traits":      `SELECT COUNT(*) FROM traits WHERE doc LIKE '%'||?||'%' OR COALESCE(email,'') LIKE '%'||?||'%' OR '' = ?`,
	} {
		var n int
		if err := s.read.Get(&n, q, v, v, v); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if n > 0 {
			out[table] = n
		}
	}
	return out
}

// After erasure nothing but tombstones may mention the deleted identifiers.
func TestErasureLeavesOnlyTombstones(t *testing.T) {
	ctx := context.Background()
	cases := map[string][]mapping.Message{
		// anon-2 alone deleted at 1; a later identify names it with user-a and is forwarded before the delete arrives.
		"late delete": func() []mapping.Message {
			m := identify("m1", "user-a", "anon-2", 4*time.Minute)
			m.Traits = map[string]any{"plan": "team"}
			m.Jobs = []mapping.Job{{Destination: "segment", OrderingKey: "user-a", MessageID: "j1", Payload: []byte(`{"userId":"user-a","anonymousId":"anon-2"}`)}}
			return []mapping.Message{m, del("d1", mapping.KindAnonymousID, "anon-2", time.Minute)}
		}(),
		// conflict: user-b's link to anon-2 refused; anon-2's profile (user-a) deleted.
		"conflict": {identify("m1", "user-a", "anon-2", 0), identify("m2", "user-b", "anon-2", time.Minute), del("d1", mapping.KindUserID, "user-a", 2*time.Minute)},
	}
	for name, msgs := range cases {
		clock := &testClock{now: t0}
		s := openTestStore(t, Options{DeletionGrace: time.Hour, Now: clock.Now})
		for _, m := range msgs {
			submit(t, s, m)
		}
		clock.Advance(2 * time.Hour)
		if _, err := s.EraseDeleted(ctx); err != nil {
			t.Fatal(err)
		}
		if left := leftovers(t, s, "anon-2"); len(left) > 0 {
			t.Errorf("%s: after erasure rows still mention anon-2: %v", name, left)
		}
	}
}

// A conflict hidden because a deletion holds one side back cannot be forced
// (which would bring the deleted identifier back).
func TestHiddenConflictCannotBeForced(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{DeletionGrace: time.Hour})
	submit(t, s, identify("m1", "user-a", "anon-2", 0), identify("m2", "user-b", "anon-2", time.Minute), del("d1", mapping.KindUserID, "user-a", 2*time.Minute))
	var id int64
	if err := s.read.Get(&id, `SELECT id FROM links WHERE decision = 'conflict'`); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Conflicts(ctx, 50, 0)
	t.Logf("conflicts listed: %d; hidden conflict link id %d", len(c), id)
	if err := s.ResolveConflict(ctx, id, ResolveLink, "op", ""); err != nil {
		t.Logf("resolve: %v", err)
		return
	}
	if p, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-2"}); err == nil {
		t.Errorf("deleted anon-2 is back after forcing a hidden link: %+v", p.Identifiers)
	}
}

// A live profile's history shows no notes naming held-back identifiers.
func TestHistoryNotesNameNoHeldBack(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{DeletionGrace: time.Hour})
	submit(t, s, identify("m1", "user-a", "anon-2", 0), identify("m2", "user-b", "anon-2", time.Minute), del("d1", mapping.KindUserID, "user-a", 2*time.Minute))
	p, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-b"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range h.Messages {
		t.Logf("message %s raw %s notes %v", m.MessageID, m.Raw, m.Notes)
		for _, n := range m.Notes {
			if strings.Contains(n, "user-a") || strings.Contains(n, "anon-2") {
				t.Errorf("history of user-b shows deleted identifiers in a note: %q", n)
			}
		}
	}
}

// An identifier held back and then given back by a late older message gets
// its held deliveries back, whatever the arrival order.
func TestIdentifierBackFromDeletionKeepsItsJobs(t *testing.T) {
	ctx := context.Background()
	early := identify("m0", "user-z", "anon-1", 0)
	x := identify("m1", "user-x", "anon-1", time.Minute)
	x.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: "user-x", MessageID: "jx", Payload: []byte(`{}`)}}
	d := del("d1", mapping.KindAnonymousID, "anon-1", 3*time.Minute)
	for _, order := range [][]mapping.Message{{early, x, d}, {x, d, early}} {
		s := openTestStore(t, Options{DeletionGrace: time.Hour})
		for _, m := range order {
			submit(t, s, m)
		}
		_, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-x"})
		var jobs int
		s.read.Get(&jobs, `SELECT COUNT(*) FROM jobs`)
		t.Logf("arrival %s,%s,%s: user-x profile err=%v, jobs for user-x: %d", order[0].ID, order[1].ID, order[2].ID, err, jobs)
		if err == nil && jobs == 0 {
			t.Errorf("arrival %s,%s,%s: user-x is live but its identify was never delivered", order[0].ID, order[1].ID, order[2].ID)
		}
	}
}

// The jobs listing does not show a held-back person's jobs, delivered ones included.
func TestJobsOfHeldBackAreNotListed(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{DeletionGrace: time.Hour})
	m := identify("m1", "user-1", "anon-1", 0)
	m.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: "user-1", MessageID: "j1", Payload: []byte(`{"traits":{"email":"pat@example.com"}}`)}}
	submit(t, s, m)
	if err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
		_, err := w.exec(ctx, `UPDATE jobs SET state = 'done'`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	submit(t, s, del("d1", mapping.KindUserID, "user-1", time.Minute))
	jobs, err := s.Jobs(ctx, "", 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		t.Errorf("jobs listing shows deleted person's job: key %s payload %s state %s", j.OrderingKey, j.Payload, j.State)
	}
}

// A worker's outcome is recorded only for its own claim: not for a job
// that reused the row ID of one removed while in flight.
func TestRecordOnlyItsOwnClaim(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{DeletionGrace: time.Hour})
	a := identify("m1", "user-a", "anon-a", 0)
	a.Jobs = []mapping.Job{{Destination: "fake", OrderingKey: "user-a", MessageID: "ja", Payload: []byte(`{}`)}}
	submit(t, s, a)
	claimed, err := s.Claim(ctx, []string{"fake"}, 10, nil, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	submit(t, s, del("d1", mapping.KindUserID, "user-a", time.Minute))
	b := identify("m2", "user-b", "anon-b", 2*time.Minute)
	b.Jobs = []mapping.Job{{Destination: "fake", OrderingKey: "user-b", MessageID: "jb", Payload: []byte(`{}`)}}
	submit(t, s, b)
	if err := s.Record(ctx, []outbox.Delivery{{ID: claimed[0].ID, Destination: "fake", MessageID: "ja", Attempts: 1, Outcome: outbox.Outcome{Result: outbox.ResultDone}}}); err != nil {
		t.Fatal(err)
	}
	var state, msg string
	s.read.QueryRow(`SELECT state, message_id FROM jobs WHERE ordering_key = 'user-b'`).Scan(&state, &msg)
	if state != "pending" {
		t.Errorf("user-b's job %s (id %d reused) is %s without ever being sent", msg, claimed[0].ID, state)
	}
}

// Erasure takes a cluster's held-back identifiers together: a message naming
// a member arriving between two erasures cannot bring it back.
func TestErasureKeepsClustersWhole(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{DeletionGrace: time.Hour, Now: clock.Now})
	submit(t, s, identify("m1", "user-a", "anon-a", 0))
	submit(t, s, del("d1", mapping.KindUserID, "user-a", time.Minute))
	// First batch erases one identifier (the named user ID: lower row ID).
	if err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
		_, err := w.eraseHeldBack(ctx, w.now, 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Between batches, the same browser comes back.
	submit(t, s, identify("m2", "user-z", "anon-a", 30*time.Second))
	clock.Advance(2 * time.Hour)
	if _, err := s.EraseDeleted(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-a"}); err == nil {
		t.Errorf("anon-a, deleted with user-a, is back after a split erasure: %+v", p.Identifiers)
	}
}

// Members held back later than the named identifier (a late older message
// joined them) are erased with it, once all of them are past the grace.
func TestLaterHeldMemberStaysDeleted(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: t0.Add(time.Hour)}
	s := openTestStore(t, Options{DeletionGrace: time.Hour, Now: clock.Now})
	submit(t, s, identify("m1", "user-a", "anon-a", 0))
	submit(t, s, del("d1", mapping.KindUserID, "user-a", 2*time.Minute))
	clock.Advance(30 * time.Minute)
	m := identify("m2", "", "anon-a", time.Minute)
	m.AnonymousID = "anon-b"
	m.UserID = ""
	// anon-b with anon-a at 1 min: anon-b joins the profile the deletion takes.
	submit(t, s, mapping.Message{Source: mapping.SourceSegmentAPI, ID: "m2", Type: "alias", AnonymousID: "anon-b", PreviousID: "anon-a", Timestamp: t0.Add(time.Minute), ReceivedAt: t0.Add(time.Minute), Raw: []byte(`{}`)})
	clock.Advance(40 * time.Minute) // first hold is past the grace, the second is not
	if n, err := s.EraseDeleted(ctx); err != nil || n != 0 {
		t.Fatalf("erase with one hold still in its grace: got %d %v, want 0 (a cluster's held identifiers go together)", n, err)
	}
	clock.Advance(time.Hour)
	if n, err := s.EraseDeleted(ctx); err != nil || n != 3 {
		t.Fatalf("erase: got %d %v, want user-a, anon-a and anon-b", n, err)
	}
	submit(t, s, identify("m3", "user-z", "anon-b", 90*time.Second))
	if p, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-b"}); err == nil {
		t.Errorf("anon-b, taken by the deletion of user-a, is back: %+v", p.Identifiers)
	}
}
