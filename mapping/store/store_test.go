package store

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/jmoiron/sqlx"
)

// openTestStore opens a store on a fresh database of the run's engine (see testDSN).
func openTestStore(t testing.TB, opts Options) *Store {
	t.Helper()
	return openStoreOn(t, testDSN(t), opts)
}

// openStoreOn opens a store on dsn, closed when t ends; several on one
// dsn are replicas.
func openStoreOn(t testing.TB, dsn string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func identify(id, userID, anonymousID string, at time.Duration) mapping.Message {
	return mapping.Message{Source: mapping.SourceSegmentAPI, ID: id, Type: "identify", UserID: userID, AnonymousID: anonymousID,
		Timestamp: t0.Add(at), ReceivedAt: t0.Add(at), Raw: []byte(`{}`)}
}

func submit(t testing.TB, s *Store, msgs ...mapping.Message) []mapping.Receipt {
	t.Helper()
	r, err := s.Submit(context.Background(), msgs)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return r
}

// snapshot is the final mapping: profiles as sorted identifier lists, the
// identifiers a deletion took (held back or erased), and every link's decision.
type snapshot struct {
	Profiles  []string
	Deleted   []string
	Decisions map[string]mapping.Decision
	// Traits are each profile's merged traits, by the profile's identifiers.
	Traits map[string]string
	// Jobs are the deliveries waiting to be sent, by the message that caused them.
	Jobs []string
}

// fataler is what takeSnapshot needs of a *testing.T or a *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

func takeSnapshot(t fataler, s *Store) snapshot {
	t.Helper()
	var rows []identifierRow
	if err := s.read.Select(&rows, `SELECT id, kind, value, profile_id, first_seen_at, first_source, first_message_id, warning FROM identifiers`); err != nil {
		t.Fatal(err)
	}
	groups := map[int64][]string{}
	snap := snapshot{Decisions: map[string]mapping.Decision{}}
	for _, r := range rows {
		if r.ProfileID == 0 {
			snap.Deleted = append(snap.Deleted, r.Identifier().String())
			continue
		}
		groups[r.ProfileID] = append(groups[r.ProfileID], r.Identifier().String())
	}
	var tombstones []string
	if err := s.read.Select(&tombstones, `SELECT kind || ':' || value_hash FROM tombstones`); err != nil {
		t.Fatal(err)
	}
	snap.Deleted = append(snap.Deleted, tombstones...)
	sort.Strings(snap.Deleted)
	for _, g := range groups {
		sort.Strings(g)
		snap.Profiles = append(snap.Profiles, strings.Join(g, " "))
	}
	sort.Strings(snap.Profiles)
	snap.Traits = map[string]string{}
	for p, ids := range groups {
		var docs []string
		if err := s.read.Select(&docs, `SELECT t.doc FROM traits t JOIN identifiers i ON i.id = t.identifier_id WHERE i.profile_id = ?`, p); err != nil {
			t.Fatal(err)
		}
		merged, err := mergeTraitDocs(docs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(merged) > 0 {
			vals := map[string]any{}
			for k, e := range merged {
				vals[k] = e.Value
			}
			b, _ := json.Marshal(vals)
			sorted := slices.Clone(ids)
			sort.Strings(sorted)
			snap.Traits[strings.Join(sorted, " ")] = string(b)
		}
	}
	if err := s.read.Select(&snap.Jobs, `SELECT source_message FROM jobs WHERE state = 'pending' ORDER BY source_message`); err != nil {
		t.Fatal(err)
	}
	var links []linkRow
	if err := s.read.Select(&links, `SELECT id, a_id, b_id, order_key, forced, withdrawn, decision, reason FROM links`); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		snap.Decisions[l.OrderKey] = l.Decision
	}
	// Profile rows must agree with their members.
	var profiles []profileRow
	if err := s.read.Select(&profiles, `SELECT id, user_id, anonymous_ids, links FROM profiles`); err != nil {
		t.Fatal(err)
	}
	if len(profiles) != len(groups) {
		t.Fatalf("got %d profile rows, want %d (one per group of identifiers)", len(profiles), len(groups))
	}
	for _, p := range profiles {
		var users, anons int
		for _, id := range groups[p.ID] {
			switch {
			case strings.HasPrefix(id, "user_id:"):
				users++
				if "user_id:"+p.UserID.String != id {
					t.Fatalf("profile %d: got user_id %q, want %q", p.ID, p.UserID.String, id)
				}
			case strings.HasPrefix(id, "anonymous_id:"):
				anons++
			}
		}
		if users > 1 {
			t.Fatalf("profile %d holds %d user IDs: %v", p.ID, users, groups[p.ID])
		}
		if anons != p.AnonymousIDs {
			t.Fatalf("profile %d: got anonymous_ids %d, want %d", p.ID, p.AnonymousIDs, anons)
		}
	}
	return snap
}

func TestIdentifyAnonymousThenKnown(t *testing.T) {
	s := openTestStore(t, Options{})
	submit(t, s, mapping.Message{Source: mapping.SourceSegmentAPI, ID: "m1", Type: "track", AnonymousID: "anon-1", Timestamp: t0, ReceivedAt: t0})
	submit(t, s, identify("m2", "user-1", "anon-1", time.Minute))
	p, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-1"})
	if err != nil {
		t.Fatal(err)
	}
	if p.UserID != "user-1" {
		t.Errorf("got user ID %q, want user-1", p.UserID)
	}
	if len(p.Identifiers) != 2 {
		t.Errorf("got identifiers %v, want user-1 and anon-1", p.Identifiers)
	}
}

func TestDuplicateMessageChangesNothing(t *testing.T) {
	s := openTestStore(t, Options{})
	m := identify("m1", "user-1", "anon-1", 0)
	m.Traits = map[string]any{"plan": "free"}
	m.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: "user-1", MessageID: "j1", Payload: []byte(`{}`)}}
	if r := submit(t, s, m); r[0].Duplicate {
		t.Fatalf("first submit: got duplicate, want new")
	}
	// counts is everything a message can change.
	counts := func() [5]int {
		var c [5]int
		for i, table := range []string{"messages", "identifiers", "links", "jobs", "message_refs"} {
			if err := s.read.Get(&c[i], `SELECT COUNT(*) FROM `+table); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	before, snapBefore := counts(), takeSnapshot(t, s)
	// The same message again, even with other content, is a duplicate.
	again := m
	again.AnonymousID, again.Traits = "anon-2", map[string]any{"plan": "paid"}
	if r := submit(t, s, again); !r[0].Duplicate {
		t.Fatalf("second submit: got new, want duplicate")
	}
	if after := counts(); after != before {
		t.Errorf("rows (messages, identifiers, links, jobs, refs): got %v after the duplicate, want %v", after, before)
	}
	if snap := takeSnapshot(t, s); !reflect.DeepEqual(snap, snapBefore) {
		t.Errorf("mapping changed: got %+v, want %+v", snap, snapBefore)
	}
	p, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: "user-1"})
	if err != nil || p.Traits["plan"] != "free" {
		t.Errorf("traits: got %v (%v), want plan free", p.Traits, err)
	}
}

