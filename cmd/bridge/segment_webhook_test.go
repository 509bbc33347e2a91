package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bridgeworks/bridge/segment"
)

// signedPost delivers body to /segment/webhook with X-Signature over signed
// (the body, or element 0 of an array) and any extra headers.
func (b *testBridge) signedPost(t *testing.T, secret string, body, signed []byte, extra map[string]string) (int, []byte) {
	t.Helper()
	headers := map[string]string{"Content-Type": "application/json", "X-Signature": segment.Sign([]byte(secret), signed)}
	for k, v := range extra {
		headers[k] = v
	}
	return b.post(t, "/segment/webhook", body, headers)
}

// identifyUser stores a profile for userID through a signed webhook
// delivery dated 2010, before any delete the tests send.
func (b *testBridge) identifyUser(t *testing.T, secret, userID string) {
	t.Helper()
	body := []byte(`{"type":"identify","userId":"` + userID + `","anonymousId":"anon-` + userID + `","messageId":"identify-` + userID + `","timestamp":"2010-01-01T00:00:00Z"}`)
	if status, resp := b.signedPost(t, secret, body, body, nil); status != http.StatusOK {
		t.Fatalf("identify %s: got %d %s, want 200", userID, status, resp)
	}
	if _, ok := b.profile(t, "user_id:"+userID); !ok {
		t.Fatalf("identify %s: no profile", userID)
	}
}

// TestWebhookSecretIsGeneratedAndAlwaysRequired: with no shared secret
// configured, the bridge generates one, prints it once, and the webhook
// requires a signature made with it; write keys never authorize it.
func TestWebhookSecretIsGeneratedAndAlwaysRequired(t *testing.T) {
	db := filepath.Join(t.TempDir(), "bridge.db")
	b := startBridge(t, db)
	m := regexp.MustCompile(`generated BRIDGE_SEGMENT_SHARED_SECRET=(\S+)`).FindStringSubmatch(b.stdout.String())
	if m == nil {
		t.Fatalf("no generated shared secret printed:\n%s", b.stdout)
	}
	secret := m[1]
	body := []byte(`{"type":"identify","userId":"user-gen-5d1c9a3e7b","messageId":"gen-1"}`)
	withKey := []byte(`{"type":"identify","userId":"user-gen-5d1c9a3e7b","messageId":"gen-2","writeKey":"` + testWriteKey + `"}`)
	tests := []struct {
		name    string
		body    []byte
		headers map[string]string
		want    int
	}{
		{"write key as Basic auth", body, map[string]string{"Authorization": basicAuth(testWriteKey)}, 401},
		{"write key in the body", withKey, nil, 401},
		{"write key and a wrong signature", body, map[string]string{"Authorization": basicAuth(testWriteKey), "X-Signature": segment.Sign([]byte(testWriteKey), body)}, 401},
		{"nothing", body, nil, 401},
		{"signed with the generated secret", body, map[string]string{"X-Signature": segment.Sign([]byte(secret), body)}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if status, resp := b.post(t, "/segment/webhook", tt.body, tt.headers); status != tt.want {
				t.Errorf("got %d %s, want %d", status, resp, tt.want)
			}
		})
	}
	b.stop(t)

	again := startBridge(t, db)
	if strings.Contains(again.stdout.String(), "BRIDGE_SEGMENT_SHARED_SECRET") {
		t.Errorf("second start printed the shared secret again:\n%s", again.stdout)
	}
	other := []byte(`{"type":"identify","userId":"user-gen-5d1c9a3e7b","messageId":"gen-3"}`)
	if status, resp := again.signedPost(t, secret, other, other, nil); status != http.StatusOK {
		t.Errorf("second start, signed with the stored secret: got %d %s, want 200", status, resp)
	}
}

