package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

func TestResolveConflictAndUnmerge(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{})
	submit(t, s, identify("m1", "user-1", "anon-1", 0))
	submit(t, s, identify("m2", "user-2", "anon-1", time.Minute)) // conflict: anon-1 is user-1's
	conflicts, err := s.Conflicts(ctx, 10, 0)
	if err != nil || len(conflicts) != 1 {
		t.Fatalf("conflicts: got %v, %v; want one", conflicts, err)
	}
	c := conflicts[0]

	// Link anyway: anon-1 moves to user-2, and the older link becomes the conflict.
	if err := s.ResolveConflict(ctx, c.ID, ResolveLink, "ops@example", "support ticket 42"); err != nil {
		t.Fatal(err)
	}
	want := []string{"anonymous_id:anon-1 user_id:user-2", "user_id:user-1"}
	if got := takeSnapshot(t, s).Profiles; !slices.Equal(got, want) {
		t.Fatalf("after link anyway: got %v, want %v", got, want)
	}
	p, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-2"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	var forcedLogged bool
	for _, l := range h.Links {
		for _, e := range l.Log {
			forcedLogged = forcedLogged || (e.Decision == mapping.DecisionForced && e.Actor == "ops@example" && e.Reason == "support ticket 42")
		}
	}
	if !forcedLogged {
		t.Errorf("history does not log the operator's decision: %+v", h.Links)
	}
	if err := s.ResolveConflict(ctx, c.ID, ResolveDismiss, "ops", ""); mapping.ErrorCode(err) != mapping.CodeConflict {
		t.Errorf("resolving a link that is no longer a conflict: got %v, want conflict", err)
	}

	// Unmerge the forced link: anon-1 is alone again... and the older link to user-1 applies.
	if err := s.Unmerge(ctx, c.ID, "ops", "wrong person"); err != nil {
		t.Fatal(err)
	}
	want = []string{"anonymous_id:anon-1 user_id:user-1", "user_id:user-2"}
	if got := takeSnapshot(t, s).Profiles; !slices.Equal(got, want) {
		t.Fatalf("after unmerge: got %v, want %v", got, want)
	}
	if err := s.Unmerge(ctx, 9999, "ops", ""); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Errorf("unmerge unknown link: got %v, want not_found", err)
	}
}

func TestDismissConflict(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{})
	submit(t, s, identify("m1", "user-1", "anon-1", 0), identify("m2", "user-2", "anon-1", time.Minute))
	conflicts, _ := s.Conflicts(ctx, 10, 0)
	if len(conflicts) != 1 {
		t.Fatalf("got %d conflicts, want 1", len(conflicts))
	}
	if err := s.ResolveConflict(ctx, conflicts[0].ID, ResolveDismiss, "ops", "not the same person"); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.Conflicts(ctx, 10, 0); len(left) != 0 {
		t.Errorf("after dismiss: got %d conflicts, want 0", len(left))
	}
}

