package main

import (
	"sync"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"
)

// recordingCallback collects analytics-go's delivery results.
type recordingCallback struct {
	mu        sync.Mutex
	succeeded int
	failed    []error
}

func (c *recordingCallback) Success(analytics.Message) { c.mu.Lock(); c.succeeded++; c.mu.Unlock() }
func (c *recordingCallback) Failure(_ analytics.Message, err error) {
	c.mu.Lock()
	c.failed = append(c.failed, err)
	c.mu.Unlock()
}

// newClient points Segment's own Go library at the bridge.
func newClient(t *testing.T, b *testBridge, cb analytics.Callback) analytics.Client {
	t.Helper()
	client, err := analytics.NewWithConfig(testWriteKey, analytics.Config{
		Endpoint:  b.URL,
		Interval:  50 * time.Millisecond,
		BatchSize: 50,
		Callback:  cb,
	})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func TestAnalyticsGoEndToEnd(t *testing.T) {
	b := startBridge(t, "")
	cb := &recordingCallback{}
	client := newClient(t, b, cb)

	// Anonymous browsing, then login: identify joins the anonymous ID to the user.
	must(t, client.Enqueue(analytics.Track{AnonymousId: "anon-e2e-1", Event: "Viewed Pricing"}))
	must(t, client.Enqueue(analytics.Identify{AnonymousId: "anon-e2e-1", UserId: "user-e2e-7f3a9c2b51d4",
		Traits: analytics.NewTraits().SetEmail("ada@example.com").SetName("Ada")}))
	// A second device, aliased to the same user.
	must(t, client.Enqueue(analytics.Alias{PreviousId: "anon-e2e-2", UserId: "user-e2e-7f3a9c2b51d4"}))
	// A track carrying both IDs links them too.
	must(t, client.Enqueue(analytics.Track{AnonymousId: "anon-e2e-3", UserId: "user-e2e-7f3a9c2b51d4", Event: "Upgraded"}))
	// Someone else, in the same batch.
	must(t, client.Enqueue(analytics.Identify{AnonymousId: "anon-e2e-9", UserId: "user-e2e-other-0c1d2e3f"}))
	if err := client.Close(); err != nil {
		t.Fatalf("close client: %v", err)
	}
	if len(cb.failed) > 0 || cb.succeeded != 5 {
		t.Fatalf("analytics-go: got %d delivered and failures %v, want 5 delivered", cb.succeeded, cb.failed)
	}

	p, ok := b.profile(t, "anonymous_id:anon-e2e-1")
	if !ok {
		t.Fatal("lookup anon-e2e-1: not found")
	}
	if p.UserID != "user-e2e-7f3a9c2b51d4" {
		t.Errorf("got user ID %q, want user-e2e-7f3a9c2b51d4", p.UserID)
	}
	got := identifierSet(p)
	for _, want := range []string{"user_id:user-e2e-7f3a9c2b51d4", "anonymous_id:anon-e2e-1", "anonymous_id:anon-e2e-2", "anonymous_id:anon-e2e-3", "email:ada@example.com"} {
		if !got[want] {
			t.Errorf("profile lacks %s; got %v", want, got)
		}
	}
	if got["anonymous_id:anon-e2e-9"] {
		t.Errorf("profile holds another user's anonymous ID: %v", got)
	}
	if p.Traits["name"] != "Ada" {
		t.Errorf("got trait name %v, want Ada", p.Traits["name"])
	}
	other, ok := b.profile(t, "user_id:user-e2e-other-0c1d2e3f")
	if !ok || !identifierSet(other)["anonymous_id:anon-e2e-9"] {
		t.Errorf("second user: got %+v, want it joined to anon-e2e-9", other)
	}
	if _, ok := b.profile(t, "user_id:nobody"); ok {
		t.Errorf("unknown user: got a profile, want 404")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
