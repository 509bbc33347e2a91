package segment

import (
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/mapping"
)

// callback records analytics-go's verdict on each message.
type callback struct {
	mu       sync.Mutex
	ok       int
	failures []error
}

func (c *callback) Success(analytics.Message) { c.mu.Lock(); c.ok++; c.mu.Unlock() }
func (c *callback) Failure(_ analytics.Message, err error) {
	c.mu.Lock()
	c.failures = append(c.failures, err)
	c.mu.Unlock()
}

// TestAnalyticsGoClient sends through Segment's own Go library, as apps do.
func TestAnalyticsGoClient(t *testing.T) {
	s := newTestServer(t, Config{})
	s.now = time.Now() // analytics-go stamps real times
	srv := httptest.NewServer(s.echo)
	defer srv.Close()

	cb := &callback{}
	client, err := analytics.NewWithConfig("wk_server", analytics.Config{Endpoint: srv.URL, BatchSize: 3, Interval: time.Hour, Callback: cb})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []analytics.Message{
		analytics.Identify{UserId: "usr_2b7f9d1c4e6a8b0d", AnonymousId: "anon-1", Traits: analytics.NewTraits().SetEmail("ada@example.com")},
		analytics.Track{UserId: "usr_2b7f9d1c4e6a8b0d", Event: "Report Exported", Properties: analytics.NewProperties().Set("format", "csv")},
		analytics.Page{AnonymousId: "anon-1", Name: "Pricing"},
		analytics.Screen{UserId: "usr_2b7f9d1c4e6a8b0d", Name: "Home"},
		analytics.Group{UserId: "usr_2b7f9d1c4e6a8b0d", GroupId: "g1"},
		analytics.Alias{PreviousId: "anon-1", UserId: "usr_2b7f9d1c4e6a8b0d"},
	}
	for _, m := range msgs {
		if err := client.Enqueue(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if cb.ok != len(msgs) || len(cb.failures) > 0 {
		t.Fatalf("got %d delivered, failures %v, want %d delivered", cb.ok, cb.failures, len(msgs))
	}
	if len(s.store.msgs) != len(msgs) {
		t.Fatalf("got %d stored, want %d", len(s.store.msgs), len(msgs))
	}
	byType := map[string]mapping.Message{} // the two batches may arrive in either order
	for i, m := range s.store.msgs {
		byType[m.Type] = m
		if m.Rejected != "" {
			t.Errorf("message %d: got rejected %q, want none", i, m.Rejected)
		}
		lib, _ := rawFields(t, m.Raw)["context"].(map[string]any)["library"].(map[string]any)
		if lib["name"] != "analytics-go" {
			t.Errorf("message %d: got context.library %v, want the batch's merged in", i, lib)
		}
		if m.ID == "" || m.ID[:7] == "bridge-" {
			t.Errorf("message %d: got ID %q, want analytics-go's", i, m.ID)
		}
		if m.Timestamp.After(m.ReceivedAt) || m.ReceivedAt.Sub(m.Timestamp) > time.Minute {
			t.Errorf("message %d: got timestamp %v for receivedAt %v, want shortly before", i, m.Timestamp, m.ReceivedAt)
		}
	}
	if len(byType) != len(msgs) {
		t.Errorf("got types %v, want one of each call", byType)
	}
	if got := byType["identify"].Email; got != "ada@example.com" {
		t.Errorf("got email %q, want ada@example.com", got)
	}
	if got := byType["alias"].PreviousID; got != "anon-1" {
		t.Errorf("got previous ID %q, want anon-1", got)
	}
	if got := byType["track"].Event; got != "Report Exported" {
		t.Errorf("got event %q, want Report Exported", got)
	}
}
