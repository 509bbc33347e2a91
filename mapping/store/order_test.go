package store

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/bridgeworks/bridge/mapping"
)

// genMessages draws a set of messages over a small universe of IDs, so that
// links collide, conflict and hit the (small) caps often.
func genMessages(t *rapid.T) []mapping.Message {
	n := rapid.IntRange(1, 14).Draw(t, "messages")
	userIDs := []string{"", "user-a", "user-b", "user-c"}
	anonIDs := []string{"", "anon-1", "anon-2", "anon-3", "anon-4"}
	msgs := make([]mapping.Message, n)
	for i := range msgs {
		m := mapping.Message{
			Source:      mapping.SourceSegmentAPI,
			ID:          fmt.Sprintf("m%02d", i),
			Type:        rapid.SampledFrom([]string{"identify", "alias", "track", "session", "webhook", "delete"}).Draw(t, "type"),
			UserID:      rapid.SampledFrom(userIDs).Draw(t, "userId"),
			AnonymousID: rapid.SampledFrom(anonIDs).Draw(t, "anonymousId"),
			// Few distinct times, so ties on time are decided by message ID.
			Timestamp: t0.Add(time.Duration(rapid.IntRange(0, 4).Draw(t, "minute")) * time.Minute),
			Raw:       []byte(`{}`),
		}
		switch m.Type {
		case "alias":
			m.PreviousID = rapid.SampledFrom(anonIDs).Draw(t, "previousId")
		case "session":
			// A Jimo session report in derived mode or with a legacy token: user, token and browser.
			m.Source = mapping.SourceJimoSession
			m.JimoToken = rapid.SampledFrom([]string{"", "token-x", "token-y"}).Draw(t, "jimoToken")
		case "delete":
			// A privacy deletion names one identifier.
			m.Source = mapping.SourceSegmentWebhook
			if m.UserID != "" {
				m.AnonymousID = ""
			}
		case "webhook":
			// A Jimo webhook in shared mode: a token that is a user ID or a legacy token.
			m.Source, m.UserID, m.AnonymousID = mapping.SourceJimoWebhook, "", ""
			m.JimoTokenOrUserID = rapid.SampledFrom([]string{"user-a", "user-b", "token-x", "token-y"}).Draw(t, "identifyToken")
		}
		if m.Type != "delete" && rapid.IntRange(0, 9).Draw(t, "impersonating") == 0 {
			m.Impersonating = true
		}
		if m.UserID == "" && m.AnonymousID == "" && m.PreviousID == "" && m.JimoToken == "" && m.JimoTokenOrUserID == "" {
			m.AnonymousID = "anon-1"
		}
		if m.Type != "delete" {
			// What a message carries beside identifiers: traits, and a delivery.
			m.Traits = map[string]any{"last": m.ID}
			key := m.UserID
			if key == "" {
				key = m.AnonymousID + m.JimoToken + m.JimoTokenOrUserID
			}
			m.Jobs = []mapping.Job{{Destination: "fake", OrderingKey: key, MessageID: "job-" + m.ID, Payload: []byte(`{}`)}}
		}
		m.ReceivedAt = m.Timestamp
		msgs[i] = m
	}
	return msgs
}

// orderOptions hold deletions back (not erased) for a whole run: within the
// grace period they are decided in event-time order like links.
var orderOptions = Options{Caps: mapping.Caps{AnonymousIDs: 2, Links: 3}, DeletionGrace: time.Hour}

// TestOrderIndependence feeds the same messages in random order, with random
// duplicates and random grouping, into two real stores and checks that the
// final mapping is the same as for the messages in time order.
func TestOrderIndependence(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		msgs := genMessages(rt)
		want := inOrderSnapshot(t, rt, msgs)

		dsn, drop := freshDatabase(t)
		defer drop()
		other := openOrFail(rt, dsn)
		defer other.Close()
		submitShuffled(rt, other, shuffle(rt, msgs))
		if got := takeSnapshot(rt, other); !reflect.DeepEqual(got, want) {
			rt.Fatalf("mapping depends on arrival order:\n got %+v\nwant %+v", got, want)
		}
	})
}

