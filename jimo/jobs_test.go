package jimo_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/segment"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

var t0 = time.Date(2025, 11, 23, 12, 0, 0, 0, time.UTC)

var tokenSecret = []byte("token-secret")

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkGolden compares got with testdata/jimo/<name>, or rewrites it with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "jimo", name)
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

// segmentMessage decodes a Segment webhook delivery fixture as the bridge does.
func segmentMessage(t testing.TB, name string) mapping.Message {
	t.Helper()
	evs, err := segment.DecodeWebhook(readFixture(t, name), t0)
	if err != nil {
		t.Fatal(err)
	}
	return evs[0].Message
}

func TestJobsGolden(t *testing.T) {
	identify := segmentMessage(t, "segment/webhook_identify.json")
	track := segmentMessage(t, "segment/webhook_track.json")
	tests := []struct {
		name   string
		build  func() (mapping.Job, bool)
		userID string
	}{
		{"sse_identify_shared.golden.json", func() (mapping.Job, bool) { return jimo.IdentifyJob(identify, jimo.ModeShared, nil) }, "usr_2b7f9d1c4e6a8b0d"},
		{"sse_identify_derived.golden.json", func() (mapping.Job, bool) { return jimo.IdentifyJob(identify, jimo.ModeDerived, tokenSecret) },
			jimo.DeriveToken(tokenSecret, "usr_2b7f9d1c4e6a8b0d")},
		{"sse_track_shared.golden.json", func() (mapping.Job, bool) { return jimo.TrackJob(track, jimo.ModeShared, nil) }, "usr_2b7f9d1c4e6a8b0d"},
		{"sse_track_derived.golden.json", func() (mapping.Job, bool) { return jimo.TrackJob(track, jimo.ModeDerived, tokenSecret) },
			jimo.DeriveToken(tokenSecret, "usr_2b7f9d1c4e6a8b0d")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, ok := tt.build()
			if !ok {
				t.Fatal("no job, want one")
			}
			// The golden file holds the exact body sent to Jimo; the rest is checked here.
			checkGolden(t, tt.name, j.Payload)
			if j.Destination != jimo.Destination || j.OrderingKey != "usr_2b7f9d1c4e6a8b0d" {
				t.Errorf("destination %q key %q, want %q usr_2b7f9d1c4e6a8b0d", j.Destination, j.OrderingKey, jimo.Destination)
			}
			if !strings.HasPrefix(j.MessageID, "bridge-") || len(j.MessageID) != 39 {
				t.Errorf("message ID %q, want bridge- and 32 hex digits", j.MessageID)
			}
			var body struct {
				UserID string `json:"userId"`
			}
			if err := json.Unmarshal(j.Payload, &body); err != nil || body.UserID != tt.userID {
				t.Errorf("userId %q (%v), want %q", body.UserID, err, tt.userID)
			}
			again, _ := tt.build()
			if again.MessageID != j.MessageID || !bytes.Equal(again.Payload, j.Payload) {
				t.Errorf("building twice gave %s then %s", j.MessageID, again.MessageID)
			}
		})
	}
	a, _ := jimo.IdentifyJob(identify, jimo.ModeShared, nil)
	b, _ := jimo.TrackJob(track, jimo.ModeShared, nil)
	c, _ := jimo.IdentifyJob(identify, jimo.ModeDerived, tokenSecret)
	if a.MessageID == b.MessageID || a.MessageID != c.MessageID {
		t.Errorf("message IDs: identify %s, track %s, derived identify %s; want identify IDs equal (same message), track's different", a.MessageID, b.MessageID, c.MessageID)
	}
}

func TestIdentifyJobRefuses(t *testing.T) {
	base := segmentMessage(t, "segment/webhook_identify.json")
	tests := []struct {
		name   string
		edit   func(m *mapping.Message)
		mode   jimo.Mode
		secret []byte
		ok     bool
	}{
		{"identify", func(m *mapping.Message) {}, jimo.ModeShared, nil, true},
		{"no user ID", func(m *mapping.Message) { m.UserID = "" }, jimo.ModeShared, nil, false},
		{"blank user ID", func(m *mapping.Message) { m.UserID = "  " }, jimo.ModeShared, nil, false},
		{"track", func(m *mapping.Message) { m.Type = "track" }, jimo.ModeShared, nil, false},
		// Echoes, rejected, impersonated and guessable messages are the
		// forwarding policy's to refuse (cmd/bridge forwarding.allow): the
		// builder translates what it is given.
		{"derived mode", func(m *mapping.Message) {}, jimo.ModeDerived, tokenSecret, true},
		{"derived without secret", func(m *mapping.Message) {}, jimo.ModeDerived, nil, false},
		{"no message ID", func(m *mapping.Message) { m.ID = "" }, jimo.ModeShared, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base
			tt.edit(&m)
			if _, ok := jimo.IdentifyJob(m, tt.mode, tt.secret); ok != tt.ok {
				t.Errorf("ok = %v, want %v", ok, tt.ok)
			}
		})
	}
}

func TestIdentifyJobTraits(t *testing.T) {
	m := mapping.Message{
		Source: mapping.SourceSegmentAPI, ID: "m1", Type: "identify", UserID: "u-1", Email: "ada@example.com",
		Traits:    map[string]any{"address": map[string]any{"city": "Paris"}, "tags": []any{"a", nil}, "gone": nil},
		Timestamp: time.Date(2024, 5, 14, 11, 21, 8, 25_000_000, time.FixedZone("CEST", 2*3600)),
	}
	j, ok := jimo.IdentifyJob(m, jimo.ModeShared, nil)
	if !ok {
		t.Fatal("no job")
	}
	want := `{"userId":"u-1","type":"identify","timestamp":"2024-05-14T09:21:08.025Z","traits":{"address.city":"Paris","email":"ada@example.com","tags":["a"]}}`
	if string(j.Payload) != want {
		t.Errorf("payload\ngot  %s\nwant %s", j.Payload, want)
	}
	m.Traits = nil
	m.Email = ""
	j, _ = jimo.IdentifyJob(m, jimo.ModeShared, nil)
	if !strings.Contains(string(j.Payload), `"traits":{}`) {
		t.Errorf("no traits: payload %s, want traits {}", j.Payload)
	}
}