func TestConflictOnTwoUserIDs(t *testing.T) {
	s := openTestStore(t, Options{})
	submit(t, s, identify("m1", "user-1", "anon-1", 0))
	r := submit(t, s, identify("m2", "user-2", "anon-1", time.Minute))
	if len(r[0].Notes) != 1 || !strings.Contains(r[0].Notes[0], "conflict") {
		t.Fatalf("got notes %v, want one conflict note", r[0].Notes)
	}
	snap := takeSnapshot(t, s)
	want := []string{"anonymous_id:anon-1 user_id:user-1", "user_id:user-2"}
	if !slices.Equal(snap.Profiles, want) {
		t.Errorf("got profiles %v, want %v", snap.Profiles, want)
	}
}

func TestLateOlderEventRedecides(t *testing.T) {
	s := openTestStore(t, Options{})
	submit(t, s, identify("m2", "user-2", "anon-1", 2*time.Minute))
	submit(t, s, identify("m1", "user-1", "anon-1", time.Minute)) // older: it wins
	snap := takeSnapshot(t, s)
	want := []string{"anonymous_id:anon-1 user_id:user-1", "user_id:user-2"}
	if !slices.Equal(snap.Profiles, want) {
		t.Errorf("got profiles %v, want %v", snap.Profiles, want)
	}
}

