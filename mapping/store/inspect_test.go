package store

import (
	"context"
	"testing"

	"github.com/bridgeworks/bridge/mapping"
)

// TestProfilesByKey: each outbox ordering key finds the profile holding it
// as a user ID, a Jimo token or an anonymous ID; a value that is a user ID of
// one profile and an anonymous ID of another is the user's; unknown keys are
// absent.
func TestProfilesByKey(t *testing.T) {
	s := openTestStore(t, Options{})
	token := identify("m3", "user-tok-5e1a9c", "", 0)
	token.JimoToken = "tok-7f3a9c2b51d4e8"
	submit(t, s,
		identify("m1", "user-ada-8c1f2e9a", "anon-ada-1", 0),
		identify("m2", "", "user-bob-5e6f7a8b", 0), // an anonymous ID that looks like a user ID
		identify("m4", "user-bob-5e6f7a8b", "anon-bob-1", 0),
		token,
	)
	profileOf := func(kind mapping.Kind, value string) int64 {
		p, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: kind, Value: value})
		if err != nil {
			t.Fatal(err)
		}
		return p.ID
	}
	got, err := s.ProfilesByKey(context.Background(), []string{"user-ada-8c1f2e9a", "anon-ada-1", "user-bob-5e6f7a8b", "tok-7f3a9c2b51d4e8", "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"user-ada-8c1f2e9a":  profileOf(mapping.KindUserID, "user-ada-8c1f2e9a"),
		"anon-ada-1":         profileOf(mapping.KindUserID, "user-ada-8c1f2e9a"),
		"user-bob-5e6f7a8b":  profileOf(mapping.KindUserID, "user-bob-5e6f7a8b"),
		"tok-7f3a9c2b51d4e8": profileOf(mapping.KindUserID, "user-tok-5e1a9c"),
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got profile %d, want %d", k, got[k], w)
		}
	}
	if p := profileOf(mapping.KindAnonymousID, "user-bob-5e6f7a8b"); p == want["user-bob-5e6f7a8b"] {
		t.Fatalf("seed: the anonymous ID user-bob-5e6f7a8b joined bob's profile %d; want it apart", p)
	}
}

// TestConflictsNameTheProfilesHoldingEachSide: a conflict reports the
// profile (and its user ID) each of its identifiers is in now.
func TestConflictsNameTheProfilesHoldingEachSide(t *testing.T) {
	s := openTestStore(t, Options{})
	submit(t, s,
		identify("m1", "user-ada-8c1f2e9a", "anon-1", 0),
		identify("m2", "user-bob-5e6f7a8b", "anon-1", 1),
	)
	conflicts, err := s.Conflicts(context.Background(), 10, 0)
	if err != nil || len(conflicts) != 1 {
		t.Fatalf("got conflicts %+v (%v), want 1", conflicts, err)
	}
	c := conflicts[0]
	for _, side := range []struct {
		id        mapping.Identifier
		profileID int64
		userID    string
	}{{c.A, c.AProfileID, c.AUserID}, {c.B, c.BProfileID, c.BUserID}} {
		p, err := s.ProfileOf(context.Background(), side.id)
		if err != nil {
			t.Fatal(err)
		}
		if side.profileID != p.ID || side.userID != p.UserID {
			t.Errorf("%s: got profile %d (%q), want %d (%q)", side.id, side.profileID, side.userID, p.ID, p.UserID)
		}
	}
	if c.AProfileID == c.BProfileID {
		t.Errorf("got both sides in profile %d, want two profiles", c.AProfileID)
	}
}
