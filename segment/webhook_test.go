package segment

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

var webhookSecret = []byte("whsec_3b1f0c9e7a5d")

// firstElementByHand returns the bytes of element 0 of the recorded array
// delivery, located by hand (from the first '{' to the '}' before the first
// " ,\n"), independently of the code under test.
func firstElementByHand(t *testing.T, body []byte) []byte {
	t.Helper()
	start := bytes.IndexByte(body, '{')
	end := bytes.Index(body, []byte("} ,\n"))
	if start < 0 || end < 0 {
		t.Fatal("webhook_batch.json: element 0 not found; keep its layout")
	}
	return body[start : end+1]
}

func TestVerifySignature(t *testing.T) {
	identify := readTestdata(t, "webhook_identify.json")
	track := readTestdata(t, "webhook_track.json")
	del := readTestdata(t, "webhook_delete.json")
	batch := readTestdata(t, "webhook_batch.json")
	first := firstElementByHand(t, batch)
	compactFirst := decodeWebhookRaw(t, batch)[0] // element 0 re-encoded: other bytes

	tests := []struct {
		name      string
		secret    []byte
		body      []byte
		signature string
		want      Coverage
	}{
		{"identify", webhookSecret, identify, Sign(webhookSecret, identify), SignedAll},
		{"track", webhookSecret, track, Sign(webhookSecret, track), SignedAll},
		{"delete", webhookSecret, del, Sign(webhookSecret, del), SignedAll},
		{"array: element 0 as in the body", webhookSecret, batch, Sign(webhookSecret, first), SignedFirst},
		{"array: whole body", webhookSecret, batch, Sign(webhookSecret, batch), SignedAll},
		{"array: element 0 re-encoded", webhookSecret, batch, Sign(webhookSecret, compactFirst), Unsigned},
		{"array: element 1", webhookSecret, batch, Sign(webhookSecret, batch[bytes.Index(batch, []byte("} ,\n"))+4:]), Unsigned},
		{"upper-case hex", webhookSecret, identify, strings.ToUpper(Sign(webhookSecret, identify)), SignedAll},
		{"surrounding spaces", webhookSecret, identify, " " + Sign(webhookSecret, identify) + " ", SignedAll},
		{"wrong secret", []byte("other"), identify, Sign(webhookSecret, identify), Unsigned},
		{"tampered body", webhookSecret, bytes.Replace(identify, []byte("team"), []byte("free"), 1), Sign(webhookSecret, identify), Unsigned},
		{"signature of another event", webhookSecret, identify, Sign(webhookSecret, track), Unsigned},
		{"empty signature", webhookSecret, identify, "", Unsigned},
		{"not hex", webhookSecret, identify, "zz" + Sign(webhookSecret, identify)[2:], Unsigned},
		{"truncated", webhookSecret, identify, Sign(webhookSecret, identify)[:38], Unsigned},
		{"SHA-256 length", webhookSecret, identify, Sign(webhookSecret, identify) + strings.Repeat("0", 24), Unsigned},
		{"empty secret", nil, identify, Sign(nil, identify), Unsigned},
		{"empty array", webhookSecret, []byte(`[]`), Sign(webhookSecret, nil), Unsigned},
		{"element 0 of an invalid body", webhookSecret, []byte(`[{"a":1}`), Sign(webhookSecret, []byte(`{"a":1}`)), SignedFirst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerifySignature(tt.secret, tt.body, tt.signature); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// firstElement is the reference for what the signer hashes as element 0:
// the raw bytes of element 0 of a JSON array, delimited by skipValue.
func firstElement(body []byte) ([]byte, bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '[' {
		return nil, false
	}
	i = skipSpace(body, i+1)
	if i >= len(body) || body[i] == ']' {
		return nil, false
	}
	end := skipValue(body, i)
	return body[i:end], end > i
}

// TestSignerStreams: the signer gives the same answer however the body is
// split into writes.
func TestSignerStreams(t *testing.T) {
	bodies := [][]byte{
		readTestdata(t, "webhook_batch.json"),
		readTestdata(t, "webhook_identify.json"),
		[]byte(`  [ "a\\\"]" , 1]`),
		[]byte(`[12.5e3,{}]`),
		[]byte(`[{"a":"}]{["},[1,[2]]]`),
		[]byte(`[[1,[2,{"x":"]"}]] ,{}]`),
		[]byte(`[true]`),
		[]byte(`[nul`),
	}
	for _, body := range bodies {
		first, ok := firstElement(body)
		for _, signed := range [][]byte{body, first} {
			if signed == nil && !ok {
				continue
			}
			sig := Sign(webhookSecret, signed)
			want := VerifySignature(webhookSecret, body, sig)
			if want == Unsigned {
				t.Errorf("%s: a signature over %q does not verify", body, signed)
			}
			for size := 1; size <= 7; size++ {
				s := newSigner(webhookSecret)
				for i := 0; i < len(body); i += size {
					s.Write(body[i:min(i+size, len(body))])
				}
				w, _ := parseSignature(webhookSecret, sig)
				if got := s.coverage(w); got != want {
					t.Errorf("%s in writes of %d: got %d, want %d", body, size, got, want)
				}
			}
		}
	}
}

func TestSignIsSegmentsFormat(t *testing.T) {
	// HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog"), RFC 2104 test value.
	got := Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog"))
	if want := "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// decodeWebhookRaw returns the Raw of each decoded event.
func decodeWebhookRaw(t *testing.T, body []byte) [][]byte {
	t.Helper()
	events, err := DecodeWebhook(body, receivedAt)
	if err != nil {
		t.Fatal(err)
	}
	var raws [][]byte
	for _, ev := range events {
		raws = append(raws, ev.Message.Raw)
	}
	return raws
}

func TestDecodeWebhookFixtures(t *testing.T) {
	type want struct {
		typ, id, userID, anonymousID, event, email string
		timestamp                                  string
	}
	tests := []struct {
		file string
		want []want
	}{
		{"webhook_identify.json", []want{{
			typ: "identify", id: "ajs-next-1f0c8d2e6b7a4c3d9e8f7a6b5c4d3e2f", userID: "usr_2b7f9d1c4e6a8b0d",
			anonymousID: "3f1a2b9c-6d7e-4f80-9a1b-2c3d4e5f6a7b", email: "ada@example.com", timestamp: "2024-05-14T09:21:08.025Z",
		}}},
		{"webhook_track.json", []want{{
			typ: "track", id: "9d4e3f1a-7b2c-4d5e-8f90-a1b2c3d4e5f6", userID: "usr_2b7f9d1c4e6a8b0d",
			anonymousID: "3f1a2b9c-6d7e-4f80-9a1b-2c3d4e5f6a7b", event: "Report Exported", email: "ada@example.com", timestamp: "2024-05-14T09:02:00.168Z",
		}}},
		{"webhook_delete.json", []want{{
			typ: "delete", id: "delete-6a0e1f2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", userID: "usr_2b7f9d1c4e6a8b0d", timestamp: "2024-05-15T00:00:03Z",
		}}},
		{"webhook_batch.json", []want{
			{typ: "page", id: "ajs-next-a1", anonymousID: "c0ffee00-1111-4222-8333-444455556666", event: "Pricing", timestamp: "2024-05-14T10:00:00.9Z"},
			{typ: "identify", id: "ajs-next-a2", userID: "usr_7c1e0b9a5d3f2e4c", anonymousID: "c0ffee00-1111-4222-8333-444455556666", email: "grace@example.com", timestamp: "2024-05-14T10:00:02Z"},
			{typ: "track", id: "ajs-next-a3", userID: "usr_7c1e0b9a5d3f2e4c", event: "Signed Up", timestamp: "2024-05-14T10:00:03Z"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			events, err := DecodeWebhook(readTestdata(t, tt.file), receivedAt)
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != len(tt.want) {
				t.Fatalf("got %d events, want %d", len(events), len(tt.want))
			}
			for i, w := range tt.want {
				m := events[i].Message
				got := want{m.Type, m.ID, m.UserID, m.AnonymousID, m.Event, m.Email, m.Timestamp.Format(time.RFC3339Nano)}
				if got != w {
					t.Errorf("event %d: got %+v, want %+v", i, got, w)
				}
				if m.Source != mapping.SourceSegmentWebhook || !m.ReceivedAt.Equal(receivedAt) || m.Rejected != "" {
					t.Errorf("event %d: got source %q, receivedAt %v, rejected %q, want %q, %v, none", i, m.Source, m.ReceivedAt, m.Rejected, mapping.SourceSegmentWebhook, receivedAt)
				}
				if events[i].WriteKey != "" {
					t.Errorf("event %d: got write key %q, want none", i, events[i].WriteKey)
				}
			}
		})
	}
}

func TestDecodeWebhookKeepsDeliveredTimes(t *testing.T) {
	m := decodeWebhookRaw(t, readTestdata(t, "webhook_track.json"))[0]
	f := rawFields(t, m)
	want := map[string]string{
		"timestamp":         "2024-05-14T09:02:00.168Z",
		"originalTimestamp": "2024-05-14T11:02:00+02:00",
		"receivedAt":        "2024-05-14T09:02:01.118Z",
		"sentAt":            "2024-05-14T09:02:00.950Z",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("got Raw %s %v, want %s", k, f[k], v)
		}
	}
}

func TestDecodeWebhookEvents(t *testing.T) {
	tests := []struct {
		name, body   string
		wantRejected string
		wantType     string
	}{
		{"no type", `{"userId":"u","messageId":"m"}`, ReasonUnknownType, ""},
		{"no identity", `{"type":"identify","messageId":"m"}`, ReasonMissingIdentity, "identify"},
		{"delete with an anonymous ID", `{"type":"delete","anonymousId":"a","messageId":"m"}`, "", "delete"},
		{"no timestamp", `{"type":"identify","userId":"u","messageId":"m"}`, "", "identify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := DecodeWebhook([]byte(tt.body), receivedAt)
			if err != nil {
				t.Fatal(err)
			}
			m := events[0].Message
			if m.Rejected != tt.wantRejected || m.Type != tt.wantType {
				t.Errorf("got rejected %q, type %q, want %q, %q", m.Rejected, m.Type, tt.wantRejected, tt.wantType)
			}
		})
	}
	t.Run("no timestamp: receivedAt", func(t *testing.T) {
		events, _ := DecodeWebhook([]byte(`{"type":"identify","userId":"u"}`), receivedAt)
		if got := events[0].Message.Timestamp; !got.Equal(receivedAt) {
			t.Errorf("got %v, want %v", got, receivedAt)
		}
	})
	t.Run("missing messageId is deterministic", func(t *testing.T) {
		body := []byte(`{"type":"identify","userId":"u"}`)
		a, _ := DecodeWebhook(body, receivedAt)
		b, _ := DecodeWebhook(body, receivedAt.Add(time.Hour))
		if a[0].Message.ID == "" || a[0].Message.ID != b[0].Message.ID {
			t.Errorf("got IDs %q and %q, want one non-empty ID", a[0].Message.ID, b[0].Message.ID)
		}
	})
}

func TestDecodeWebhookBad(t *testing.T) {
	tests := []struct {
		name, body string
		want       mapping.Code
	}{
		{"empty", ``, mapping.CodeInvalid},
		{"invalid JSON", `{"type":`, mapping.CodeInvalid},
		{"scalar", `"identify"`, mapping.CodeInvalid},
		{"null", `null`, mapping.CodeInvalid},
		{"element not an object", `[{"type":"identify","userId":"u"},2]`, mapping.CodeInvalid},
		{"nested arrays", `[[{"type":"identify","userId":"u"}]]`, mapping.CodeInvalid},
		{"invalid UTF-8", "{\"userId\":\"\xff\"}", mapping.CodeInvalid},
		{"too deep", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), mapping.CodeInvalid},
		{"over 4,000 events", "[" + strings.Repeat(`{},`, MaxWebhookEvents) + "{}]", mapping.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeWebhook([]byte(tt.body), receivedAt)
			if code := errorCode(err); code != tt.want {
				t.Errorf("got error %v, want code %q", err, tt.want)
			}
		})
	}
	t.Run("4,000 events", func(t *testing.T) {
		events, err := DecodeWebhook([]byte("["+strings.Repeat(`{},`, MaxWebhookEvents-1)+"{}]"), receivedAt)
		if err != nil || len(events) != MaxWebhookEvents {
			t.Errorf("got %d events, error %v, want %d, nil", len(events), err, MaxWebhookEvents)
		}
	})
}

// TestWebhookDeleteOnlyWhereSigned: a delete is honoured only where what
// was verified covers it. Segment signs element 0 of an array, so a deletion
// after it is stored as rejected, never applied, unless the whole body is
// authentic (a signature over all of it, or a valid Bearer).
func TestWebhookDeleteOnlyWhereSigned(t *testing.T) {
	body := []byte(`[{"type":"delete","userId":"u-0","messageId":"m0"},{"type":"identify","userId":"u-1","messageId":"m1"},{"type":"delete","userId":"victim","messageId":"m2"}]`)
	tests := []struct {
		covered Coverage
		want    []string // Rejected of each element
	}{
		{Unsigned, []string{ReasonUnsignedDelete, "", ReasonUnsignedDelete}},
		{SignedFirst, []string{"", "", ReasonUnsignedDelete}},
		{SignedAll, []string{"", "", ""}},
	}
	for _, tt := range tests {
		events, err := DecodeDelivery(body, receivedAt, tt.covered)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range tt.want {
			if got := events[i].Message.Rejected; got != w {
				t.Errorf("coverage %d, element %d: got rejected %q, want %q", tt.covered, i, got, w)
			}
		}
	}
	single, err := DecodeWebhook([]byte(`{"type":"delete","userId":"u-1","messageId":"m3"}`), receivedAt)
	if err != nil || single[0].Message.Rejected != "" || single[0].Message.Type != "delete" {
		t.Errorf("signed single delete: got %+v, %v; want it accepted", single, err)
	}
}

// TestDecodeWebhookDeleteShapes: a delete is carried out whatever shape its
// optional fields take (Segment's own examples show "context": [], some
// senders null, none at all, or other types).
func TestDecodeWebhookDeleteShapes(t *testing.T) {
	tests := []struct{ file, userID string }{
		{"webhook_delete.json", "usr_2b7f9d1c4e6a8b0d"},
		{"webhook_delete_context_array.json", "usr_del_5c9e1a7b3d2f"},
		{"webhook_delete_minimal.json", "usr_del_8a4f6b0c2e1d"},
		{"webhook_delete_null_fields.json", "usr_del_3e7d9b1f5a0c"},
		{"webhook_delete_odd_shapes.json", "usr_del_6b2a8c4e0d9f"},
		{"webhook_delete_classic.json", "usr_del_2d4f6a8c0e1b"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			events, err := DecodeWebhook(readTestdata(t, tt.file), receivedAt)
			if err != nil {
				t.Fatal(err)
			}
			m := events[0].Message
			if len(events) != 1 || m.Type != "delete" || m.Rejected != "" || m.UserID != tt.userID || m.ID == "" {
				t.Errorf("got %d events, type %q, rejected %q, user %q, ID %q; want one delete of %s, not rejected, with an ID",
					len(events), m.Type, m.Rejected, m.UserID, m.ID, tt.userID)
			}
		})
	}
}