// TestWebhookDeletesOnlyWhereAuthentic: Segment signs element 0 of a
// batched delivery, so a delete there is honoured and one among the other
// elements is not (it is stored as rejected); with Authorization: Bearer
// <shared secret> the whole body is authentic and deletes anywhere are
// honoured; a wrong Bearer is refused.
func TestWebhookDeletesOnlyWhereAuthentic(t *testing.T) {
	const secret = "segment-shared-secret-0c4f"
	b := startBridge(t, "", "-segment-shared-secret", secret)
	for _, u := range []string{"user-first-3a9c", "user-victim-7e21", "user-bearer-5b0d", "user-wrong-9f44"} {
		b.identifyUser(t, secret, u)
	}
	del := func(u string) string { return `{"type":"delete","userId":"` + u + `","messageId":"delete-` + u + `"}` }
	identify := `{"type":"identify","userId":"user-other-1d2e","messageId":"identify-other"}`

	first := del("user-first-3a9c")
	body := []byte("[" + first + "," + identify + "," + del("user-victim-7e21") + "]")
	if status, resp := b.signedPost(t, secret, body, []byte(first), nil); status != http.StatusOK {
		t.Fatalf("array signed over element 0: got %d %s, want 200", status, resp)
	}
	if _, ok := b.profile(t, "user_id:user-first-3a9c"); ok {
		t.Errorf("the delete at element 0, which the signature covers, was not carried out")
	}
	if _, ok := b.profile(t, "user_id:user-victim-7e21"); !ok {
		t.Errorf("a delete after element 0, outside the signature, was carried out")
	}
	if _, ok := b.profile(t, "user_id:user-other-1d2e"); !ok {
		t.Errorf("the unsigned identify among the elements was not accepted")
	}

	body = []byte("[" + identify + "," + del("user-bearer-5b0d") + "]")
	if status, resp := b.signedPost(t, secret, body, []byte(identify), map[string]string{"Authorization": "Bearer " + secret}); status != http.StatusOK {
		t.Fatalf("with the right Bearer: got %d %s, want 200", status, resp)
	}
	if _, ok := b.profile(t, "user_id:user-bearer-5b0d"); ok {
		t.Errorf("with a valid Bearer the whole body is authentic, but its delete was not carried out")
	}

	body = []byte("[" + identify + "," + del("user-wrong-9f44") + "]")
	if status, resp := b.signedPost(t, secret, body, []byte(identify), map[string]string{"Authorization": "Bearer " + testWriteKey}); status != http.StatusUnauthorized {
		t.Errorf("with a wrong Bearer: got %d %s, want 401", status, resp)
	}
	if _, ok := b.profile(t, "user_id:user-wrong-9f44"); !ok {
		t.Errorf("a delivery with a wrong Bearer deleted someone")
	}
}

// TestWebhookDeleteShapesCarriedOut: a delete is carried out whatever shape
// its optional fields take ("context": [] as in Segment's docs, null, absent,
// other types), not answered 200 and dropped.
func TestWebhookDeleteShapesCarriedOut(t *testing.T) {
	const secret = "segment-shared-secret-0c4f"
	b := startBridge(t, "", "-segment-shared-secret", secret)
	fixtures := map[string]string{
		"webhook_delete_context_array.json": "usr_del_5c9e1a7b3d2f",
		"webhook_delete_minimal.json":       "usr_del_8a4f6b0c2e1d",
		"webhook_delete_null_fields.json":   "usr_del_3e7d9b1f5a0c",
		"webhook_delete_odd_shapes.json":    "usr_del_6b2a8c4e0d9f",
		"webhook_delete_classic.json":       "usr_del_2d4f6a8c0e1b",
	}
	for file, userID := range fixtures {
		t.Run(file, func(t *testing.T) {
			b.identifyUser(t, secret, userID)
			body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "segment", file))
			if err != nil {
				t.Fatal(err)
			}
			if status, resp := b.signedPost(t, secret, body, body, nil); status != http.StatusOK {
				t.Fatalf("got %d %s, want 200", status, resp)
			}
			if _, ok := b.profile(t, "user_id:"+userID); ok {
				t.Errorf("the delete was answered 200 but not carried out")
			}
		})
	}
}