func TestTrackJob(t *testing.T) {
	m := mapping.Message{
		Source: mapping.SourceSegmentWebhook, ID: "m2", Type: "track", UserID: "u-1", Event: "Report Exported", Timestamp: t0,
		Raw: json.RawMessage(`{"properties":{"rows":12345678901234567890,"filter":{"from":"2024"},"none":null}}`),
	}
	j, ok := jimo.TrackJob(m, jimo.ModeShared, nil)
	if !ok {
		t.Fatal("no job")
	}
	want := `{"userId":"u-1","type":"track","timestamp":"2025-11-23T12:00:00.000Z","event":"Report Exported","properties":{"filter.from":"2024","rows":12345678901234567890}}`
	if string(j.Payload) != want {
		t.Errorf("payload\ngot  %s\nwant %s", j.Payload, want)
	}
	for _, tt := range []struct {
		name string
		edit func(m *mapping.Message)
	}{
		{"no event", func(m *mapping.Message) { m.Event = "" }},
		{"identify", func(m *mapping.Message) { m.Type = "identify" }},
		{"anonymous", func(m *mapping.Message) { m.UserID = "" }},
		{"no message ID", func(m *mapping.Message) { m.ID = "" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m2 := m
			tt.edit(&m2)
			if _, ok := jimo.TrackJob(m2, jimo.ModeShared, nil); ok {
				t.Error("ok = true, want no job")
			}
		})
	}
	m.Raw = json.RawMessage(`{"properties":"not an object"}`)
	j, ok = jimo.TrackJob(m, jimo.ModeShared, nil)
	if !ok || strings.Contains(string(j.Payload), "properties") {
		t.Errorf("bad properties: ok %v payload %s, want a track without properties", ok, j.Payload)
	}
}

func TestCleanTraits(t *testing.T) {
	long := strings.Repeat("é", 701)
	tests := []struct {
		name string
		in   map[string]any
		want map[string]any
	}{
		{"nil", nil, map[string]any{}},
		{"scalars", map[string]any{"s": "x", "f": 1.5, "i": 3, "b": false, "n": json.Number("12345678901234567890")},
			map[string]any{"s": "x", "f": 1.5, "i": 3, "b": false, "n": json.Number("12345678901234567890")}},
		{"nulls dropped", map[string]any{"a": nil, "b": "y"}, map[string]any{"b": "y"}},
		{"nested flattened", map[string]any{"address": map[string]any{"city": "Paris", "geo": map[string]any{"lat": 48.8}}},
			map[string]any{"address.city": "Paris", "address.geo.lat": 48.8}},
		{"long string cut to 700 characters", map[string]any{"bio": long}, map[string]any{"bio": strings.Repeat("é", 700)}},
		{"exactly 700 kept", map[string]any{"bio": long[:1400]}, map[string]any{"bio": long[:1400]}},
		{"arrays of scalars", map[string]any{"tags": []any{"a", 2.0, true, nil, map[string]any{"x": 1}, []any{"y"}, long}},
			map[string]any{"tags": []any{"a", 2.0, true, strings.Repeat("é", 700)}}},
		{"string slices", map[string]any{"roles": []string{"admin", "dev"}}, map[string]any{"roles": []any{"admin", "dev"}}},
		{"empty array kept", map[string]any{"tags": []any{}}, map[string]any{"tags": []any{}}},
		{"array of objects dropped", map[string]any{"items": []any{map[string]any{"id": 1}}}, map[string]any{}},
		{"NaN and infinities dropped", map[string]any{"a": math.NaN(), "b": math.Inf(1), "c": 0.0}, map[string]any{"c": 0.0}},
		{"email kept", map[string]any{"email": "ada@example.com"}, map[string]any{"email": "ada@example.com"}},
		{"literal dotted key wins", map[string]any{"a.b": "literal", "a": map[string]any{"b": "nested", "c": "kept"}},
			map[string]any{"a.b": "literal", "a.c": "kept"}},
		{"raw JSON values decoded", map[string]any{"r": json.RawMessage(`{"x":[1,"y"]}`)}, map[string]any{"r.x": []any{json.Number("1"), "y"}}},
		{"other types dropped", map[string]any{"t": time.Now(), "c": make(chan int)}, map[string]any{}},
		{"empty object vanishes", map[string]any{"o": map[string]any{}}, map[string]any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := jimo.CleanTraits(tt.in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
	t.Run("input untouched", func(t *testing.T) {
		in := map[string]any{"o": map[string]any{"k": long}}
		jimo.CleanTraits(in)
		if in["o"].(map[string]any)["k"] != long {
			t.Error("CleanTraits modified its input")
		}
	})
	t.Run("deep nesting bounded", func(t *testing.T) {
		deep := map[string]any{"v": 1.0}
		for range 100 {
			deep = map[string]any{"n": deep}
		}
		got := jimo.CleanTraits(deep)
		if len(got) != 0 {
			t.Errorf("got %d keys from 100 levels of nesting, want none past the depth limit", len(got))
		}
	})
}