func TestRefusedValuesAreNoted(t *testing.T) {
	s := openTestStore(t, Options{Blocklist: mapping.NewBlocklist([]string{"placeholder"})})
	tests := []struct {
		name, userID, wantNote string
	}{
		{"blocked", "undefined", "userId refused: blocked_value"},
		{"quoted blocked", `"null"`, "userId refused: blocked_value"},
		{"configured", "placeholder", "userId refused: blocked_value"},
		{"zeros", "00000000-0000-0000-0000-000000000000", "userId refused: blocked_value"},
		{"control", "a\x00b", "userId refused: control_characters"},
		{"too long", strings.Repeat("x", 401), "userId refused: too_long"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := submit(t, s, identify(fmt.Sprint("m", i), tt.userID, "anon-ok", 0))
			if !slices.Contains(r[0].Notes, tt.wantNote) {
				t.Errorf("got notes %v, want %q", r[0].Notes, tt.wantNote)
			}
		})
	}
	var users int
	if err := s.read.Get(&users, `SELECT COUNT(*) FROM identifiers WHERE kind = 'user_id'`); err != nil {
		t.Fatal(err)
	}
	if users != 0 {
		t.Errorf("got %d user IDs stored, want 0", users)
	}
}

func TestImpersonatingLinksNothing(t *testing.T) {
	s := openTestStore(t, Options{})
	m := identify("m1", "user-1", "anon-1", 0)
	m.Impersonating = true
	submit(t, s, m)
	snap := takeSnapshot(t, s)
	want := []string{"anonymous_id:anon-1", "user_id:user-1"}
	if !slices.Equal(snap.Profiles, want) {
		t.Errorf("got profiles %v, want %v", snap.Profiles, want)
	}
}

func TestCapMakesConflict(t *testing.T) {
	s := openTestStore(t, Options{Caps: mapping.Caps{AnonymousIDs: 2}})
	for i := range 3 {
		submit(t, s, identify(fmt.Sprint("m", i), "user-1", fmt.Sprint("anon-", i), time.Duration(i)*time.Minute))
	}
	snap := takeSnapshot(t, s)
	var overCap int
	for _, d := range snap.Decisions {
		if d == mapping.DecisionOverCap {
			overCap++
		}
	}
	if overCap != 1 {
		t.Errorf("got %d over-cap links, want 1 (decisions %v)", overCap, snap.Decisions)
	}
}

func TestDeleteLeavesTombstone(t *testing.T) {
	s := openTestStore(t, Options{})
	submit(t, s, identify("m1", "user-1", "anon-1", 0))
	submit(t, s, mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", UserID: "user-1", Timestamp: t0, ReceivedAt: t0})
	if _, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-1"}); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Fatalf("after delete: got %v, want not_found", err)
	}
	r := submit(t, s, identify("m3", "user-1", "anon-1", time.Hour))
	if !slices.Contains(r[0].Notes, "rejected: deleted_identity") {
		t.Errorf("got notes %v, want the message rejected as a deleted identity", r[0].Notes)
	}
	if _, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: "user-1"}); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Fatalf("deleted user came back: %v", err)
	}
	var raw int
	if err := s.read.Get(&raw, `SELECT COUNT(*) FROM messages WHERE raw LIKE '%user-1%' OR user_id = 'user-1'`); err != nil {
		t.Fatal(err)
	}
	if raw != 0 {
		t.Errorf("got %d messages still naming the deleted user, want 0", raw)
	}
}

// TestTombstonesOutliveARestart checks that a store opened again still
// refuses the identifiers deleted before.
func TestTombstonesOutliveARestart(t *testing.T) {
	ctx := context.Background()
	path := testDSN(t)
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	submit(t, s, identify("m1", "user-1", "anon-1", 0))
	submit(t, s, mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", UserID: "user-1", Timestamp: t0, ReceivedAt: t0})
	s.Close()
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := submit(t, s, identify("m2", "user-1", "anon-2", time.Hour))
	if want := "userId: " + mapping.NoteDeletedID; !slices.Contains(r[0].Notes, want) {
		t.Errorf("after a restart: got notes %v, want %q", r[0].Notes, want)
	}
	if _, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-1"}); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Errorf("deleted user after a restart: got %v, want not_found", err)
	}
	// The message's other identifier is another person's: it is kept.
	if _, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-2"}); err != nil {
		t.Errorf("anon-2: got %v, want its profile", err)
	}
}