// TestWebhookDecoderLimits: the webhook's decoder, behind a valid signature,
// refuses nesting deeper than 64 levels and invalid UTF-8, as /v1 does.
func TestWebhookDecoderLimits(t *testing.T) {
	const secret = "segment-shared-secret-0c4f"
	b := startBridge(t, "", "-segment-shared-secret", secret)
	deep := []byte(`{"type":"identify","userId":"user-deep-1","traits":` + strings.Repeat(`{"a":`, 64) + "1" + strings.Repeat("}", 64) + `}`)
	ok := []byte(`{"type":"identify","userId":"user-deep-2","traits":` + strings.Repeat(`{"a":`, 62) + "1" + strings.Repeat("}", 62) + `}`)
	badUTF8 := []byte("{\"type\":\"identify\",\"userId\":\"user-utf8-\xff\xfe\"}")
	gzipDeep := gzipped(t, deep)
	tests := []struct {
		name    string
		body    []byte
		signed  []byte
		headers map[string]string
		want    int
	}{
		{"65 levels", deep, deep, nil, 400},
		{"65 levels, gzip", gzipDeep, deep, map[string]string{"Content-Encoding": "gzip"}, 400},
		{"64 levels", ok, ok, nil, 200},
		{"invalid UTF-8", badUTF8, badUTF8, nil, 400},
		{"65 levels in element 1 of an array", []byte("[" + string(ok) + "," + string(deep) + "]"), ok, nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if status, resp := b.signedPost(t, secret, tt.body, tt.signed, tt.headers); status != tt.want {
				t.Errorf("got %d %s, want %d", status, resp, tt.want)
			}
		})
	}
	if _, ok := b.profile(t, "user_id:user-deep-1"); ok {
		t.Errorf("the over-deep delivery was stored")
	}
}

// TestNumericUserIDs: an ordinary numeric user ID works as its decimal
// string; 1e300 or 12.5 are refused with a reason instead of becoming an ID
// nobody sent, while the event's other identifiers are kept.
func TestNumericUserIDs(t *testing.T) {
	b := startBridge(t, "")
	auth := map[string]string{"Authorization": basicAuth(testWriteKey)}
	for _, body := range []string{
		`{"userId":12345,"anonymousId":"anon-num-1"}`,
		`{"userId":1e300,"anonymousId":"anon-num-2"}`,
		`{"userId":12.5,"anonymousId":"anon-num-3"}`,
	} {
		if status, resp := b.post(t, "/v1/identify", []byte(body), auth); status != http.StatusOK {
			t.Fatalf("%s: got %d %s, want 200", body, status, resp)
		}
	}
	if p, ok := b.profile(t, "user_id:12345"); !ok || !identifierSet(p)["anonymous_id:anon-num-1"] {
		t.Errorf("userId 12345: got %+v, %v; want a profile joining it to anon-num-1", p, ok)
	}
	big := "1" + strings.Repeat("0", 300)
	for _, id := range []string{big, "1e300", "12.5"} {
		if _, ok := b.profile(t, "user_id:"+id); ok {
			t.Errorf("user ID %.20s… was created from a number that is not a plain integer", id)
		}
	}
}

// TestSegmentRateLimitThroughServer: over the rate, 429 with Retry-After;
// a 2,500-event batch costs at most the burst, so the key is usable again
// once the burst has refilled (50 s at 1 event/s), not after 2,500 events'
// worth.
func TestSegmentRateLimitThroughServer(t *testing.T) {
	b := startBridge(t, "", "-segment-rate-limit", "1", "-segment-rate-burst", "50")
	var batch bytes.Buffer
	batch.WriteString(`{"batch":[`)
	for i := range 2500 {
		if i > 0 {
			batch.WriteString(",")
		}
		batch.WriteString(`{"type":"track","event":"E","anonymousId":"anon-rate-1"}`)
	}
	batch.WriteString(`]}`)
	send := func() (int, string) {
		req, _ := http.NewRequest(http.MethodPost, b.URL+"/v1/batch", bytes.NewReader(batch.Bytes()))
		req.Header.Set("Authorization", basicAuth(testWriteKey))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if status, _ := send(); status != http.StatusOK {
		t.Fatalf("2,500-event batch on a full bucket: got %d, want 200", status)
	}
	status, retry := send()
	seconds, err := strconv.Atoi(retry)
	if status != http.StatusTooManyRequests || err != nil || seconds < 1 || seconds > 50 {
		t.Fatalf("second batch at once: got %d, Retry-After %q; want 429 with Retry-After of 1 to 50 s (the burst's refill)", status, retry)
	}
}
