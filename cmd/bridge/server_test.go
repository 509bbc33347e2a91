package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridgeworks/bridge/segment"
)

func basicAuth(key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"))
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// TestBadInputThroughTheServer sends every kind of bad input to the running
// server: each gets the status Segment would give (or a clear error), the
// store stays consistent, and the server keeps serving.
func TestBadInputThroughTheServer(t *testing.T) {
	b := startBridge(t, "", "-segment-shared-secret", webhookSecret)
	auth := map[string]string{"Authorization": basicAuth(testWriteKey)}
	bomb := gzipped(t, bytes.Repeat([]byte{' '}, 50<<20)) // 50 MB of spaces, ~50 KB compressed
	deep := strings.Repeat(`{"a":`, 1000) + "1" + strings.Repeat("}", 1000)
	long := strings.Repeat("x", 401)
	identifyWith := func(fields string) []byte { return []byte(`{"anonymousId":"anon-bad-input",` + fields + `}`) }
	signed := []byte(`{"type":"identify","userId":"user-sig-1b2c3d4e5f","messageId":"sig-1"}`)

	tests := []struct {
		name       string
		path       string
		body       []byte
		headers    map[string]string
		wantStatus int
		wantCode   string
	}{
		{"invalid JSON", "/v1/identify", []byte(`{"userId":`), auth, 400, "invalid"},
		{"not an object", "/v1/identify", []byte(`[1,2]`), auth, 400, "invalid"},
		{"wrong batch type", "/v1/batch", []byte(`{"batch":{"type":"track"}}`), auth, 400, "invalid"},
		{"oversize event", "/v1/track", identifyWith(`"event":"` + strings.Repeat("e", 40<<10) + `"`), auth, 400, "too_large"},
		{"oversize batch", "/v1/batch", []byte(`{"batch":[` + strings.Repeat(`{"type":"track","event":"`+strings.Repeat("e", 20<<10)+`","anonymousId":"a"},`, 30) + `{}]}`), auth, 400, "too_large"},
		{"gzip bomb", "/v1/batch", bomb, map[string]string{"Authorization": basicAuth(testWriteKey), "Content-Encoding": "gzip"}, 400, "too_large"},
		{"deep nesting", "/v1/identify", []byte(deep), auth, 400, "invalid"},
		{"invalid UTF-8", "/v1/identify", identifyWith(`"userId":"bad` + "\xff\xfe" + `"`), auth, 400, "invalid"},
		{"NUL byte in an ID is stored as rejected", "/v1/identify", identifyWith(`"userId":"nul\u0000id"`), auth, 200, ""},
		{"ID over 400 characters is stored as rejected", "/v1/identify", identifyWith(`"userId":"` + long + `"`), auth, 200, ""},
		{"message ID over 100 characters is stored as rejected", "/v1/identify", identifyWith(`"userId":"u-long-mid-1","messageId":"` + long + `"`), auth, 200, ""},
		{"blocked ID is refused, the rest applied", "/v1/identify", identifyWith(`"userId":"undefined"`), auth, 200, ""},
		{"missing write key", "/v1/identify", identifyWith(`"userId":"u1"`), nil, 401, "unauthorized"},
		{"unknown write key", "/v1/identify", identifyWith(`"userId":"u1"`), map[string]string{"Authorization": basicAuth("nope")}, 401, "unauthorized"},
		{"webhook without signature", "/segment/webhook", signed, nil, 401, "unauthorized"},
		{"webhook with a wrong signature", "/segment/webhook", signed, map[string]string{"X-Signature": segment.Sign([]byte("wrong"), signed)}, 401, "unauthorized"},
		{"webhook signed right", "/segment/webhook", signed, map[string]string{"X-Signature": segment.Sign([]byte(webhookSecret), signed)}, 200, ""},
		{"lookup without password", "/api/v1/profiles?identifier=user_id:u1", nil, nil, 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodPost
			if strings.HasPrefix(tt.path, "/api/") {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, b.URL+tt.path, bytes.NewReader(tt.body))
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got status %d (%s), want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantCode == "" {
				return
			}
			var e struct{ Code, Message string }
			if err := json.Unmarshal(body, &e); err != nil || e.Code != tt.wantCode || e.Message == "" {
				t.Errorf("got body %s, want code %q with a message", body, tt.wantCode)
			}
		})
	}

	// The store is consistent: the anonymous ID is stored, no refused user ID is.
	p, ok := b.profile(t, "anonymous_id:anon-bad-input")
	if !ok {
		t.Fatal("anonymous ID of the rejected-but-parseable events is not stored")
	}
	for _, id := range p.Identifiers {
		if id.Kind == "user_id" {
			t.Errorf("a refused user ID was linked: %v", id)
		}
	}
	if _, ok := b.profile(t, "user_id:user-sig-1b2c3d4e5f"); !ok {
		t.Errorf("the correctly signed webhook delivery was not stored")
	}
	// The server still serves and counts what it refused.
	status, _ := b.get(t, "/readyz")
	if status != http.StatusOK {
		t.Errorf("readyz after bad input: got %d, want 200", status)
	}
	_, metrics := b.get(t, "/metrics")
	for _, want := range []string{`bridge_requests_rejected_total{`, `bridge_messages_rejected_total{`, `bridge_rules_fired_total{rule="refused_blocked_value"}`,
		`bridge_http_requests_total{route="/v1/:call",status="400"}`, `bridge_commit_seconds_bucket`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func (b *testBridge) get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(b.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestLookupAPIAuth(t *testing.T) {
	b := startBridge(t, "")
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"basic", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+testAdminPassword)), 404},
		{"bearer", "Bearer " + testAdminPassword, 404},
		{"wrong user", "Basic " + base64.StdEncoding.EncodeToString([]byte("root:"+testAdminPassword)), 401},
		{"wrong password", "Bearer nope", 401},
		{"none", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, b.URL+"/api/v1/profiles?identifier=user_id:nobody-7c2d", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("got %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestGeneratedSecretsShownOnce starts the bridge twice on one database with
// no secrets configured: the first start generates and prints them, the
// second reuses them silently.
func TestGeneratedSecretsShownOnce(t *testing.T) {
	db := filepath.Join(t.TempDir(), "bridge.db")
	start := func() string {
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncBuffer{addr: make(chan string, 1)}
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-db", db}, func(string) string { return "" }, out)
		}()
		<-out.addr
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v", err)
		}
		return out.String()
	}
	first := start()
	for _, name := range []string{"BRIDGE_ADMIN_PASSWORD", "BRIDGE_SEGMENT_WRITE_KEYS", "BRIDGE_SEGMENT_SHARED_SECRET", "BRIDGE_JIMO_SIGNING_SECRET", "BRIDGE_JIMO_WEBHOOK_SECRET"} {
		if !strings.Contains(first, "generated "+name+"=") {
			t.Errorf("first start did not print %s:\n%s", name, first)
		}
	}
	if second := start(); strings.Contains(second, "generated ") {
		t.Errorf("second start printed secrets again:\n%s", second)
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	env := map[string]string{"BRIDGE_ADDR": ":9999", "BRIDGE_SEGMENT_WRITE_KEYS": "a, b", "BRIDGE_JIMO_TOKEN_MODE": "derived", "BRIDGE_SEGMENT_RELAY": "true"}
	cfg, err := parseConfig("bridge", []string{"-addr", ":7777"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != ":7777" {
		t.Errorf("addr: got %q, want the flag's :7777 over the environment", cfg.Addr)
	}
	if strings.Join(cfg.SegmentWriteKeys, "|") != "a|b" || cfg.JimoTokenMode != "derived" || !cfg.SegmentRelay {
		t.Errorf("got %+v, want the environment's values", cfg)
	}
	env = map[string]string{"BRIDGE_JIMO_TOKEN_MODE": "weird"}
	if _, err := parseConfig("bridge", nil, func(k string) string { return env[k] }, io.Discard); err == nil {
		t.Errorf("token mode weird: got no error")
	}
	env = map[string]string{"BRIDGE_ADMIN_PASSWORD": "", "BRIDGE_SEGMENT_RATE_LIMIT": "fast"}
	_, err = parseConfig("bridge", nil, func(k string) string { return env[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "BRIDGE_SEGMENT_RATE_LIMIT") {
		t.Errorf("bad number: got %v, want an error naming the variable", err)
	}
}

// TestAPIPasswordGuessingIsThrottled: wrong passwords on /api/v1 count
// toward the same lockout as the login form.
func TestAPIPasswordGuessingIsThrottled(t *testing.T) {
	b := startBridge(t, "")
	var statuses []int
	for range 7 {
		req, _ := http.NewRequest(http.MethodGet, b.URL+"/api/v1/profiles?identifier=user_id:x", nil)
		req.Header.Set("Authorization", "Bearer guess")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if statuses[0] != http.StatusUnauthorized || statuses[len(statuses)-1] != http.StatusTooManyRequests {
		t.Errorf("got statuses %v, want 401 at first and 429 once locked out", statuses)
	}
}