func TestLogoutWithoutIdentity(t *testing.T) {
	s := openTestStore(t, Options{})
	r := submit(t, s, mapping.Message{Source: mapping.SourceJimoSession, ID: "logout-1", Type: "logout", AnonymousID: "null", Timestamp: t0, ReceivedAt: t0})
	if r[0].Duplicate {
		t.Fatalf("got duplicate, want stored")
	}
	// The committer survived: the store still works.
	submit(t, s, identify("m1", "user-1", "anon-1", 0))
}

func TestDeletionIsFinalWhateverTheGrouping(t *testing.T) {
	del := mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", UserID: "user-1", Timestamp: t0.Add(time.Hour), ReceivedAt: t0}
	later := identify("m2", "user-1", "anon-2", 2*time.Hour)
	later.Email = "u1@example.com"
	later.Raw = []byte(`{"userId":"user-1","traits":{"email":"u1@example.com"}}`)
	later.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: "user-1", MessageID: "j2", Payload: []byte(`{"traits":{"email":"u1@example.com"}}`)}}
	older := identify("m0", "user-1", "anon-0", 0)
	older.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: "user-1", MessageID: "j0", Payload: []byte(`{}`)}}
	tests := []struct {
		name   string
		groups [][]mapping.Message
	}{
		{"identify, then delete and a later identify in one group", [][]mapping.Message{{older}, {del, later}}},
		{"all in one group", [][]mapping.Message{{older, del, later}}},
		{"delete overtakes the identity", [][]mapping.Message{{del}, {older}, {later}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Within the grace period a deletion is decided in event-time
			// order whatever the arrival order; then it is erased.
			clock := &testClock{now: t0}
			s := openTestStore(t, Options{DeletionGrace: time.Hour, Now: clock.Now})
			for _, g := range tt.groups {
				submit(t, s, g...)
			}
			clock.Advance(2 * time.Hour)
			if n, err := s.EraseDeleted(context.Background()); err != nil || n != 2 {
				t.Fatalf("erase: got %d, %v; want 2 identifiers (user-1, anon-0) erased", n, err)
			}
			for _, id := range []mapping.Identifier{{Kind: mapping.KindUserID, Value: "user-1"}, {Kind: mapping.KindAnonymousID, Value: "anon-0"}, {Kind: mapping.KindEmail, Value: "u1@example.com"}} {
				if _, err := s.ProfileOf(context.Background(), id); mapping.ErrorCode(err) != mapping.CodeNotFound {
					t.Errorf("%s after deletion: got %v, want not_found", id, err)
				}
			}
			// The later message's anonymous ID was never part of the deleted
			// profile (the deletion came first in event time): it is kept.
			if _, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindAnonymousID, Value: "anon-2"}); err != nil {
				t.Errorf("anon-2 after deletion: got %v, want its profile", err)
			}
			var left int
			if err := s.read.Get(&left, `SELECT COUNT(*) FROM jobs`); err != nil {
				t.Fatal(err)
			}
			if left != 0 {
				t.Errorf("got %d jobs about the deleted user, want 0", left)
			}
			var traces int
			if err := s.read.Get(&traces, `SELECT COUNT(*) FROM messages WHERE raw LIKE '%user-1%' OR user_id = 'user-1' OR raw LIKE '%u1@%'`); err != nil {
				t.Fatal(err)
			}
			if traces != 0 {
				t.Errorf("got %d messages still naming the deleted user, want 0", traces)
			}
		})
	}
}

func TestMergeOnEmailIsOptIn(t *testing.T) {
	browse := func(id, anon string) mapping.Message {
		return mapping.Message{Source: mapping.SourceSegmentAPI, ID: id, Type: "identify", AnonymousID: anon, Email: "pat@example.com", Timestamp: t0, ReceivedAt: t0}
	}
	tests := []struct {
		name  string
		merge bool
		want  []string
	}{
		{"attribute by default", false, []string{"anonymous_id:anon-1", "anonymous_id:anon-2"}},
		{"merging when enabled", true, []string{"anonymous_id:anon-1 anonymous_id:anon-2 email:pat@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, Options{MergeOnEmail: tt.merge})
			submit(t, s, browse("m1", "anon-1"), browse("m2", "anon-2"))
			if got := takeSnapshot(t, s).Profiles; !slices.Equal(got, tt.want) {
				t.Errorf("got profiles %v, want %v", got, tt.want)
			}
			p, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindEmail, Value: "pat@example.com"})
			if err != nil || !slices.ContainsFunc(p.Identifiers, func(id ProfileIdentifier) bool { return id.Value == "anon-1" }) {
				t.Errorf("lookup by email: got %+v, %v; want the first browser's profile", p, err)
			}
		})
	}
}