// TestDecodeOptionalFieldShapes: every optional object field of every event
// type tolerates [] and null as Segment does (an empty map, as PHP encodes
// it); any other shape either is tolerated or records a reason, and never
// refuses a delete.
func TestDecodeOptionalFieldShapes(t *testing.T) {
	types := []string{"identify", "track", "page", "screen", "group", "alias", "delete"}
	fields := []string{"context", "traits", "properties", "integrations", "context.traits", "context.page", "options"}
	shapes := []string{`[]`, `[ ]`, `null`, `"x"`, `[1]`, `7`, `true`}
	for _, typ := range types {
		for _, field := range fields {
			for _, shape := range shapes {
				value := `"` + field + `":` + shape
				if parent, child, nested := strings.Cut(field, "."); nested {
					value = `"` + parent + `":{"` + child + `":` + shape + `}`
				}
				event := `{"type":"` + typ + `","userId":"u-7","previousId":"p-7","event":"E","groupId":"g",` + value + `}`
				events, err := DecodeWebhook([]byte(event), receivedAt)
				if err != nil {
					t.Fatalf("%s: %v", event, err)
				}
				got := events[0].Message.Rejected
				switch {
				case shape == `[]` || shape == `[ ]` || shape == `null` || typ == "delete":
					if got != "" {
						t.Errorf("%s: got rejected %q, want it applied", event, got)
					}
				case got != "" && got != ReasonBadContext && got != ReasonBadTraits:
					t.Errorf("%s: got rejected %q, want applied or a reason naming the field", event, got)
				}
			}
		}
	}
}

// TestUnsignedDeleteKeepsItsIDFree: a delete refused because no signature
// covered it is stored under an ID of its own, so the same deletion
// delivered again, signed, is not a duplicate of the refusal.
func TestUnsignedDeleteKeepsItsIDFree(t *testing.T) {
	del := `{"type":"delete","userId":"u-1","messageId":"del-1"}`
	body := []byte(`[{"type":"track","event":"x","userId":"u-2","messageId":"t-1"},` + del + `]`)
	evs, err := DecodeDelivery(body, time.Now(), SignedFirst)
	if err != nil || len(evs) != 2 {
		t.Fatalf("decode: %v (%d events)", err, len(evs))
	}
	refused := evs[1].Message
	signed, err := DecodeDelivery([]byte(del), time.Now(), SignedFirst)
	if err != nil {
		t.Fatal(err)
	}
	if refused.Rejected != ReasonUnsignedDelete || signed[0].Message.Rejected != "" {
		t.Fatalf("got rejected %q and %q, want unsigned_delete then accepted", refused.Rejected, signed[0].Message.Rejected)
	}
	if refused.ID == signed[0].Message.ID {
		t.Errorf("the refused and the signed delete share message ID %q: the signed one would be dropped as a duplicate", refused.ID)
	}
}
