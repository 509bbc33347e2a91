package segment

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bridgeworks/bridge/mapping"
)

// seeds returns the recorded bodies in ../testdata/segment whose names start with prefix.
// (Go's own seed corpus directory would have to live under segment/testdata/fuzz.)
func seeds(f *testing.F, prefix string) [][]byte {
	f.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "testdata", "segment", prefix+"*.json"))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no seeds %s*.json in ../testdata/segment: %v", prefix, err)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// checkEvents asserts what every decoded event must satisfy.
func checkEvents(t *testing.T, events []Event, source mapping.Source, routeType string) {
	t.Helper()
	for i, ev := range events {
		m := ev.Message
		var f map[string]json.RawMessage
		if err := json.Unmarshal(m.Raw, &f); err != nil {
			t.Fatalf("event %d: Raw is not a JSON object: %v: %s", i, err, m.Raw)
		}
		if m.Source != source || !m.ReceivedAt.Equal(receivedAt) {
			t.Errorf("event %d: got source %q, receivedAt %v", i, m.Source, m.ReceivedAt)
		}
		if m.ID == "" || len(m.ID) > mapping.MaxMessageIDLength {
			t.Errorf("event %d: got ID %q, want 1 to 100 bytes", i, m.ID)
		}
		if routeType != "" && m.Type != routeType {
			t.Errorf("event %d: got type %q, want the route's %q", i, m.Type, routeType)
		}
		if _, ok := f["writeKey"]; ok {
			t.Errorf("event %d: got writeKey in Raw", i)
		}
		if source == mapping.SourceSegmentAPI {
			if m.Timestamp.After(receivedAt) {
				t.Errorf("event %d: got timestamp %v after receivedAt", i, m.Timestamp)
			}
			if got, _ := stringValue(f["timestamp"]); got != m.Timestamp.Format(time.RFC3339Nano) {
				t.Errorf("event %d: got Raw timestamp %q, want %v", i, got, m.Timestamp)
			}
		}
		if m.Rejected != "" {
			continue
		}
		if id, _ := stringValue(f["messageId"]); id != m.ID {
			t.Errorf("event %d: got Raw messageId %q, want %q", i, id, m.ID)
		}
		if strings.TrimSpace(m.UserID) == "" && strings.TrimSpace(m.AnonymousID) == "" {
			t.Errorf("event %d: accepted without an identity", i)
		}
		for _, id := range []string{m.UserID, m.AnonymousID, m.PreviousID} {
			if !utf8.ValidString(id) || utf8.RuneCountInString(id) > mapping.MaxIdentifierLength || idProblem(id) != "" {
				t.Errorf("event %d: accepted identifier %q", i, id)
			}
		}
		if !knownType(m.Type) {
			t.Errorf("event %d: accepted type %q", i, m.Type)
		}
	}
}

func checkError(t *testing.T, err error, codes ...mapping.Code) {
	t.Helper()
	var e *mapping.Error
	if !errorsAs(err, &e) {
		t.Fatalf("got %T %v, want a *mapping.Error", err, err)
	}
	for _, c := range codes {
		if e.Code == c {
			return
		}
	}
	t.Fatalf("got code %q, want one of %v", e.Code, codes)
}

func FuzzDecodeTrackingAPI(f *testing.F) {
	for _, b := range seeds(f, "api_") {
		f.Add("batch", "wk", b)
		f.Add("identify", "", b)
	}
	f.Add("t", "", []byte(`{"userId":12,"event":"E","timestamp":"2024-05-14T09:00:00+02:00","sentAt":"2024-05-14T09:00:01+02:00"}`))
	f.Add("b", "", []byte(`{"batch":[{"type":"alias","previousId":"a","userId":"u"}],"context":{"a":{"b":1}},"integrations":{"x":true},"writeKey":"k"}`))
	f.Add("a", "wk", []byte(`{"previousId":{"x":1},"userId":"u\u0000","messageId":7,"context":{"traits":"x"}}`))
	f.Fuzz(func(t *testing.T, route, writeKey string, body []byte) {
		req := Request{Route: route, WriteKey: writeKey, ReceivedAt: receivedAt}
		events, err := DecodeTrackingAPI(req, body)
		if err != nil {
			checkError(t, err, mapping.CodeInvalid, mapping.CodeTooLarge, mapping.CodeNotFound)
			return
		}
		routeType, _, _ := RouteType(route)
		checkEvents(t, events, mapping.SourceSegmentAPI, routeType)
		again, _ := DecodeTrackingAPI(req, body)
		if !reflect.DeepEqual(events, again) {
			t.Errorf("decoding twice gave different events")
		}
	})
}

