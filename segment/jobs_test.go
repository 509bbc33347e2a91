package segment_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/segment"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

// t0 is when the test inputs were received.
var t0 = time.Date(2025, 11, 23, 12, 0, 0, 0, time.UTC)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkGolden compares got with testdata/segment/<name>, or rewrites it with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "segment", name)
	got = append(bytes.TrimSpace(got), '\n')
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\ngot  %s\nwant %s", name, got, want)
	}
}

// encodeJob renders a job for a golden file: the payload's bytes as built.
func encodeJob(t *testing.T, j mapping.Job) []byte {
	t.Helper()
	b, err := json.Marshal(struct {
		Destination string          `json:"destination"`
		OrderingKey string          `json:"orderingKey"`
		MessageID   string          `json:"messageId"`
		Payload     json.RawMessage `json:"payload"`
	}{j.Destination, j.OrderingKey, j.MessageID, j.Payload})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sessionMessage reports the session fixture name through jimo's real policy.
func sessionMessage(t *testing.T, name string, mode jimo.Mode) mapping.Message {
	t.Helper()
	secret := []byte("signing-secret")
	req, err := jimo.DecodeSession(readFixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	if mode == jimo.ModeDerived {
		req.Signature = jimo.Sign(secret, req.UserID)
	}
	sessions, err := jimo.NewSessions(jimo.SessionConfig{Mode: mode, SigningSecret: secret, TokenSecret: []byte("token-secret")})
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := sessions.Report(req, t0)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// webhookMessage decodes the Jimo webhook fixture name.
func webhookMessage(t *testing.T, name string, mode jimo.Mode) mapping.Message {
	t.Helper()
	w, err := jimo.DecodeWebhook(readFixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return w.Message(mode, mapping.Blocklist{}, t0)
}

// relayEvents decodes a Tracking API fixture as the handler does.
func relayEvents(t *testing.T, name, route string) []segment.Event {
	t.Helper()
	evs, err := segment.DecodeTrackingAPI(segment.Request{Route: route, WriteKey: "wk", ReceivedAt: t0}, readFixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func outgoing(t *testing.T, j mapping.Job) segment.Outgoing {
	t.Helper()
	var out segment.Outgoing
	if err := json.Unmarshal(j.Payload, &out); err != nil {
		t.Fatalf("payload does not decode: %v\n%s", err, j.Payload)
	}
	return out
}

func TestJobsGolden(t *testing.T) {
	batch := relayEvents(t, "segment/api_batch_analytics_go.json", "batch")
	tests := []struct {
		name  string
		build func(t *testing.T) (mapping.Job, bool)
		// what the job must say besides the golden bytes
		userID, token, anonymousID, key string
	}{
		{
			name: "forward_identify_session.golden.json",
			build: func(t *testing.T) (mapping.Job, bool) {
				return segment.IdentifyJob(sessionMessage(t, "jimo/session_shared.json", jimo.ModeShared))
			},
			userID: "0f8fad5b-d9cb-469f-a165-70867728950e", anonymousID: "6d2a4f1e-8c3b-4a5d-b7e9-0f1a2b3c4d5e",
			key: "0f8fad5b-d9cb-469f-a165-70867728950e",
		},
		{
			name: "forward_identify_session_derived.golden.json",
			build: func(t *testing.T) (mapping.Job, bool) {
				return segment.IdentifyJob(sessionMessage(t, "jimo/session_derived.json", jimo.ModeDerived))
			},
			userID: "42", anonymousID: "6d2a4f1e-8c3b-4a5d-b7e9-0f1a2b3c4d5e", key: "42",
		},
		{
			name: "forward_track_tour_completed.golden.json",
			build: func(t *testing.T) (mapping.Job, bool) {
				return jimoTrack(webhookMessage(t, "jimo/webhook_tour_completed.json", jimo.ModeShared))
			},
			// Shared mode: the identify token may be a legacy token; the forwarder resolves it.
			token: "0f8fad5b-d9cb-469f-a165-70867728950e", key: "0f8fad5b-d9cb-469f-a165-70867728950e",
		},
		{
			name: "forward_track_survey_derived.golden.json",
			build: func(t *testing.T) (mapping.Job, bool) {
				return jimoTrack(webhookMessage(t, "jimo/webhook_survey_answered.json", jimo.ModeDerived))
			},
			token: "7c9e6679-7425-40de-944b-e07fc1f90ae7", key: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
		},
		{
			name:   "forward_relay_identify.golden.json",
			build:  func(t *testing.T) (mapping.Job, bool) { return segment.RelayJob(batch[0].Message.Raw) },
			userID: "usr_2b7f9d1c4e6a8b0d", key: "usr_2b7f9d1c4e6a8b0d",
		},
		{
			name:   "forward_relay_track.golden.json",
			build:  func(t *testing.T) (mapping.Job, bool) { return segment.RelayJob(batch[1].Message.Raw) },
			userID: "usr_2b7f9d1c4e6a8b0d", key: "usr_2b7f9d1c4e6a8b0d",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, ok := tt.build(t)
			if !ok {
				t.Fatal("no job, want one")
			}
			checkGolden(t, tt.name, encodeJob(t, j))
			if j.Destination != segment.Destination {
				t.Errorf("destination %q, want %q", j.Destination, segment.Destination)
			}
			if j.OrderingKey != tt.key {
				t.Errorf("ordering key %q, want %q", j.OrderingKey, tt.key)
			}
			out := outgoing(t, j)
			if out.MessageID != j.MessageID {
				t.Errorf("payload messageId %q, job's %q", out.MessageID, j.MessageID)
			}
			if out.UserID != tt.userID || out.JimoToken != tt.token || out.AnonymousID != tt.anonymousID {
				t.Errorf("userId %q jimoToken %q anonymousId %q, want %q %q %q", out.UserID, out.JimoToken, out.AnonymousID, tt.userID, tt.token, tt.anonymousID)
			}
			if !segment.Forwarded(j.Payload) {
				t.Errorf("payload lacks the bridge marker: %s", j.Payload)
			}
			again, _ := tt.build(t)
			if again.MessageID != j.MessageID || !bytes.Equal(again.Payload, j.Payload) {
				t.Errorf("building twice gave %s then %s", j.MessageID, again.MessageID)
			}
		})
	}
}

func TestIdentifyJobContent(t *testing.T) {
	m := sessionMessage(t, "jimo/session_shared.json", jimo.ModeShared)
	j, ok := segment.IdentifyJob(m)
	if !ok {
		t.Fatal("no job")
	}
	out := outgoing(t, j)
	var traits map[string]any
	if err := json.Unmarshal(out.Traits, &traits); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro", "seats": 12.0} {
		if traits[k] != want {
			t.Errorf("traits[%q] = %v, want %v", k, traits[k], want)
		}
	}
	if want := segment.JobMessageID(segment.Destination, mapping.SourceJimoSession, m.ID, "identify"); j.MessageID != want {
		t.Errorf("message ID %q, want %q", j.MessageID, want)
	}
	if !strings.HasPrefix(j.MessageID, "bridge-") || len(j.MessageID) != len("bridge-")+32 {
		t.Errorf("message ID %q, want bridge- and 32 hex digits", j.MessageID)
	}
	if !out.Timestamp.Equal(t0) {
		t.Errorf("timestamp %v, want %v", out.Timestamp, t0)
	}
	var integrations map[string]bool
	if err := json.Unmarshal(out.Integrations, &integrations); err != nil || integrations["Jimo"] || integrations["Jimo (Actions)"] {
		t.Errorf("integrations %s, want Jimo destinations off", out.Integrations)
	}
}

func TestIdentifyJobRefuses(t *testing.T) {
	base := mapping.Message{Source: mapping.SourceJimoSession, ID: "s1", Type: "session", UserID: "u-0f8fad5b", AnonymousID: "a-1", Timestamp: t0}
	tests := []struct {
		name string
		edit func(m *mapping.Message)
		ok   bool
	}{
		{"session", func(m *mapping.Message) {}, true},
		{"token only", func(m *mapping.Message) { m.UserID, m.JimoToken = "", "tok" }, true},
		{"from the Segment webhook", func(m *mapping.Message) { m.Source = mapping.SourceSegmentWebhook }, false},
		{"from the Tracking API", func(m *mapping.Message) { m.Source = mapping.SourceSegmentAPI }, false},
		{"rejected", func(m *mapping.Message) { m.Rejected = "guessable_token" }, false},
		{"impersonating", func(m *mapping.Message) { m.Impersonating = true }, false},
		{"no anonymous ID", func(m *mapping.Message) { m.AnonymousID = " " }, false},
		{"no user", func(m *mapping.Message) { m.UserID = "" }, false},
		{"no message ID", func(m *mapping.Message) { m.ID = "" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base
			tt.edit(&m)
			if _, ok := segment.IdentifyJob(m); ok != tt.ok {
				t.Errorf("ok = %v, want %v", ok, tt.ok)
			}
		})
	}
}

// jimoTrack builds the Segment track of a Jimo webhook message as the
// bridge's forwarding does: named and given properties by the jimo package.
func jimoTrack(m mapping.Message) (mapping.Job, bool) {
	return segment.TrackJob(m, jimo.TrackName(m.Event), jimo.WebhookProperties(m.Raw))
}

func TestTrackJob(t *testing.T) {
	m := webhookMessage(t, "jimo/webhook_tour_completed.json", jimo.ModeShared)
	t.Run("properties", func(t *testing.T) {
		j, ok := jimoTrack(m)
		if !ok {
			t.Fatal("no job")
		}
		out := outgoing(t, j)
		if out.Event != "Jimo Tour Completed" {
			t.Errorf("event %q, want Jimo Tour Completed", out.Event)
		}
		var props map[string]any
		if err := json.Unmarshal(out.Properties, &props); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"event": "tour.completed", "version": "0", "experience_id": "8f0c6f7e-3b1a-4c55-9a51-0d8b5d1f2e11",
			"experience_name": "Welcome tour", "experience_type": "TOUR",
		}
		if len(props) != len(want) {
			t.Errorf("properties %v, want %v", props, want)
		}
		for k, v := range want {
			if props[k] != v {
				t.Errorf("properties[%q] = %v, want %v", k, props[k], v)
			}
		}
		if want := time.UnixMilli(1763900000123).UTC(); !out.Timestamp.Equal(want) {
			t.Errorf("timestamp %v, want the webhook's time %v", out.Timestamp, want)
		}
	})
	t.Run("given name and properties", func(t *testing.T) {
		j, ok := segment.TrackJob(m, "Tour Done", map[string]any{"n": 1})
		if !ok {
			t.Fatal("no job")
		}
		out := outgoing(t, j)
		if out.Event != "Tour Done" || string(out.Properties) != `{"n":1}` {
			t.Errorf("event %q properties %s, want Tour Done {\"n\":1}", out.Event, out.Properties)
		}
	})
	t.Run("identify and track of one message differ", func(t *testing.T) {
		tr, _ := jimoTrack(m)
		m2 := m
		m2.AnonymousID = "a-1"
		id, _ := segment.IdentifyJob(m2)
		if tr.MessageID == id.MessageID {
			t.Errorf("identify and track share message ID %s", tr.MessageID)
		}
	})
	refusals := []struct {
		name string
		m    mapping.Message
	}{
		{"missing identify token", webhookMessage(t, "jimo/webhook_missing_token.json", jimo.ModeShared)},
		{"from Segment", mapping.Message{Source: mapping.SourceSegmentWebhook, ID: "x", UserID: "u", Event: "tour.completed"}},
		{"no event", mapping.Message{Source: mapping.SourceJimoWebhook, ID: "x", UserID: "u"}},
		{"impersonating", mapping.Message{Source: mapping.SourceJimoWebhook, ID: "x", UserID: "u", Event: "e", Impersonating: true}},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := jimoTrack(tt.m); ok {
				t.Error("ok = true, want no job")
			}
		})
	}
}

func TestRelayJob(t *testing.T) {
	evs := relayEvents(t, "segment/api_track_offsets.json", "track")
	j, ok := segment.RelayJob(evs[0].Message.Raw)
	if !ok {
		t.Fatal("no job")
	}
	out := outgoing(t, j)
	var raw map[string]any
	if err := json.Unmarshal(evs[0].Message.Raw, &raw); err != nil {
		t.Fatal(err)
	}
	if out.MessageID != raw["messageId"] || j.MessageID != out.MessageID {
		t.Errorf("relay message ID %q (job %q), want the original %v", out.MessageID, j.MessageID, raw["messageId"])
	}
	ts, err := time.Parse(time.RFC3339Nano, raw["timestamp"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if !out.Timestamp.Equal(ts) {
		t.Errorf("timestamp %v, want %v", out.Timestamp, ts)
	}
	// The relayed message, fed back to the bridge, is recognised.
	if !segment.Forwarded(j.Payload) {
		t.Error("relay payload lacks the marker")
	}
	if _, ok := segment.RelayJob(j.Payload); ok {
		t.Error("relaying a relayed message: ok = true, want false")
	}

	refusals := []struct{ name, raw string }{
		{"not JSON", `{"type":`},
		{"array", `[{"type":"track"}]`},
		{"marked", `{"type":"track","event":"e","userId":"u","messageId":"m","timestamp":"2024-05-14T09:02:00Z","context":{"bridge":{"forwarded":true}}}`},
		{"delete", `{"type":"delete","userId":"u","messageId":"m","timestamp":"2024-05-14T09:02:00Z"}`},
		{"no message ID", `{"type":"track","event":"e","userId":"u","timestamp":"2024-05-14T09:02:00Z"}`},
		{"no timestamp", `{"type":"track","event":"e","userId":"u","messageId":"m"}`},
		{"track without event", `{"type":"track","userId":"u","messageId":"m","timestamp":"2024-05-14T09:02:00Z"}`},
		{"nobody", `{"type":"identify","messageId":"m","timestamp":"2024-05-14T09:02:00Z"}`},
		{"alias without previousId", `{"type":"alias","userId":"u","messageId":"m","timestamp":"2024-05-14T09:02:00Z"}`},
		{"group without groupId", `{"type":"group","userId":"u","messageId":"m","timestamp":"2024-05-14T09:02:00Z"}`},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := segment.RelayJob(json.RawMessage(tt.raw)); ok {
				t.Error("ok = true, want no job")
			}
		})
	}
	accepted := []struct{ name, raw, key string }{
		{"anonymous page", `{"type":"page","name":"Home","anonymousId":"a","messageId":"m","timestamp":"2024-05-14T09:02:00+02:00"}`, "a"},
		{"alias", `{"type":"alias","userId":"u","previousId":"a","messageId":"m","timestamp":"2024-05-14T09:02:00Z"}`, "u"},
		{"existing bridge context", `{"type":"screen","userId":"u","messageId":"m","timestamp":"2024-05-14T09:02:00Z","context":{"bridge":{"hop":1}}}`, "u"},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			j, ok := segment.RelayJob(json.RawMessage(tt.raw))
			if !ok {
				t.Fatal("no job")
			}
			if j.OrderingKey != tt.key || !segment.Forwarded(j.Payload) {
				t.Errorf("key %q marker %v, want %q true: %s", j.OrderingKey, segment.Forwarded(j.Payload), tt.key, j.Payload)
			}
		})
	}
}
