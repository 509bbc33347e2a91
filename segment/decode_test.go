package segment

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

var receivedAt = time.Date(2024, 5, 14, 9, 0, 10, 0, time.UTC)

func decode(t testing.TB, route, writeKey, body string) []Event {
	t.Helper()
	events, err := DecodeTrackingAPI(Request{Route: route, WriteKey: writeKey, ReceivedAt: receivedAt}, []byte(body))
	if err != nil {
		t.Fatalf("DecodeTrackingAPI(%s, %s): %v", route, truncate(body, 200), err)
	}
	return events
}

func decodeOne(t testing.TB, route, body string) mapping.Message {
	t.Helper()
	events := decode(t, route, "wk", body)
	if len(events) != 1 {
		t.Fatalf("got %d events, want 1", len(events))
	}
	return events[0].Message
}

// rawFields decodes a message's Raw into its top-level fields.
func rawFields(t testing.TB, raw []byte) map[string]any {
	t.Helper()
	var f map[string]any
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("Raw is not a JSON object: %v: %s", err, raw)
	}
	return f
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "segment", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRoutes(t *testing.T) {
	body := `{"userId":"u1","previousId":"anon-1","event":"Clicked","name":"Home","messageId":"m1"}`
	tests := []struct {
		route, wantType, wantEvent string
	}{
		{"identify", "identify", ""},
		{"i", "identify", ""},
		{"track", "track", "Clicked"},
		{"t", "track", "Clicked"},
		{"page", "page", "Home"},
		{"p", "page", "Home"},
		{"screen", "screen", "Home"},
		{"s", "screen", "Home"},
		{"group", "group", ""},
		{"g", "group", ""},
		{"alias", "alias", ""},
		{"a", "alias", ""},
	}
	for _, tt := range tests {
		t.Run(tt.route, func(t *testing.T) {
			m := decodeOne(t, tt.route, body)
			if m.Type != tt.wantType {
				t.Errorf("got type %q, want %q", m.Type, tt.wantType)
			}
			if m.Event != tt.wantEvent {
				t.Errorf("got event %q, want %q", m.Event, tt.wantEvent)
			}
			if m.Rejected != "" {
				t.Errorf("got rejected %q, want none", m.Rejected)
			}
			if m.Source != mapping.SourceSegmentAPI {
				t.Errorf("got source %q, want %q", m.Source, mapping.SourceSegmentAPI)
			}
			if m.ID != "m1" || m.UserID != "u1" {
				t.Errorf("got ID %q, user ID %q, want m1, u1", m.ID, m.UserID)
			}
			wantPrevious := ""
			if tt.wantType == "alias" {
				wantPrevious = "anon-1"
			}
			if m.PreviousID != wantPrevious {
				t.Errorf("got previous ID %q, want %q", m.PreviousID, wantPrevious)
			}
			if got := rawFields(t, m.Raw)["type"]; got != tt.wantType {
				t.Errorf("got Raw type %v, want %q", got, tt.wantType)
			}
		})
	}
	for _, route := range []string{"batch", "import", "b"} {
		t.Run(route, func(t *testing.T) {
			events := decode(t, route, "wk", `{"batch":[{"type":"track","event":"A","userId":"u1"},{"type":"identify","userId":"u1"},{"type":"delete","userId":"u1"}]}`)
			var got []string
			for _, ev := range events {
				got = append(got, ev.Message.Type)
			}
			if want := []string{"track", "identify", "delete"}; !reflect.DeepEqual(got, want) {
				t.Errorf("got types %v, want %v", got, want)
			}
		})
	}
	t.Run("unknown route", func(t *testing.T) {
		_, err := DecodeTrackingAPI(Request{Route: "delete", ReceivedAt: receivedAt}, []byte(`{}`))
		if code := errorCode(err); code != mapping.CodeNotFound {
			t.Errorf("got error %v, want code not_found", err)
		}
	})
}

