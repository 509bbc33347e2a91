package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/jimo/jimotest"
	"github.com/bridgeworks/bridge/segment"
	"github.com/bridgeworks/bridge/segment/segmenttest"
)

const (
	jimoKey          = "jimo-server-key"
	forwardWriteKey  = "forward-write-key"
	webhookSecret    = "segment-shared-secret"
	testPageOrigin   = "https://app.example.test"
	deliveryDeadline = 20 * time.Second
)

// forwardingBridge starts a bridge that forwards to a fake Jimo and a fake Segment.
func forwardingBridge(t *testing.T, extra ...string) (*testBridge, *jimotest.Server, *segmenttest.Server) {
	t.Helper()
	fakeJimo := jimotest.NewServer(t, jimoKey)
	fakeSegment := segmenttest.NewServer(t, forwardWriteKey)
	args := append([]string{
		"-jimo-api-key", jimoKey, "-jimo-endpoint", fakeJimo.URL,
		"-segment-forward-write-key", forwardWriteKey, "-segment-endpoint", fakeSegment.URL,
		"-segment-shared-secret", webhookSecret, "-allowed-origins", testPageOrigin,
	}, extra...)
	return startBridge(t, "", args...), fakeJimo, fakeSegment
}

func TestSegmentIdentifyReachesJimo(t *testing.T) {
	b, fakeJimo, fakeSegment := forwardingBridge(t)
	client := newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Identify{
		UserId: "user-fwd-5b2e9d7c41a8", AnonymousId: "anon-fwd-1",
		Traits: analytics.NewTraits().SetEmail("grace@example.com").SetName("Grace").
			Set("address", map[string]any{"city": "Paris"}).Set("bio", strings.Repeat("x", 800)),
	}))
	must(t, client.Enqueue(analytics.Identify{AnonymousId: "anon-only"})) // no user ID: not forwarded
	must(t, client.Close())

	reqs, err := fakeJimo.WaitFor(1, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	ev := reqs[0].Event
	if ev.Type != "identify" || ev.UserID != "user-fwd-5b2e9d7c41a8" {
		t.Fatalf("Jimo got %+v, want an identify of user-fwd-5b2e9d7c41a8", ev)
	}
	if ev.Traits["email"] != "grace@example.com" || ev.Traits["address.city"] != "Paris" {
		t.Errorf("Jimo traits: got %v, want email kept and address flattened to address.city", ev.Traits)
	}
	if bio, _ := ev.Traits["bio"].(string); len(bio) != 700 {
		t.Errorf("Jimo trait bio: got %d characters, want 700", len(bio))
	}
	if reqs[0].Header.Get("x-api-key") != jimoKey || reqs[0].IdempotencyKey == "" {
		t.Errorf("Jimo request headers: got %v, want the API key and an Idempotency-Key", reqs[0].Header)
	}
	// Both identifies were acknowledged, so every job they caused is written:
	// the outbox holds the one delivered above and nothing else, so nothing
	// else can ever be sent.
	if got := b.jobDestinations(t); !reflect.DeepEqual(got, []string{"jimo"}) {
		t.Errorf("outbox jobs: got %v, want [jimo] (the anonymous identify is not forwarded, and what came from Segment does not go back)", got)
	}
	if n := len(fakeSegment.Messages()); n != 0 {
		t.Errorf("Segment got %d messages, want 0", n)
	}
}