// TestOrderIndependenceAcrossStores is TestOrderIndependence with two stores
// on one database (two replicas), each submitting its share of the
// shuffled messages at the same time as the other.
func TestOrderIndependenceAcrossStores(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		msgs := genMessages(rt)
		want := inOrderSnapshot(t, rt, msgs)

		dsn, drop := freshDatabase(t)
		defer drop()
		a, b := openOrFail(rt, dsn), openOrFail(rt, dsn)
		defer a.Close()
		defer b.Close()
		shuffled := shuffle(rt, msgs)
		split := rapid.IntRange(0, len(shuffled)).Draw(rt, "split")
		// Groups are drawn before the goroutines start: rapid.T is not for concurrent use.
		groupsA, groupsB := drawGroups(rt, len(shuffled[:split]), "a"), drawGroups(rt, len(shuffled[split:]), "b")
		errs := make(chan error, 2)
		go func() { errs <- submitGroups(a, shuffled[:split], groupsA) }()
		go func() { errs <- submitGroups(b, shuffled[split:], groupsB) }()
		for range 2 {
			if err := <-errs; err != nil {
				rt.Fatalf("submit: %v", err)
			}
		}
		for _, s := range []*Store{a, b} {
			if got := takeSnapshot(rt, s); !reflect.DeepEqual(got, want) {
				rt.Fatalf("mapping of two stores depends on arrival order:\n got %+v\nwant %+v", got, want)
			}
		}
	})
}

func openOrFail(rt *rapid.T, dsn string) *Store {
	s, err := Open(context.Background(), dsn, orderOptions)
	if err != nil {
		rt.Fatalf("open: %v", err)
	}
	return s
}

// inOrderSnapshot is the mapping msgs make submitted one by one in time order, on a database of its own.
func inOrderSnapshot(t *testing.T, rt *rapid.T, msgs []mapping.Message) snapshot {
	dsn, drop := freshDatabase(t)
	defer drop()
	s := openOrFail(rt, dsn)
	defer s.Close()
	for _, m := range msgs {
		if _, err := s.Submit(context.Background(), []mapping.Message{m}); err != nil {
			rt.Fatalf("submit: %v", err)
		}
	}
	return takeSnapshot(rt, s)
}

// shuffle returns msgs in a random order, with up to five duplicates.
func shuffle(rt *rapid.T, msgs []mapping.Message) []mapping.Message {
	shuffled := rapid.Permutation(msgs).Draw(rt, "order")
	for range rapid.IntRange(0, 5).Draw(rt, "duplicates") {
		shuffled = append(shuffled, rapid.SampledFrom(msgs).Draw(rt, "duplicate"))
	}
	return shuffled
}

// drawGroups splits n messages into groups of random sizes.
func drawGroups(rt *rapid.T, n int, label string) []int {
	var sizes []int
	for n > 0 {
		k := rapid.IntRange(1, n).Draw(rt, "group "+label)
		sizes = append(sizes, k)
		n -= k
	}
	return sizes
}

// submitShuffled submits msgs in groups of random sizes.
func submitShuffled(rt *rapid.T, s *Store, msgs []mapping.Message) {
	if err := submitGroups(s, msgs, drawGroups(rt, len(msgs), "")); err != nil {
		rt.Fatalf("submit: %v", err)
	}
}

// submitGroups submits msgs in groups of the given sizes.
func submitGroups(s *Store, msgs []mapping.Message, sizes []int) error {
	for _, k := range sizes {
		if _, err := s.Submit(context.Background(), msgs[:k]); err != nil {
			return err
		}
		msgs = msgs[k:]
	}
	return nil
}