func TestDecodeRouteWinsOverType(t *testing.T) {
	tests := []struct{ name, body string }{
		{"contradicting type", `{"type":"track","userId":"u1"}`},
		{"missing type", `{"userId":"u1"}`},
		{"type of the wrong JSON type", `{"type":7,"userId":"u1"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := decodeOne(t, "identify", tt.body)
			if m.Type != "identify" || m.Rejected != "" {
				t.Errorf("got type %q, rejected %q, want identify, none", m.Type, m.Rejected)
			}
			if got := rawFields(t, m.Raw)["type"]; got != "identify" {
				t.Errorf("got Raw type %v, want identify", got)
			}
		})
	}
}

func TestDecodeFixtures(t *testing.T) {
	t.Run("analytics-go batch", func(t *testing.T) {
		events := decode(t, "batch", "wk", string(readTestdata(t, "api_batch_analytics_go.json")))
		if len(events) != 2 {
			t.Fatalf("got %d events, want 2", len(events))
		}
		id := events[0].Message
		if id.Type != "identify" || id.UserID != "usr_2b7f9d1c4e6a8b0d" || id.Email != "ada@example.com" || id.Traits["name"] != "Ada Lovelace" {
			t.Errorf("got %+v, want the identify of Ada", id)
		}
		for i, ev := range events {
			ctx := rawFields(t, ev.Message.Raw)["context"].(map[string]any)
			if lib, _ := ctx["library"].(map[string]any); lib["name"] != "analytics-go" {
				t.Errorf("event %d: got context %v, want the batch's library merged in", i, ctx)
			}
		}
		if ip := rawFields(t, events[1].Message.Raw)["context"].(map[string]any)["ip"]; ip != "198.51.100.4" {
			t.Errorf("got context.ip %v, want the event's 198.51.100.4", ip)
		}
	})
	t.Run("analytics.js identify with the write key in the body", func(t *testing.T) {
		events := decode(t, "identify", "", string(readTestdata(t, "api_identify_analytics_js.json")))
		ev := events[0]
		if ev.WriteKey != "wk_browser_public" {
			t.Errorf("got write key %q, want wk_browser_public", ev.WriteKey)
		}
		if _, ok := rawFields(t, ev.Message.Raw)["writeKey"]; ok {
			t.Errorf("got writeKey in Raw, want it removed")
		}
		if ev.Message.AnonymousID != "3f1a2b9c-6d7e-4f80-9a1b-2c3d4e5f6a7b" || ev.Message.Email != "ada@example.com" {
			t.Errorf("got %+v, want anonymous ID and email from the body", ev.Message)
		}
	})
	t.Run("numeric user ID and offsets", func(t *testing.T) {
		m := decodeOne(t, "track", string(readTestdata(t, "api_track_offsets.json")))
		if m.UserID != "42" {
			t.Errorf("got user ID %q, want 42", m.UserID)
		}
		if got := rawFields(t, m.Raw)["userId"]; got != "42" {
			t.Errorf("got Raw userId %#v, want the string \"42\"", got)
		}
		// sentAt - timestamp = 5 s, so the event happened 5 s before receivedAt.
		if want := receivedAt.Add(-5 * time.Second); !m.Timestamp.Equal(want) {
			t.Errorf("got timestamp %v, want %v", m.Timestamp, want)
		}
	})
}

func TestDecodeWriteKeyPrecedence(t *testing.T) {
	body := `{"writeKey":"wk_batch","batch":[{"type":"track","event":"A","userId":"u","writeKey":"wk_event"},{"type":"track","event":"B","userId":"u"}]}`
	tests := []struct {
		name, header string
		want         []string
	}{
		{"header wins", "wk_header", []string{"wk_header", "wk_header"}},
		{"event, else batch", "", []string{"wk_event", "wk_batch"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, ev := range decode(t, "batch", tt.header, body) {
				got = append(got, ev.WriteKey)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecodeBatchContextMerge(t *testing.T) {
	body := `{"batch":[
		{"type":"track","event":"A","userId":"u","context":{"ip":"2.2.2.2","page":{"title":"Event"},"traits":{"plan":"team"}},"integrations":{"Mixpanel":false}},
		{"type":"track","event":"B","userId":"u"},
		{"type":"track","event":"C","userId":"u","context":null}
	],"context":{"library":{"name":"analytics-go","version":"3.3.0"},"ip":"1.1.1.1","page":{"title":"Batch","url":"https://x"}},"integrations":{"All":true,"Mixpanel":true}}`
	events := decode(t, "batch", "wk", body)
	type want struct{ context, integrations string }
	wants := []want{
		{
			context:      `{"ip":"2.2.2.2","library":{"name":"analytics-go","version":"3.3.0"},"page":{"title":"Event","url":"https://x"},"traits":{"plan":"team"}}`,
			integrations: `{"All":true,"Mixpanel":false}`,
		},
		{
			context:      `{"ip":"1.1.1.1","library":{"name":"analytics-go","version":"3.3.0"},"page":{"title":"Batch","url":"https://x"}}`,
			integrations: `{"All":true,"Mixpanel":true}`,
		},
		{
			context:      `{"ip":"1.1.1.1","library":{"name":"analytics-go","version":"3.3.0"},"page":{"title":"Batch","url":"https://x"}}`,
			integrations: `{"All":true,"Mixpanel":true}`,
		},
	}
	for i, ev := range events {
		var f map[string]json.RawMessage
		if err := json.Unmarshal(ev.Message.Raw, &f); err != nil {
			t.Fatal(err)
		}
		if got := string(f["context"]); got != wants[i].context {
			t.Errorf("event %d: got context %s, want %s", i, got, wants[i].context)
		}
		if got := string(f["integrations"]); got != wants[i].integrations {
			t.Errorf("event %d: got integrations %s, want %s", i, got, wants[i].integrations)
		}
	}
	if got := events[0].Message.Traits["plan"]; got != "team" {
		t.Errorf("got traits %v, want context.traits of the track", events[0].Message.Traits)
	}
}

func TestDecodeTimestamps(t *testing.T) {
	tests := []struct {
		name, body, batchSentAt string
		want                    time.Time
		wantOriginal            any // the Raw originalTimestamp; nil when absent
	}{
		{
			name:         "skew corrected, positive offsets",
			body:         `{"timestamp":"2024-05-14T11:00:00.250+02:00","sentAt":"2024-05-14T11:00:05.250+02:00"}`,
			want:         receivedAt.Add(-5 * time.Second),
			wantOriginal: "2024-05-14T11:00:00.250+02:00",
		},
		{
			name:         "skew corrected, different offsets on both",
			body:         `{"timestamp":"2024-05-14T02:00:00-07:00","sentAt":"2024-05-14T09:01:00Z"}`,
			want:         receivedAt.Add(-time.Minute),
			wantOriginal: "2024-05-14T02:00:00-07:00",
		},
		{
			name:         "client clock an hour ahead",
			body:         `{"timestamp":"2024-05-14T10:00:08Z","sentAt":"2024-05-14T10:00:09.5Z"}`,
			want:         receivedAt.Add(-1500 * time.Millisecond),
			wantOriginal: "2024-05-14T10:00:08Z",
		},
		{
			name:         "nanosecond fractions",
			body:         `{"timestamp":"2024-05-14T09:00:00.123456789Z","sentAt":"2024-05-14T09:00:01Z"}`,
			want:         receivedAt.Add(-876543211 * time.Nanosecond),
			wantOriginal: "2024-05-14T09:00:00.123456789Z",
		},
		{
			name:         "batch sentAt",
			body:         `{"timestamp":"2024-05-14T09:00:00Z"}`,
			batchSentAt:  "2024-05-14T09:00:02Z",
			want:         receivedAt.Add(-2 * time.Second),
			wantOriginal: "2024-05-14T09:00:00Z",
		},
		{
			name:         "event sentAt wins over the batch's",
			body:         `{"timestamp":"2024-05-14T09:00:00Z","sentAt":"2024-05-14T09:00:03Z"}`,
			batchSentAt:  "2024-05-14T09:00:02Z",
			want:         receivedAt.Add(-3 * time.Second),
			wantOriginal: "2024-05-14T09:00:00Z",
		},
		{
			name:         "originalTimestamp when timestamp is missing",
			body:         `{"originalTimestamp":"2024-05-14T09:00:00Z","sentAt":"2024-05-14T09:00:04Z"}`,
			want:         receivedAt.Add(-4 * time.Second),
			wantOriginal: "2024-05-14T09:00:00Z",
		},
		{
			name:         "no sentAt: the original timestamp",
			body:         `{"timestamp":"2024-05-13T08:00:00+01:00"}`,
			want:         time.Date(2024, 5, 13, 7, 0, 0, 0, time.UTC),
			wantOriginal: "2024-05-13T08:00:00+01:00",
		},
		{
			name: "no timestamp: receivedAt",
			body: `{"sentAt":"2024-05-14T09:00:04Z"}`,
			want: receivedAt,
		},
		{
			name:         "corrected into the future: clamped",
			body:         `{"timestamp":"2024-05-14T09:00:10Z","sentAt":"2024-05-14T09:00:00Z"}`,
			want:         receivedAt,
			wantOriginal: "2024-05-14T09:00:10Z",
		},
		{
			name:         "uncorrected future: clamped",
			body:         `{"timestamp":"2030-01-01T00:00:00Z"}`,
			want:         receivedAt,
			wantOriginal: "2030-01-01T00:00:00Z",
		},
		{
			name:         "not RFC 3339: receivedAt, original kept",
			body:         `{"timestamp":"yesterday","sentAt":"2024-05-14T09:00:04Z"}`,
			want:         receivedAt,
			wantOriginal: "yesterday",
		},
		{
			name:         "no offset: UTC, as Segment reads it",
			body:         `{"timestamp":"2024-05-14T09:00:00","sentAt":"2024-05-14T09:00:04Z"}`,
			want:         receivedAt.Add(-4 * time.Second),
			wantOriginal: "2024-05-14T09:00:00",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			event := strings.Replace(tt.body, "{", `{"type":"track","event":"E","userId":"u",`, 1)
			body := `{"batch":[` + event + `]`
			if tt.batchSentAt != "" {
				body += `,"sentAt":"` + tt.batchSentAt + `"`
			}
			body += "}"
			m := decode(t, "batch", "wk", body)[0].Message
			if !m.Timestamp.Equal(tt.want) {
				t.Errorf("got timestamp %v, want %v", m.Timestamp, tt.want)
			}
			if m.Timestamp.Location() != time.UTC {
				t.Errorf("got location %v, want UTC", m.Timestamp.Location())
			}
			if !m.ReceivedAt.Equal(receivedAt) {
				t.Errorf("got receivedAt %v, want %v", m.ReceivedAt, receivedAt)
			}
			f := rawFields(t, m.Raw)
			if got, want := f["timestamp"], tt.want.Format(time.RFC3339Nano); got != want {
				t.Errorf("got Raw timestamp %v, want %v", got, want)
			}
			if got, want := f["receivedAt"], receivedAt.Format(time.RFC3339Nano); got != want {
				t.Errorf("got Raw receivedAt %v, want %v", got, want)
			}
			if got := f["originalTimestamp"]; got != tt.wantOriginal {
				t.Errorf("got Raw originalTimestamp %v, want %v", got, tt.wantOriginal)
			}
			if tt.batchSentAt != "" && f["sentAt"] == nil {
				t.Errorf("got no Raw sentAt, want the batch's copied in")
			}
		})
	}
}

func TestDecodeMessageID(t *testing.T) {
	const event = `{"type":"track","event":"A","userId":"u1","timestamp":"2024-05-14T09:00:00Z"}`
	idOf := func(writeKey, event string) string {
		return decode(t, "batch", writeKey, `{"batch":[`+event+`]}`)[0].Message.ID
	}
	first := idOf("wk", event)
	if !strings.HasPrefix(first, "bridge-") || len(first) != len("bridge-")+32 {
		t.Fatalf("got ID %q, want bridge- and 32 hex characters", first)
	}
	if again := idOf("wk", event); again != first {
		t.Errorf("same request again: got ID %q, want %q", again, first)
	}
	if other := idOf("wk_other", event); other == first {
		t.Errorf("another write key: got the same ID %q, want a different one", other)
	}
	if other := idOf("wk", strings.Replace(event, "u1", "u2", 1)); other == first {
		t.Errorf("another event: got the same ID %q, want a different one", other)
	}
	single := decodeOne(t, "track", event)
	if single.ID == "" || single.ID != decodeOne(t, "t", event).ID {
		t.Errorf("single call: got IDs that differ between retries")
	}
	m := decode(t, "batch", "wk", `{"batch":[`+event+`]}`)[0].Message
	if got := rawFields(t, m.Raw)["messageId"]; got != m.ID {
		t.Errorf("got Raw messageId %v, want %q", got, m.ID)
	}
	if got := decodeOne(t, "track", `{"event":"A","userId":"u1","messageId":""}`).ID; !strings.HasPrefix(got, "bridge-") {
		t.Errorf("empty messageId: got ID %q, want one assigned", got)
	}
	if got := decodeOne(t, "track", `{"event":"A","userId":"u1","messageId":"ajs-1"}`).ID; got != "ajs-1" {
		t.Errorf("got ID %q, want ajs-1 kept", got)
	}
}

func TestDecodeRejected(t *testing.T) {
	long := strings.Repeat("x", mapping.MaxIdentifierLength+1)
	tests := []struct {
		name, event string
		want        string
	}{
		{"valid", `{"type":"identify","userId":"u1"}`, ""},
		{"anonymous only", `{"type":"page","anonymousId":"a1"}`, ""},
		{"no identity", `{"type":"identify","traits":{"email":"a@b.c"}}`, ReasonMissingIdentity},
		{"empty identities", `{"type":"identify","userId":"","anonymousId":null}`, ReasonMissingIdentity},
		{"blank identities", `{"type":"identify","userId":"  ","anonymousId":"\t"}`, ReasonMissingIdentity},
		{"userId object", `{"type":"identify","userId":{"id":1}}`, ReasonBadUserIDType},
		{"userId array", `{"type":"identify","userId":["u"]}`, ReasonBadUserIDType},
		{"userId boolean", `{"type":"identify","userId":true}`, ReasonBadUserIDType},
		{"anonymousId object", `{"type":"identify","userId":"u","anonymousId":{}}`, ReasonBadAnonymousIDType},
		{"previousId object", `{"type":"alias","userId":"u","previousId":{}}`, ReasonBadPreviousIDType},
		{"alias without previousId", `{"type":"alias","userId":"u"}`, ReasonMissingPreviousID},
		{"userId over 400 characters", `{"type":"identify","userId":"` + long + `"}`, ReasonIDTooLong},
		{"anonymousId over 400 characters", `{"type":"identify","userId":"u","anonymousId":"` + long + `"}`, ReasonIDTooLong},
		{"userId of 400 multi-byte characters", `{"type":"identify","userId":"` + strings.Repeat("é", 400) + `"}`, ""},
		{"NUL in userId", `{"type":"identify","userId":"u\u00001"}`, ReasonIDControl},
		{"newline in anonymousId", `{"type":"identify","anonymousId":"a\n1"}`, ReasonIDControl},
		{"messageId over 100 bytes", `{"type":"identify","userId":"u","messageId":"` + strings.Repeat("m", 101) + `"}`, ReasonMessageIDTooLong},
		{"messageId of 100 bytes", `{"type":"identify","userId":"u","messageId":"` + strings.Repeat("m", 100) + `"}`, ""},
		{"messageId number", `{"type":"identify","userId":"u","messageId":12}`, ReasonBadMessageIDType},
		{"unknown type", `{"type":"purchase","userId":"u"}`, ReasonUnknownType},
		{"missing type", `{"userId":"u"}`, ReasonUnknownType},
		{"type number", `{"type":1,"userId":"u"}`, ReasonUnknownType},
		{"track without event", `{"type":"track","userId":"u"}`, ReasonMissingEvent},
		{"track with a blank event", `{"type":"track","userId":"u","event":" "}`, ReasonMissingEvent},
		{"context string", `{"type":"identify","userId":"u","context":"x"}`, ReasonBadContext},
		{"traits string", `{"type":"identify","userId":"u","traits":"x"}`, ReasonBadTraits},
		{"context.traits array", `{"type":"track","event":"E","userId":"u","context":{"traits":["x"]}}`, ReasonBadTraits},
		{"context.traits empty array (PHP's empty map)", `{"type":"track","event":"E","userId":"u","context":{"traits":[]}}`, ""},
		{"context empty array", `{"type":"identify","userId":"u","context":[ ]}`, ""},
		{"context null", `{"type":"identify","userId":"u","context":null}`, ""},
		{"traits empty array", `{"type":"identify","userId":"u","traits":[]}`, ""},
		{"traits null", `{"type":"identify","userId":"u","traits":null}`, ""},
		{"properties and integrations empty arrays", `{"type":"track","event":"E","userId":"u","properties":[],"integrations":[]}`, ""},
		{"context array", `{"type":"identify","userId":"u","context":[1]}`, ReasonBadContext},
		{"userId 1e300", `{"type":"identify","userId":1e300}`, ReasonBadNumericID},
		{"userId fraction", `{"type":"identify","userId":12.5}`, ReasonBadNumericID},
		{"userId of 21 digits", `{"type":"identify","userId":123456789012345678901}`, ReasonBadNumericID},
		{"userId exponent beyond 2^53", `{"type":"identify","userId":1.2345678901234567e19}`, ReasonBadNumericID},
		{"anonymousId 1e300", `{"type":"identify","userId":"u","anonymousId":1e300}`, ReasonBadNumericID},
		{"previousId -1e300", `{"type":"alias","userId":"u","previousId":-1e300}`, ReasonBadNumericID},
		{"delete on the Tracking API", `{"type":"delete","userId":"u"}`, ReasonDeleteNotAccepted},
		{"delete without identity", `{"type":"delete"}`, ReasonDeleteNotAccepted},
		{"first reason wins", `{"type":"nope","userId":{}}`, ReasonUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := decode(t, "batch", "wk", `{"batch":[`+tt.event+`]}`)[0].Message
			if m.Rejected != tt.want {
				t.Errorf("got rejected %q, want %q", m.Rejected, tt.want)
			}
			if m.ID == "" || len(m.ID) > mapping.MaxMessageIDLength {
				t.Errorf("got ID %q, want one of 1 to 100 bytes even when rejected", m.ID)
			}
			if len(m.Raw) == 0 {
				t.Errorf("got no Raw, want the event kept")
			}
		})
	}
}

func TestDecodeIdentifiers(t *testing.T) {
	tests := []struct {
		name, event       string
		wantUser, wantAno string
	}{
		{"strings", `{"userId":"u1","anonymousId":"a1"}`, "u1", "a1"},
		{"integer", `{"userId":12345678901234567890}`, "12345678901234567890", ""},
		{"negative integer", `{"anonymousId":-7}`, "", "-7"},
		{"ordinary integer", `{"userId":12345}`, "12345", ""},
		{"exponent", `{"userId":1e3}`, "1000", ""},
		{"integral fraction", `{"userId":1.2345e4}`, "12345", ""},
		{"fraction is refused", `{"userId":1.5,"anonymousId":"a"}`, "", "a"},
		{"1e300 is refused", `{"userId":1e300,"anonymousId":"a"}`, "", "a"},
		{"escaped string", `{"userId":"caf\u00e9 \"x\""}`, `café "x"`, ""},
		{"null", `{"userId":null,"anonymousId":"a"}`, "", "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := decodeOne(t, "identify", tt.event)
			if m.UserID != tt.wantUser || m.AnonymousID != tt.wantAno {
				t.Errorf("got user %q, anonymous %q, want %q, %q", m.UserID, m.AnonymousID, tt.wantUser, tt.wantAno)
			}
		})
	}
}

func TestDecodeTraitsAndFlags(t *testing.T) {
	tests := []struct {
		name, route, body string
		wantEmail         string
		wantTraits        map[string]any
		wantImpersonating bool
		wantForwarded     bool
	}{
		{
			name: "identify traits", route: "identify",
			body:      `{"userId":"u","traits":{"email":"a@x.io","age":3},"context":{"traits":{"email":"ctx@x.io"}}}`,
			wantEmail: "a@x.io", wantTraits: map[string]any{"email": "a@x.io", "age": json.Number("3")},
		},
		{
			name: "identify email from context.traits", route: "identify",
			body:      `{"userId":"u","traits":{"name":"A"},"context":{"traits":{"email":"ctx@x.io"}}}`,
			wantEmail: "ctx@x.io", wantTraits: map[string]any{"name": "A"},
		},
		{
			name: "track uses context.traits", route: "track",
			body:      `{"userId":"u","event":"E","traits":{"email":"top@x.io"},"context":{"traits":{"email":"ctx@x.io"}}}`,
			wantEmail: "ctx@x.io", wantTraits: map[string]any{"email": "ctx@x.io"},
		},
		{
			name: "group traits are the group's", route: "group",
			body: `{"userId":"u","groupId":"g","traits":{"email":"billing@corp.io"}}`,
		},
		{
			name: "impersonating", route: "identify",
			body:              `{"userId":"u","context":{"impersonating":true}}`,
			wantImpersonating: true,
		},
		{
			name: "impersonating must be true, not truthy", route: "identify",
			body: `{"userId":"u","context":{"impersonating":"true"}}`,
		},
		{
			name: "forwarded by the bridge", route: "identify",
			body:          `{"userId":"u","context":{"bridge":{"forwarded":true}}}`,
			wantForwarded: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := decode(t, tt.route, "wk", tt.body)[0]
			m := ev.Message
			if m.Email != tt.wantEmail {
				t.Errorf("got email %q, want %q", m.Email, tt.wantEmail)
			}
			if !reflect.DeepEqual(m.Traits, tt.wantTraits) {
				t.Errorf("got traits %v, want %v", m.Traits, tt.wantTraits)
			}
			if m.Impersonating != tt.wantImpersonating {
				t.Errorf("got impersonating %v, want %v", m.Impersonating, tt.wantImpersonating)
			}
			if ev.Message.Forwarded != tt.wantForwarded {
				t.Errorf("got forwarded %v, want %v", ev.Message.Forwarded, tt.wantForwarded)
			}
			if got := Forwarded(m.Raw); got != tt.wantForwarded {
				t.Errorf("Forwarded(Raw): got %v, want %v", got, tt.wantForwarded)
			}
		})
	}
}

func TestDecodeForwardedFromBatchContext(t *testing.T) {
	ev := decode(t, "batch", "wk", `{"batch":[{"type":"identify","userId":"u"}],"context":{"bridge":{"forwarded":true},"impersonating":true}}`)[0]
	if !ev.Message.Forwarded || !ev.Message.Impersonating {
		t.Errorf("got forwarded %v, impersonating %v, want both from the batch context", ev.Message.Forwarded, ev.Message.Impersonating)
	}
}

func TestForwarded(t *testing.T) {
	tests := []struct {
		raw  string
		want bool
	}{
		{`{"context":{"bridge":{"forwarded":true}}}`, true},
		{`{"context":{"bridge":{"forwarded":false}}}`, false},
		{`{"context":{"bridge":{"forwarded":"true"}}}`, false},
		{`{"context":{"bridge":true}}`, false},
		{`{"Context":{"bridge":{"forwarded":true}}}`, false},
		{`{"context":{}}`, false},
		{`{}`, false},
		{`not json`, false},
	}
	for _, tt := range tests {
		if got := Forwarded([]byte(tt.raw)); got != tt.want {
			t.Errorf("Forwarded(%s): got %v, want %v", tt.raw, got, tt.want)
		}
	}
}

// batchOf returns a batch body of n copies of event.
func batchOf(n int, event string) string {
	var b strings.Builder
	b.WriteString(`{"batch":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(event)
	}
	b.WriteString(`]}`)
	return b.String()
}

func TestDecodeBadRequests(t *testing.T) {
	small := `{"type":"track","event":"E","userId":"u"}`
	deep := strings.Repeat(`{"a":`, MaxDepth) + `1` + strings.Repeat(`}`, MaxDepth)
	bigEvent := `{"type":"track","event":"E","userId":"u","properties":{"p":"` + strings.Repeat("x", MaxEventBytes) + `"}}`
	tests := []struct {
		name, route, body string
		want              mapping.Code
	}{
		{"empty body", "track", ``, mapping.CodeInvalid},
		{"invalid JSON", "track", `{"userId":`, mapping.CodeInvalid},
		{"truncated batch", "batch", `{"batch":[{"type":"track","userId":"u"}`, mapping.CodeInvalid},
		{"trailing garbage", "track", `{"userId":"u"} x`, mapping.CodeInvalid},
		{"two objects", "track", `{"userId":"u"}{"userId":"v"}`, mapping.CodeInvalid},
		{"single call is an array", "identify", `[{"userId":"u"}]`, mapping.CodeInvalid},
		{"single call is a string", "identify", `"u"`, mapping.CodeInvalid},
		{"single call is null", "identify", `null`, mapping.CodeInvalid},
		{"batch body is an array", "batch", `[` + small + `]`, mapping.CodeInvalid},
		{"no batch", "batch", `{"events":[]}`, mapping.CodeInvalid},
		{"batch null", "batch", `{"batch":null}`, mapping.CodeInvalid},
		{"batch is an object", "batch", `{"batch":{}}`, mapping.CodeInvalid},
		{"batch is a string", "batch", `{"batch":"[]"}`, mapping.CodeInvalid},
		{"batch element is a number", "batch", `{"batch":[1]}`, mapping.CodeInvalid},
		{"batch element is null", "batch", `{"batch":[null]}`, mapping.CodeInvalid},
		{"batch element is an array", "batch", `{"batch":[[` + small + `]]}`, mapping.CodeInvalid},
		{"batch context is a string", "batch", `{"batch":[],"context":"x"}`, mapping.CodeInvalid},
		{"batch integrations is an array", "batch", `{"batch":[],"integrations":["x"]}`, mapping.CodeInvalid},
		{"batch context is an array", "batch", `{"batch":[],"context":[1]}`, mapping.CodeInvalid},
		{"batch sentAt is a number", "batch", `{"batch":[],"sentAt":1}`, mapping.CodeInvalid},
		{"batch writeKey is a number", "batch", `{"batch":[],"writeKey":1}`, mapping.CodeInvalid},
		{"invalid UTF-8 in a string", "track", "{\"userId\":\"u\xff\"}", mapping.CodeInvalid},
		{"invalid UTF-8 in a key", "track", "{\"user\xc3Id\":\"u\"}", mapping.CodeInvalid},
		{"raw NUL", "track", "{\"userId\":\"u\x00\"}", mapping.CodeInvalid},
		{"nested too deep", "track", `{"userId":"u","properties":` + deep + `}`, mapping.CodeInvalid},
		{"arrays nested too deep", "batch", `{"batch":[` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `]}`, mapping.CodeInvalid},
		{"single call over 32 KB", "track", bigEvent, mapping.CodeTooLarge},
		{"batch event over 32 KB", "batch", `{"batch":[` + bigEvent + `]}`, mapping.CodeTooLarge},
		{"batch over 500 KB", "batch", batchOf(MaxBatchBytes/len(small)+1, small), mapping.CodeTooLarge},
		{"batch over 2,500 events", "batch", batchOf(MaxBatchEvents+1, `{}`), mapping.CodeTooLarge},
		{"batch context amplified over 2 MB", "batch", strings.Replace(batchOf(2000, `{}`), "{", `{"context":{"p":"`+strings.Repeat("x", 2000)+`"},`, 1), mapping.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeTrackingAPI(Request{Route: tt.route, ReceivedAt: receivedAt}, []byte(tt.body))
			if code := errorCode(err); code != tt.want {
				t.Fatalf("got error %v, want code %q", err, tt.want)
			}
			var e *mapping.Error
			if !errorsAs(err, &e) || e.Message == "" {
				t.Errorf("got %T, want a *mapping.Error with a message", err)
			}
		})
	}
}

func TestDecodeLimitsAccepted(t *testing.T) {
	// The envelope, the batch array and the event take three levels.
	nested := strings.Repeat(`{"a":`, MaxDepth-3) + `1` + strings.Repeat(`}`, MaxDepth-3)
	tests := []struct {
		name, route, body string
		wantEvents        int
	}{
		{"empty batch", "batch", `{"batch":[]}`, 0},
		{"2,500 events", "batch", batchOf(MaxBatchEvents, `{}`), MaxBatchEvents},
		{"2,500 events with a library context", "batch", strings.Replace(batchOf(MaxBatchEvents, `{"type":"track","event":"E","userId":"u"}`), "{", `{"context":{"library":{"name":"analytics-go","version":"3.3.0"}},`, 1), MaxBatchEvents},
		{"nested to the limit", "batch", `{"batch":[{"type":"track","event":"E","userId":"u","properties":` + nested + `}]}`, 1},
		{"brackets inside strings do not count", "track", `{"userId":"u","event":"` + strings.Repeat("[{", 100) + `\"]"}`, 1},
		{"whitespace around the body", "track", " \n{\"userId\":\"u\",\"event\":\"E\"}\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := len(decode(t, tt.route, "wk", tt.body)); got != tt.wantEvents {
				t.Errorf("got %d events, want %d", got, tt.wantEvents)
			}
		})
	}
}

func TestDecodeRawIsCompact(t *testing.T) {
	m := decodeOne(t, "track", "{\n  \"userId\" : \"u\",\n  \"event\": \"<b>&</b>\",\n  \"properties\": { \"a\" : [1, 2] }\n}")
	var want bytes.Buffer
	if err := json.Compact(&want, m.Raw); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Raw, want.Bytes()) {
		t.Errorf("got Raw %s, want it compact", m.Raw)
	}
	if !bytes.Contains(m.Raw, []byte(`"<b>&</b>"`)) {
		t.Errorf("got Raw %s, want HTML characters left unescaped", m.Raw)
	}
}

