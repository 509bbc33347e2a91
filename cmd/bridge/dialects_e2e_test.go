package main

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/mapping/store"
)

// getAuthed GETs path with the admin password and returns the status and body.
func (b *testBridge) getAuthed(t testing.TB, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.URL+path, nil)
	req.SetBasicAuth("admin", testAdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestTimestampDialectsThroughTheServer posts Segment's Flutter batch as the
// library does (/v1/b, writeKey in the body) and an event whose timestamp
// cannot be read: both are stored, and the unreadable timestamp is counted.
func TestTimestampDialectsThroughTheServer(t *testing.T) {
	b := startBridge(t, "")
	flutter, err := os.ReadFile(filepath.Join("..", "..", "testdata", "segment", "api_batch_flutter_local.json"))
	if err != nil {
		t.Fatal(err)
	}
	flutter = []byte(strings.Replace(string(flutter), `"writeKey":"wk"`, `"writeKey":"`+testWriteKey+`"`, 1))
	if status, resp := b.post(t, "/v1/b", flutter, map[string]string{"Content-Type": "application/json; charset=utf-8"}); status != http.StatusOK {
		t.Fatalf("flutter batch: got %d %s, want 200", status, resp)
	}
	p, ok := b.profile(t, "user_id:0f8fad5b-d9cb-469f-a165-70867728950e")
	if !ok || !identifierSet(p)["anonymous_id:4a6f3d2e-9b1c-4e8f-a7d5-2c0b9e8f1a63"] {
		t.Fatalf("flutter batch: got %+v, want the user joined to the device's anonymous ID", p)
	}
	if _, m := b.get(t, "/metrics"); strings.Contains(string(m), "bridge_message_notes_total{") {
		t.Errorf("metrics count notes for readable timestamps:\n%s", m)
	}

	unreadable, err := os.ReadFile(filepath.Join("..", "..", "testdata", "segment", "api_track_unreadable_timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	auth := map[string]string{"Authorization": basicAuth(testWriteKey)}
	if status, resp := b.post(t, "/v1/track", unreadable, auth); status != http.StatusOK {
		t.Fatalf("unreadable timestamp: got %d %s, want 200 (stored with a note)", status, resp)
	}
	if got := b.metric(t, `bridge_message_notes_total{note="unreadable_timestamp",source="segment.api"}`); got != 1 {
		t.Errorf("unreadable timestamps counted: got %v, want 1", got)
	}
	// The note is stored with the message, for the profile page and the history API.
	db, err := sql.Open("sqlite3", "file:"+b.DB+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var notes int
	if err := db.QueryRow(`SELECT COUNT(*) FROM messages WHERE notes LIKE '%unreadable_timestamp%'`).Scan(&notes); err != nil || notes != 1 {
		t.Errorf("messages noting the unreadable timestamp: got %d (%v), want 1", notes, err)
	}
}

// TestLargeIntegersEndToEnd: integers beyond 2^53 in traits keep every digit
// in the stored profile (also after a second identify merges into it), in
// what Jimo receives and in what Segment receives.
func TestLargeIntegersEndToEnd(t *testing.T) {
	b, fakeJimo, fakeSegment := forwardingBridge(t)
	const user = "0f8fad5b-d9cb-469f-a165-70867728950e"
	identify := `{"type":"identify","userId":"` + user + `","anonymousId":"anon-big-1","messageId":"big-1",` +
		`"traits":{"twitter_id":1593412345678901234,"big":1234567890123456789012,"account":{"snowflake":1593412345678901235}}}`
	auth := map[string]string{"Authorization": basicAuth(testWriteKey)}
	if status, resp := b.post(t, "/v1/identify", []byte(identify), auth); status != http.StatusOK {
		t.Fatalf("identify: got %d %s", status, resp)
	}
	reqs, err := fakeJimo.WaitFor(1, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"twitter_id":1593412345678901234`, `"big":1234567890123456789012`, `"account.snowflake":1593412345678901235`} {
		if !strings.Contains(string(reqs[0].Body), want) {
			t.Errorf("Jimo got %s, want %s", reqs[0].Body, want)
		}
	}

	// A second identify merges into the stored traits (they are read back and written again).
	second := `{"type":"identify","userId":"` + user + `","messageId":"big-2","traits":{"plan":"team"}}`
	if status, resp := b.post(t, "/v1/identify", []byte(second), auth); status != http.StatusOK {
		t.Fatalf("second identify: got %d %s", status, resp)
	}
	if _, err := fakeJimo.WaitFor(2, deliveryDeadline); err != nil {
		t.Fatal(err)
	}
	status, body := b.getAuthed(t, "/api/v1/profiles?identifier="+url.QueryEscape("user_id:"+user))
	if status != http.StatusOK {
		t.Fatalf("lookup: got %d %s", status, body)
	}
	for _, want := range []string{`"twitter_id":1593412345678901234`, `"big":1234567890123456789012`, `"snowflake":1593412345678901235`, `"plan":"team"`} {
		if !strings.Contains(body, want) {
			t.Errorf("profile %s lacks %s", body, want)
		}
	}

	// The page reports attributes with a Snowflake ID: Segment gets every digit.
	session := `{"token":"` + user + `","anonymousId":"anon-big-2","signature":"` + signUserID(testSigningSecret, user) + `","attributes":{"org_id":1593412345678901236}}`
	if status, resp := b.post(t, "/jimo/session", []byte(session), map[string]string{"Origin": testPageOrigin, "Content-Type": "application/json"}); status != http.StatusOK {
		t.Fatalf("session: got %d %s", status, resp)
	}
	msgs, err := fakeSegment.WaitFor(1, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msgs[0].Raw), `"org_id":1593412345678901236`) {
		t.Errorf("Segment got %s, want org_id 1593412345678901236", msgs[0].Raw)
	}
}

// TestGuessableUserIDWithheldFromJimoForEveryKind: with tracks forwarded to
// Jimo, neither the identify nor the track of a guessable user ID reaches
// Jimo; a sound user's do. All four travel in one batch, so one commit wrote
// every job there will ever be for them.
func TestGuessableUserIDWithheldFromJimoForEveryKind(t *testing.T) {
	b, fakeJimo, _ := forwardingBridge(t, "-jimo-forward-track")
	const good = "0f8fad5b-d9cb-469f-a165-70867728950e"
	client := newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Identify{UserId: "12345", AnonymousId: "anon-guess-1"}))
	must(t, client.Enqueue(analytics.Track{UserId: "12345", Event: "Report Exported"}))
	must(t, client.Enqueue(analytics.Identify{UserId: good, AnonymousId: "anon-good-1"}))
	must(t, client.Enqueue(analytics.Track{UserId: good, Event: "Report Exported"}))
	must(t, client.Close())

	reqs, err := fakeJimo.WaitFor(2, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if r.Event.UserID != good {
			t.Errorf("Jimo got %s for %q, want only %s", r.Event.Type, r.Event.UserID, good)
		}
	}
	store, err := store.Open(context.Background(), b.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	jobs, err := store.Jobs(context.Background(), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, j := range jobs {
		if j.OrderingKey != good {
			t.Errorf("a %s job for %q was enqueued: %s", j.Destination, j.OrderingKey, j.Payload)
		}
		kinds[j.Destination]++
	}
	if kinds["jimo"] != 2 {
		t.Errorf("got jobs %v, want the sound user's identify and track for Jimo", kinds)
	}
	if p, ok := b.profile(t, "user_id:12345"); !ok || len(p.Warnings) == 0 {
		t.Errorf("guessable user: got %+v, want a profile warning why Jimo is not told", p)
	}
}