func FuzzDecodeWebhook(f *testing.F) {
	for _, b := range seeds(f, "webhook_") {
		f.Add(b)
	}
	f.Add([]byte(`[{"type":"delete","userId":"u"},{"type":"track"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		secret := []byte("s")
		if got := VerifySignature(secret, body, Sign(secret, body)); got != SignedAll {
			t.Errorf("a signature over the whole body: got coverage %d, want SignedAll", got)
		}
		if first, ok := firstElement(body); ok {
			if !bytes.Contains(body, first) || VerifySignature(secret, body, Sign(secret, first)) != SignedFirst {
				t.Errorf("element 0 %q is not a span of the body that verifies as SignedFirst", first)
			}
			// The same, streamed in small writes.
			s := newSigner(secret)
			for i := 0; i < len(body); i += 3 {
				s.Write(body[i:min(i+3, len(body))])
			}
			if want, _ := parseSignature(secret, Sign(secret, first)); s.coverage(want) != SignedFirst {
				t.Errorf("element 0 %q streamed in writes of 3 does not verify as SignedFirst", first)
			}
		}
		events, err := DecodeWebhook(body, receivedAt)
		if err != nil {
			checkError(t, err, mapping.CodeInvalid, mapping.CodeTooLarge)
			return
		}
		checkEvents(t, events, mapping.SourceSegmentWebhook, "")
		for i, ev := range events {
			if i > 0 && ev.Message.Type == "delete" && ev.Message.Rejected == "" {
				t.Errorf("element %d is a delete outside the signature, accepted", i)
			}
		}
	})
}

func FuzzReadBody(f *testing.F) {
	for _, b := range seeds(f, "api_") {
		f.Add(b, false, uint16(1000))
		f.Add(gzipBytes(f, b), true, uint16(1000))
	}
	f.Add(gzipBytes(f, make([]byte, 5000)), true, uint16(100))
	f.Fuzz(func(t *testing.T, data []byte, gzipped bool, limit uint16) {
		encoding := ""
		if gzipped {
			encoding = "gzip"
		}
		got, err := ReadBody(bytes.NewReader(data), encoding, int64(limit))
		if err != nil {
			checkError(t, err, mapping.CodeInvalid, mapping.CodeTooLarge)
			if !gzipped && len(data) <= int(limit) {
				t.Errorf("refused %d plain bytes under the limit %d: %v", len(data), limit, err)
			}
			return
		}
		if len(got) > int(limit) {
			t.Errorf("got %d bytes, over the limit %d", len(got), limit)
		}
		if !gzipped && !bytes.Equal(got, data) {
			t.Errorf("got %q, want the body as sent", got)
		}
		// Under a budget: the same content, and everything given back.
		b := newBudget(1 << 20)
		rd, err := readBody(bytes.NewReader(data), encoding, int64(limit), b, nil)
		if err != nil {
			t.Fatalf("under a budget: %v, want the body read as without one", err)
		}
		again, err := rd.bytes()
		if err != nil || !bytes.Equal(again, got) {
			t.Errorf("under a budget: got %q, %v; want %q", again, err, got)
		}
		rd.release()
		if b.free != 1<<20 {
			t.Errorf("after release: %d bytes free, want all %d", b.free, 1<<20)
		}
	})
}

// FuzzJSONSplitting checks the scanner that splits validated JSON against encoding/json.
func FuzzJSONSplitting(f *testing.F) {
	for _, b := range seeds(f, "") {
		f.Add(b)
	}
	f.Add([]byte(` { "a" : [ 1 , { "b" : "x\"}" } ] , "a\u0062" : null, "c":-1.5e3 , "a":true } `))
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkJSON(b) != nil {
			return // the splitter's precondition: UTF-8, valid JSON
		}
		var compact bytes.Buffer
		json.Compact(&compact, b)
		if got := appendCompact(nil, b); !bytes.Equal(got, compact.Bytes()) {
			t.Errorf("appendCompact: got %s, want %s", got, compact.Bytes())
		}
		if elems, ok := splitArray(b); ok {
			var want []json.RawMessage
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			if len(elems) != len(want) {
				t.Fatalf("splitArray: got %d elements, want %d", len(elems), len(want))
			}
			for i := range want {
				if !bytes.Equal(elems[i], want[i]) {
					t.Errorf("splitArray: element %d: got %s, want %s", i, elems[i], want[i])
				}
			}
		}
		o, ok := splitObject(b)
		if ok != isObject(b) {
			t.Fatalf("splitObject: got ok %v for %s", ok, b)
		}
		if !ok {
			return
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if len(o) != len(want) {
			t.Fatalf("splitObject: got %d members, want %d", len(o), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(o[k], v) {
				t.Errorf("splitObject: member %q: got %s, want %s", k, o[k], v)
			}
		}
		enc := encodeObject(o)
		var a, e any
		if err := json.Unmarshal(enc, &e); err != nil {
			t.Fatalf("encodeObject gave invalid JSON %s: %v", enc, err)
		}
		json.Unmarshal(b, &a)
		if !reflect.DeepEqual(a, e) {
			t.Errorf("encodeObject: got %s, want the value of %s", enc, b)
		}
	})
}
