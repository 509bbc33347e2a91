package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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

// TestOrderIndependence feeds the same messages in random order, with random
// duplicates and random grouping, into two real stores and checks that the
// final mapping is the same as for the messages in time order.
func TestOrderIndependence(t *testing.T) {
	dir := t.TempDir()
	run := 0
	open := func(t *rapid.T) *Store {
		run++
		// Deletions are held back (not erased) for the whole run: within the
		// grace period they are decided in event-time order like links.
		s, err := Open(context.Background(), filepath.Join(dir, fmt.Sprintf("run-%d.db", run)), Options{Caps: mapping.Caps{AnonymousIDs: 2, Links: 3}, DeletionGrace: time.Hour})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	}
	rapid.Check(t, func(rt *rapid.T) {
		msgs := genMessages(rt)

		inOrder := open(rt)
		defer inOrder.Close()
		for _, m := range msgs {
			if _, err := inOrder.Submit(context.Background(), []mapping.Message{m}); err != nil {
				rt.Fatalf("submit: %v", err)
			}
		}
		want := takeSnapshot(rt, inOrder)

		shuffled := rapid.Permutation(msgs).Draw(rt, "order")
		for range rapid.IntRange(0, 5).Draw(rt, "duplicates") {
			shuffled = append(shuffled, rapid.SampledFrom(msgs).Draw(rt, "duplicate"))
		}
		other := open(rt)
		defer other.Close()
		for len(shuffled) > 0 {
			k := rapid.IntRange(1, len(shuffled)).Draw(rt, "group")
			if _, err := other.Submit(context.Background(), shuffled[:k]); err != nil {
				rt.Fatalf("submit: %v", err)
			}
			shuffled = shuffled[k:]
		}
		got := takeSnapshot(rt, other)
		if !reflect.DeepEqual(got, want) {
			rt.Fatalf("mapping depends on arrival order:\n got %+v\nwant %+v", got, want)
		}
		inOrder.Close()
		other.Close()
		os.Remove(filepath.Join(dir, fmt.Sprintf("run-%d.db", run)))
	})
}