func TestSearch(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{})
	var msgs []mapping.Message
	for i, u := range []string{"alpha-1", "alpha-2", "alpha-3", "beta-1"} {
		m := identify("m"+u, u, "anon-"+u, time.Duration(i)*time.Minute)
		m.Email = u + "@example.com"
		msgs = append(msgs, m)
	}
	submit(t, s, msgs...)
	tests := []struct {
		name string
		q    SearchQuery
		want []string
	}{
		{"exact user", SearchQuery{Kind: mapping.KindUserID, Value: "alpha-2"}, []string{"user_id:alpha-2"}},
		{"bare value across kinds", SearchQuery{Value: "anon-beta-1"}, []string{"anonymous_id:anon-beta-1"}},
		{"prefix", SearchQuery{Kind: mapping.KindUserID, Value: "alpha", Prefix: true}, []string{"user_id:alpha-1", "user_id:alpha-2", "user_id:alpha-3"}},
		{"page 1", SearchQuery{Value: "alpha", Prefix: true, Limit: 2}, []string{"user_id:alpha-1", "user_id:alpha-2"}},
		{"page 2", SearchQuery{Value: "alpha", Prefix: true, Limit: 2, After: "user_id:alpha-2"}, []string{"user_id:alpha-3"}},
		{"email attribute", SearchQuery{Value: "beta-1@example.com"}, []string{"email:beta-1@example.com"}},
		{"no match", SearchQuery{Value: "gamma"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.Search(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, h := range res.Hits {
				got = append(got, h.Identifier.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	res, _ := s.Search(ctx, SearchQuery{Value: "alpha", Prefix: true, Limit: 2})
	if res.Next != "user_id:alpha-2" {
		t.Errorf("next cursor: got %q, want user_id:alpha-2", res.Next)
	}
}

func TestOverviewAndHistory(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{Now: func() time.Time { return t0.Add(time.Minute) }})
	m := identify("m1", "user-1", "anon-1", 0)
	m.ReceivedAt = t0
	m.Traits = map[string]any{"plan": "pro"}
	m.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: "user-1", MessageID: "j1", Payload: []byte(`{}`)}}
	submit(t, s, m)
	o, err := s.Overview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if o.Profiles != 1 || o.Identifiers != 2 || o.Messages != 1 || o.MessagesLastHour != 1 || len(o.Backlogs) != 1 || o.Backlogs[0].Pending != 1 {
		t.Errorf("overview: got %+v", o)
	}
	p, _ := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-1"})
	h, err := s.History(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Links) != 1 || len(h.Messages) != 1 || len(h.Jobs) != 1 || len(h.Traits) != 1 || h.Traits[0].Key != "plan" {
		t.Errorf("history: got %d links, %d messages, %d jobs, traits %+v", len(h.Links), len(h.Messages), len(h.Jobs), h.Traits)
	}
	if _, err := s.History(ctx, 424242); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Errorf("history of unknown profile: got %v, want not_found", err)
	}
}

// TestHistoryFindsMessagesByEveryIdentifier checks the message references:
// a profile's history lists every message naming any of its identifiers,
// including a refused one, and a message whose link was refused appears in
// the history of both profiles it names.
func TestHistoryFindsMessagesByEveryIdentifier(t *testing.T) {
	s := openTestStore(t, Options{})
	refused := identify("m3", "user-1", "", 2*time.Minute)
	refused.Rejected = "invalid_traits"
	submit(t, s,
		identify("m1", "user-1", "anon-1", 0),
		identify("m2", "", "anon-1", time.Minute),
		refused,
		identify("m4", "user-2", "", 3*time.Minute),
		identify("m5", "user-2", "anon-1", 4*time.Minute), // joins two user IDs: a conflict
	)
	messagesOf := func(id mapping.Identifier) []string {
		t.Helper()
		var ids []string
		for _, m := range historyOf(t, s, id).Messages {
			ids = append(ids, m.MessageID)
		}
		slices.Sort(ids)
		return ids
	}
	if got, want := messagesOf(mapping.Identifier{Kind: mapping.KindUserID, Value: "user-1"}), []string{"m1", "m2", "m3", "m5"}; !slices.Equal(got, want) {
		t.Errorf("history of user-1's profile: got %v, want %v", got, want)
	}
	if got, want := messagesOf(mapping.Identifier{Kind: mapping.KindUserID, Value: "user-2"}), []string{"m4", "m5"}; !slices.Equal(got, want) {
		t.Errorf("history of user-2's profile: got %v, want %v", got, want)
	}
}

// TestMigrationReferencesStoredMessages checks migration 3 on a database
// written before it: the messages stored then are found by their identifiers.
func TestMigrationReferencesStoredMessages(t *testing.T) {
	ctx := context.Background()
	path := testDSN(t)
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	submit(t, s, identify("m1", "user-1", "anon-1", 0), identify("m2", "", "anon-1", time.Minute))
	// Back to the schema before migration 3, with the data as it was written then.
	for _, q := range []string{
		`DELETE FROM schema_migrations WHERE version = 3`,
		`DROP TABLE message_refs`,
		`DROP INDEX messages_refused_user_id`,
		`DROP INDEX messages_refused_anonymous_id`,
		`DROP INDEX messages_refused_jimo_token`,
		`CREATE INDEX messages_user_id ON messages (user_id)`,
		`CREATE INDEX messages_anonymous_id ON messages (anonymous_id)`,
		`CREATE INDEX messages_jimo_token ON messages (jimo_token) WHERE jimo_token IS NOT NULL`,
	} {
		if _, err := s.write.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.Close()
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := historyOf(t, s, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-1"})
	if len(h.Messages) != 2 {
		t.Errorf("after the migration the profile's history holds %d messages, want 2", len(h.Messages))
	}
}

// TestRefusedMessageIsFoundByIdentifiersCreatedLater checks that a refused
// message naming a user who appears only later is in that user's history
// and goes with the user's deletion.
func TestRefusedMessageIsFoundByIdentifiersCreatedLater(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{})
	refused := mapping.Message{Source: mapping.SourceSegmentAPI, ID: "r1", Type: "track", UserID: "user-9", Rejected: "missing_event",
		Timestamp: t0, ReceivedAt: t0, Raw: []byte(`{"type":"track","userId":"user-9"}`)}
	submit(t, s, refused, identify("m1", "user-9", "anon-9", time.Minute))
	h := historyOf(t, s, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-9"})
	if len(h.Messages) != 2 {
		t.Errorf("history holds %d messages, want the refused one and the identify", len(h.Messages))
	}
	if _, err := s.DeleteProfile(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-9"}, "test", "privacy request"); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := s.read.Get(&left, `SELECT COUNT(*) FROM messages WHERE raw LIKE '%user-9%'`); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d messages naming the deleted user are left", left)
	}
}

// TestDeletionTakesEveryReferenceOfItsMessages checks that a deleted
// message leaves no reference behind for a later message to inherit when
// SQLite hands its row ID out again.
func TestDeletionTakesEveryReferenceOfItsMessages(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{})
	submit(t, s, identify("m1", "user-1", "anon-1", 0),
		identify("m2", "user-2", "anon-2", time.Minute),
		identify("m3", "user-1", "anon-2", 2*time.Minute)) // anon-2 is user-2's: a conflict, referenced by both
	if _, err := s.DeleteProfile(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-1"}, "test", "privacy request"); err != nil {
		t.Fatal(err)
	}
	// The deleted rows' IDs may be handed out again.
	submit(t, s, identify("m4", "user-4", "anon-4", 3*time.Minute), identify("m5", "user-5", "anon-5", 4*time.Minute))
	h := historyOf(t, s, mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-2"})
	for _, m := range h.Messages {
		if m.MessageID != "m2" {
			t.Errorf("anon-2's history holds %s, which is not about anon-2", m.MessageID)
		}
	}
}

// historyOf returns the history of the profile holding id.
func historyOf(t *testing.T, s *Store, id mapping.Identifier) History {
	t.Helper()
	p, err := s.ProfileOf(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.History(context.Background(), p.ID)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