// TestEditedMigrationIsRefused: a migration whose text differs from the one
// applied to the database (its checksum) stops Open with a clear message,
// and a database from before checksums adopts them.
func TestEditedMigrationIsRefused(t *testing.T) {
	ctx := context.Background()
	path := testDSN(t)
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sqlx.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var unset int
	if err := db.Get(&unset, `SELECT COUNT(*) FROM schema_migrations WHERE checksum = ''`); err != nil || unset != 0 {
		t.Fatalf("migrations without a checksum: got %d (%v), want 0", unset, err)
	}

	// A database from before checksums: they are adopted.
	if _, err := db.Exec(`UPDATE schema_migrations SET checksum = ''`); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, path, Options{}); err != nil {
		t.Fatalf("open a database without checksums: %v", err)
	}
	s.Close()

	// Migration 2 as applied differs from the one this build carries.
	if _, err := db.Exec(`UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2`); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, path, Options{})
	if err == nil || !strings.Contains(err.Error(), "migration 002_secrets.sql differs from the one applied") {
		t.Fatalf("open with an edited migration: got %v, want it refused", err)
	}
}

// TestNULCharacters: NUL characters, which JSON's "\u0000" decodes to and
// PostgreSQL's text cannot hold, are stored as U+FFFD outside identifiers
// (on both engines alike) and refused in identifiers, so no message is one
// its sender would retry forever.
func TestNULCharacters(t *testing.T) {
	s := openTestStore(t, Options{})
	named := identify("nul-trait", "user-4", "", 0)
	named.Traits = map[string]any{"name": "a\x00b", "nested": map[string]any{"k\x00": []any{"x\x00"}}}
	named.Email = "ada@example.com"
	track := identify("nul-event", "user-2", "", 0)
	track.Type, track.Event = "track", "ev\x00"
	msgs := []mapping.Message{
		identify("nul-user", "us\x00er", "anon-1", 0),
		track,
		identify("nul\x00id", "user-3", "", 0),
		named,
		withJobs("nul-job", "user-5", "job\x00"),
	}
	for _, m := range msgs {
		if _, err := s.Submit(context.Background(), []mapping.Message{m}); err != nil {
			t.Errorf("submit %q: %v", m.ID, err)
		}
	}
	if msgs[3].Traits["name"] != "a\x00b" {
		t.Errorf("Submit changed its caller's message")
	}
	if r := submit(t, s, identify("nul\uFFFDid", "user-3", "", 0)); !r[0].Duplicate {
		t.Errorf("the message ID with a NUL was not stored as the same ID with U+FFFD")
	}
	if _, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: "us\x00er"}); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Errorf("a user ID with a NUL: got %v, want it refused (not found)", err)
	}
	p, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: "user-4"})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(p.Traits["name"]); got != "a\uFFFDb" {
		t.Errorf("trait with a NUL: got %q, want %q", got, "a\uFFFDb")
	}
	if _, err := s.Search(context.Background(), SearchQuery{Value: "ada@example.com", Limit: 10}); err != nil {
		t.Errorf("search beside traits that held a NUL: %v", err)
	}
	if r, err := s.Search(context.Background(), SearchQuery{Value: "us\x00er", Limit: 10}); err != nil || len(r.Hits) != 0 {
		t.Errorf("search for a value with a NUL: got %+v, %v; want no hits", r, err)
	}
	var events []string
	if err := s.read.Select(&events, `SELECT event FROM messages WHERE type = 'track'`); err != nil || len(events) != 1 || events[0] != "ev\uFFFD" {
		t.Errorf("track event with a NUL: got %q (%v), want [\"ev\\uFFFD\"]", events, err)
	}
}