func errorsAs(err error, target **mapping.Error) bool {
	e, ok := err.(*mapping.Error)
	*target = e
	return ok
}

func BenchmarkDecodeBatch(b *testing.B) {
	var events []string
	for i := range 100 {
		events = append(events, fmt.Sprintf(`{"type":"track","event":"Report Exported","userId":"usr_%08d","anonymousId":"3f1a2b9c-6d7e-4f80-9a1b-%012d","messageId":"msg-%d","timestamp":"2024-05-14T09:21:0%d.412Z","properties":{"format":"csv","rows":1204,"filters":{"from":"2024-01-01","to":"2024-05-01"}},"context":{"ip":"203.0.113.7","page":{"path":"/reports","url":"https://app.example.com/reports"},"traits":{"email":"user%d@example.com"}}}`, i, i, i, i%10, i))
	}
	body := []byte(`{"batch":[` + strings.Join(events, ",") + `],"context":{"library":{"name":"analytics-go","version":"3.3.0"}},"sentAt":"2024-05-14T09:21:09.000Z"}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeTrackingAPI(Request{Route: "batch", WriteKey: "wk", ReceivedAt: receivedAt}, body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeBatchEnvelopeEmptyArrays: a batch whose context and integrations
// are [] (an empty map as PHP encodes it) is accepted, and an event's [] or
// null context takes the batch context.
func TestDecodeBatchEnvelopeEmptyArrays(t *testing.T) {
	evs := decode(t, "batch", "wk", `{"context":[],"integrations":[],"batch":[{"type":"identify","userId":"u","traits":[]}]}`)
	if m := evs[0].Message; m.Rejected != "" || m.UserID != "u" {
		t.Errorf("got rejected %q, user %q; want u applied", m.Rejected, m.UserID)
	}
	evs = decode(t, "batch", "wk", `{"context":{"library":{"name":"analytics-php"},"traits":{"email":"a@b.io"}},"batch":[{"type":"identify","userId":"u","context":[]},{"type":"identify","userId":"v","context":{"traits":[]}}]}`)
	for i, ev := range evs {
		if ev.Message.Rejected != "" || ev.Message.Email != "a@b.io" {
			t.Errorf("event %d: got rejected %q, email %q; want the batch context's email", i, ev.Message.Rejected, ev.Message.Email)
		}
	}
}