// jobDestinations lists the destination of every outbox job, whatever its state, in ID order.
func (b *testBridge) jobDestinations(t *testing.T) []string {
	t.Helper()
	r := b.do(t, http.MethodGet, "/api/v1/jobs?state=all&limit=500", nil, map[string]string{"Authorization": "Bearer " + testAdminPassword})
	var out struct {
		Jobs []struct {
			ID          int64  `json:"id"`
			Destination string `json:"destination"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(r.body, &out); r.status != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/jobs: %d %v: %s", r.status, err, r.body)
	}
	sort.Slice(out.Jobs, func(i, j int) bool { return out.Jobs[i].ID < out.Jobs[j].ID })
	got := []string{}
	for _, j := range out.Jobs {
		got = append(got, j.Destination)
	}
	return got
}

func TestPageResetReachesSegment(t *testing.T) {
	b, fakeJimo, fakeSegment := forwardingBridge(t)
	body := `{"token":"user-page-8c1f3a9e27d4","anonymousId":"anon-page-1","email":"lin@example.com","name":"Lin","signature":"` +
		signUserID(testSigningSecret, "user-page-8c1f3a9e27d4") + `"}`
	status, resp := b.post(t, "/jimo/session", []byte(body), map[string]string{"Origin": testPageOrigin, "Content-Type": "application/json"})
	if status != http.StatusOK {
		t.Fatalf("session: got %d %s, want 200", status, resp)
	}
	msgs, err := fakeSegment.WaitFor(1, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.Type != "identify" || m.UserID != "user-page-8c1f3a9e27d4" || m.AnonymousID != "anon-page-1" || m.Traits["email"] != "lin@example.com" || !m.Forwarded {
		t.Errorf("Segment got %+v, want an identify joining anon-page-1 to the user, with traits and the bridge marker", m)
	}

	// A Jimo webhook becomes a track for the user behind identifyToken.
	hook := `{"event":"tour.completed","version":"0","time":1764000000000,"experience":{"id":"exp-1","name":"Onboarding"},` +
		`"jimer":{"uid":"jimer-1","identifyToken":"user-page-8c1f3a9e27d4"}}`
	status, resp = b.post(t, "/jimo/webhook?secret="+testWebhookSecret, []byte(hook), map[string]string{"Content-Type": "application/json"})
	if status != http.StatusOK {
		t.Fatalf("jimo webhook: got %d %s, want 200", status, resp)
	}
	msgs, err = fakeSegment.WaitFor(2, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	track := msgs[1]
	if track.Type != "track" || track.Event != "Jimo Tour Completed" || track.UserID != "user-page-8c1f3a9e27d4" {
		t.Errorf("Segment got %+v, want track Jimo Tour Completed for the user", track)
	}

	// Feed what Segment received back in as Segment's webhook deliveries: stored, not forwarded again.
	for _, m := range msgs {
		raw := []byte(m.Raw)
		sig := segment.Sign([]byte(webhookSecret), raw)
		status, resp := b.post(t, "/segment/webhook", raw, map[string]string{"Content-Type": "application/json", "X-Signature": sig})
		if status != http.StatusOK {
			t.Fatalf("webhook echo: got %d %s, want 200", status, resp)
		}
	}
	// The echoes were acknowledged, so any job they caused would be written
	// by now: there is none beyond the two delivered to Segment.
	if got := b.jobDestinations(t); !reflect.DeepEqual(got, []string{"segment", "segment"}) {
		t.Errorf("outbox jobs after the echo: got %v, want the two Segment deliveries only (nothing goes back to Segment or to Jimo)", got)
	}
	if n := len(fakeJimo.Requests()); n != 0 {
		t.Errorf("Jimo got %d requests, want 0", n)
	}
	if _, ok := b.profile(t, "user_id:user-page-8c1f3a9e27d4"); !ok {
		t.Errorf("the echoed messages were not stored")
	}
}

func TestDerivedModeForwardsTokens(t *testing.T) {
	b, fakeJimo, fakeSegment := forwardingBridge(t, "-jimo-token-mode", "derived")
	const user = "42" // a guessable app user ID is fine in derived mode: Jimo never sees it
	sig := hmacHex(testSigningSecret, user)
	status, resp := b.post(t, "/jimo/session", fmt.Appendf(nil, `{"userId":%q,"signature":%q,"anonymousId":"anon-derived"}`, user, sig),
		map[string]string{"Origin": testPageOrigin})
	if status != http.StatusOK {
		t.Fatalf("session: got %d %s, want 200", status, resp)
	}
	client := newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Identify{UserId: user, Traits: analytics.NewTraits().SetName("Ann")}))
	must(t, client.Close())
	reqs, err := fakeJimo.WaitFor(1, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	if got := reqs[0].Event.UserID; got == user || len(got) < 22 {
		t.Errorf("Jimo got user %q, want the derived token, never the app's user ID", got)
	}
	msgs, err := fakeSegment.WaitFor(1, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	if msgs[0].UserID != user {
		t.Errorf("Segment got user %q, want the app's user ID %q", msgs[0].UserID, user)
	}
}

func hmacHex(secret, value string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil))
}

// TestRelay: with BRIDGE_SEGMENT_RELAY, everything received on the Tracking
// API reaches Segment as received: same message IDs and timestamps.
func TestRelay(t *testing.T) {
	b, _, fakeSegment := forwardingBridge(t, "-segment-relay")
	at := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	client := newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Track{MessageId: "relay-track-1", AnonymousId: "anon-relay", Event: "Clicked", Timestamp: at,
		Properties: analytics.NewProperties().Set("button", "buy")}))
	must(t, client.Enqueue(analytics.Page{MessageId: "relay-page-1", AnonymousId: "anon-relay", Name: "Pricing", Timestamp: at}))
	must(t, client.Close())
	msgs, err := fakeSegment.WaitFor(2, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range msgs {
		got[m.MessageID] = m.Type
		if !m.Forwarded {
			t.Errorf("relayed %s lacks the bridge marker", m.MessageID)
		}
		// The event time, corrected for client clock skew as Segment would
		// (here the client's clock is right, so it is off by transit time only).
		ts, err := time.Parse(time.RFC3339Nano, m.Timestamp)
		if err != nil || ts.Sub(at).Abs() > time.Second {
			t.Errorf("relayed %s timestamp: got %s, want %s", m.MessageID, m.Timestamp, at.Format(time.RFC3339))
		}
	}
	want := map[string]string{"relay-track-1": "track", "relay-page-1": "page"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Segment got %v, want %v", got, want)
	}
}
