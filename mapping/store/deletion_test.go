package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// TestDeletionIsDecidedInEventOrder is the case the review found: a deletion
// at T takes the profile as it stood at T, and a message naming the deleted
// identifier keeps its other identifiers, whatever the arrival order.
func TestDeletionIsDecidedInEventOrder(t *testing.T) {
	toC := identify("m1", "user-c", "A1", time.Minute)
	toA := identify("m2", "user-a", "A1", 2*time.Minute)
	del := mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", AnonymousID: "A1", Timestamp: t0.Add(3 * time.Minute), ReceivedAt: t0}
	for _, order := range [][]mapping.Message{{toC, toA, del}, {toC, del, toA}, {del, toA, toC}, {toA, del, toC}} {
		s := openTestStore(t, Options{DeletionGrace: time.Hour})
		for _, m := range order {
			submit(t, s, m)
		}
		if _, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: "user-a"}); err != nil {
			t.Errorf("arrival %s %s %s: user-a: got %v, want its profile", order[0].ID, order[1].ID, order[2].ID, err)
		}
		for _, id := range []mapping.Identifier{{Kind: mapping.KindUserID, Value: "user-c"}, {Kind: mapping.KindAnonymousID, Value: "A1"}} {
			if _, err := s.ProfileOf(context.Background(), id); mapping.ErrorCode(err) != mapping.CodeNotFound {
				t.Errorf("arrival %s %s %s: %s: got %v, want not_found", order[0].ID, order[1].ID, order[2].ID, id, err)
			}
		}
	}
}

// TestHeldBackIdentifiersAreHidden checks that during the grace period a
// deleted person is found nowhere and nothing about them is delivered.
func TestHeldBackIdentifiersAreHidden(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{DeletionGrace: time.Hour})
	m := identify("m1", "user-1", "anon-1", 0)
	m.Email = "pat@example.com"
	m.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: "user-1", MessageID: "j1", Payload: []byte(`{}`)}}
	submit(t, s, m)
	submit(t, s, mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", UserID: "user-1", Timestamp: t0.Add(time.Minute), ReceivedAt: t0})

	for _, id := range []mapping.Identifier{{Kind: mapping.KindUserID, Value: "user-1"}, {Kind: mapping.KindAnonymousID, Value: "anon-1"}, {Kind: mapping.KindEmail, Value: "pat@example.com"}} {
		if _, err := s.ProfileOf(ctx, id); mapping.ErrorCode(err) != mapping.CodeNotFound {
			t.Errorf("%s: got %v, want not_found", id, err)
		}
	}
	res, err := s.Search(ctx, SearchQuery{Value: "user-1"})
	if err != nil || len(res.Hits) != 0 {
		t.Errorf("search: got %+v, %v; want no hits", res.Hits, err)
	}
	var jobs, raw int
	if err := s.read.Get(&jobs, `SELECT COUNT(*) FROM jobs WHERE held = 0`); err != nil {
		t.Fatal(err)
	}
	if err := s.read.Get(&raw, `SELECT COUNT(*) FROM messages WHERE raw <> '{}' AND type <> 'delete'`); err != nil {
		t.Fatal(err)
	}
	if jobs != 0 || raw != 0 {
		t.Errorf("got %d jobs and %d payloads about the deleted person, want none", jobs, raw)
	}
	if listed, err := s.Jobs(ctx, "", 10); err != nil || len(listed) != 0 {
		t.Errorf("jobs listed: got %v (%v), want none", listed, err)
	}
	o, err := s.Overview(ctx)
	if err != nil || o.Identifiers != 0 || o.Profiles != 0 {
		t.Errorf("overview: got %d identifiers, %d profiles (%v); want 0, 0", o.Identifiers, o.Profiles, err)
	}
}

// TestRefusedMessageDoesNotRecreateDeletedID: a message refused for its
// guessable user ID records that ID with a warning, but never one deleted.
func TestRefusedMessageDoesNotRecreateDeletedID(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Hour} {
		s := openTestStore(t, Options{DeletionGrace: grace})
		submit(t, s, mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", UserID: "12345", Timestamp: t0, ReceivedAt: t0})
		submit(t, s, mapping.Message{Source: mapping.SourceJimoSession, ID: "s1", Type: "session", UserID: "12345", Timestamp: t0.Add(time.Minute), ReceivedAt: t0,
			UserIDWarning: "guessable: all digits", Rejected: "guessable_token"})
		var live int
		if err := s.read.Get(&live, `SELECT COUNT(*) FROM identifiers WHERE profile_id <> 0`); err != nil {
			t.Fatal(err)
		}
		warnings, err := s.Warnings(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if live != 0 || len(warnings) != 0 {
			t.Errorf("grace %s: got %d identifiers and warnings %v, want none", grace, live, warnings)
		}
	}
}

// TestTombstonesAreReadFromTheDatabase: a tombstone written by another
// process (here another store on the same file) is honoured at once.
func TestTombstonesAreReadFromTheDatabase(t *testing.T) {
	ctx := context.Background()
	path := testDSN(t)
	a, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	submit(t, a, identify("m0", "user-0", "anon-0", 0)) // a has written before: it knows there were no tombstones
	b, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	submit(t, b, mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", UserID: "user-1", Timestamp: t0, ReceivedAt: t0})
	r := submit(t, a, identify("m1", "user-1", "anon-1", time.Minute))
	if want := "userId: " + mapping.NoteDeletedID; !slices.Contains(r[0].Notes, want) {
		t.Errorf("got notes %v, want %q", r[0].Notes, want)
	}
	if _, err := a.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: "user-1"}); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Errorf("user-1: got %v, want not_found", err)
	}
}

// TestEraseDeletedWorksInBatches: a large deletion is erased completely.
func TestEraseDeletedWorksInBatches(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{DeletionGrace: time.Minute, Now: clock.Now, Caps: mapping.Caps{AnonymousIDs: 2000, Links: 5000}})
	var msgs []mapping.Message
	for i := range eraseBatch + 20 {
		msgs = append(msgs, identify(fmt.Sprintf("m%d", i), "user-1", fmt.Sprintf("anon-%d", i), time.Duration(i)*time.Millisecond))
	}
	submit(t, s, msgs...)
	submit(t, s, mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "d1", Type: "delete", UserID: "user-1", Timestamp: t0.Add(time.Hour), ReceivedAt: t0})
	clock.Advance(time.Hour)
	n, err := s.EraseDeleted(context.Background())
	if err != nil || n != eraseBatch+21 {
		t.Fatalf("erase: got %d, %v; want %d", n, err, eraseBatch+21)
	}
	var left int
	if err := s.read.Get(&left, `SELECT (SELECT COUNT(*) FROM identifiers) + (SELECT COUNT(*) FROM messages WHERE type <> 'delete') + (SELECT COUNT(*) FROM links)`); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("got %d rows left about the deleted person, want 0", left)
	}
}
