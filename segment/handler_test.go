package segment

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/httperror"
)

// recordingStore is a Store that keeps what it is given.
type recordingStore struct {
	mu   sync.Mutex
	msgs []mapping.Message
	err  error
}

func (s *recordingStore) Submit(_ context.Context, msgs []mapping.Message) ([]mapping.Receipt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	s.msgs = append(s.msgs, msgs...)
	return make([]mapping.Receipt, len(msgs)), nil
}

// recordingMetrics counts what the handler reports.
type recordingMetrics struct {
	mu       sync.Mutex
	received int
	rejected map[string]int
}

func (m *recordingMetrics) Received(_ mapping.Source, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.received += n
}

func (m *recordingMetrics) Rejected(_ mapping.Source, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rejected == nil {
		m.rejected = map[string]int{}
	}
	m.rejected[reason]++
}

// testServer wires a Handler into Echo the way cmd/bridge does.
type testServer struct {
	echo    *echo.Echo
	store   *recordingStore
	metrics *recordingMetrics
	now     time.Time
}

func newTestServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	s := &testServer{store: &recordingStore{}, metrics: &recordingMetrics{}, now: receivedAt}
	cfg.Store, cfg.Metrics = s.store, s.metrics
	if cfg.WriteKeys.Len() == 0 {
		cfg.WriteKeys = NewWriteKeys([]string{"wk_server", "wk_browser", "wk_browser_public"})
	}
	if cfg.SharedSecret == nil {
		cfg.SharedSecret = webhookSecret
	}
	cfg.Now = func() time.Time { return s.now }
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	e.HTTPErrorHandler = httperror.Handler(slog.New(slog.DiscardHandler)) // the server's own
	v1 := e.Group("/v1", CORS())
	v1.POST("/:call", h.TrackingAPI)
	v1.OPTIONS("/:call", Preflight)
	e.Match([]string{http.MethodPost, http.MethodPut, http.MethodPatch}, "/segment/webhook", h.Webhook)
	s.echo = e
	return s
}

func basic(key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"))
}

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func (s *testServer) do(t *testing.T, method, path string, body []byte, header map[string]string) response {
	t.Helper()
	return s.doFrom(t, "192.0.2.1:1234", method, path, body, header)
}

// doFrom is do from the client address remote (host:port).
func (s *testServer) doFrom(t *testing.T, remote, method, path string, body []byte, header map[string]string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.RemoteAddr = remote
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.echo.ServeHTTP(rec, req)
	r := response{status: rec.Code, header: rec.Header()}
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &r.body); err != nil {
			t.Fatalf("got body %q, want JSON", rec.Body)
		}
	}
	return r
}

func TestTrackingAPIHandler(t *testing.T) {
	identify := []byte(`{"userId":"u1","traits":{"email":"a@x.io"}}`)
	batch := readTestdata(t, "api_batch_analytics_go.json")
	tests := []struct {
		name       string
		path       string
		body       []byte
		header     map[string]string
		wantStatus int
		wantCode   string
		wantStored int
	}{
		{"identify, JSON", "/v1/identify", identify, map[string]string{"Authorization": basic("wk_server"), "Content-Type": "application/json"}, 200, "", 1},
		{"short form, text/plain", "/v1/i", identify, map[string]string{"Authorization": basic("wk_server"), "Content-Type": "text/plain"}, 200, "", 1},
		{"no content type", "/v1/track", []byte(`{"userId":"u1","event":"E"}`), map[string]string{"Authorization": basic("wk_server")}, 200, "", 1},
		{"gzip batch", "/v1/batch", gzipBytes(t, batch), map[string]string{"Authorization": basic("wk_server"), "Content-Encoding": "gzip"}, 200, "", 2},
		{"import", "/v1/import", batch, map[string]string{"Authorization": basic("wk_server")}, 200, "", 2},
		{"b", "/v1/b", batch, map[string]string{"Authorization": basic("wk_server")}, 200, "", 2},
		{"write key in the body", "/v1/identify", readTestdata(t, "api_identify_analytics_js.json"), nil, 200, "", 0},
		{"batch write key", "/v1/batch", []byte(`{"writeKey":"wk_browser","batch":[{"type":"identify","userId":"u"}]}`), nil, 200, "", 1},
		{"rejected event still succeeds", "/v1/identify", []byte(`{"traits":{}}`), map[string]string{"Authorization": basic("wk_server")}, 200, "", 1},
		{"empty batch", "/v1/batch", []byte(`{"batch":[]}`), map[string]string{"Authorization": basic("wk_server")}, 200, "", 0},
		{"unknown route", "/v1/purchase", identify, map[string]string{"Authorization": basic("wk_server")}, 404, "not_found", 0},
		{"no write key", "/v1/identify", identify, nil, 401, "unauthorized", 0},
		{"no write key, empty batch", "/v1/batch", []byte(`{"batch":[]}`), nil, 401, "unauthorized", 0},
		{"unknown header key", "/v1/identify", identify, map[string]string{"Authorization": basic("wk_other")}, 401, "unauthorized", 0},
		{"bearer", "/v1/identify", identify, map[string]string{"Authorization": "Bearer wk_server"}, 401, "unauthorized", 0},
		{"unknown body key", "/v1/identify", []byte(`{"userId":"u","writeKey":"wk_other"}`), nil, 401, "unauthorized", 0},
		{"one event without a key", "/v1/batch", []byte(`{"batch":[{"type":"identify","userId":"u","writeKey":"wk_browser"},{"type":"identify","userId":"v"}]}`), nil, 401, "unauthorized", 0},
		{"invalid JSON", "/v1/identify", []byte(`{"userId":`), map[string]string{"Authorization": basic("wk_server")}, 400, "invalid", 0},
		{"oversize call", "/v1/track", []byte(`{"userId":"u","event":"` + strings.Repeat("x", MaxEventBytes) + `"}`), map[string]string{"Authorization": basic("wk_server")}, 400, "too_large", 0},
		{"oversize batch", "/v1/batch", []byte(`{"batch":[],"x":"` + strings.Repeat("x", MaxBatchBytes) + `"}`), map[string]string{"Authorization": basic("wk_server")}, 400, "too_large", 0},
		{"unsupported encoding", "/v1/identify", identify, map[string]string{"Authorization": basic("wk_server"), "Content-Encoding": "br"}, 400, "invalid", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Config{})
			r := s.do(t, http.MethodPost, tt.path, tt.body, tt.header)
			if r.status != tt.wantStatus {
				t.Fatalf("got status %d (%v), want %d", r.status, r.body, tt.wantStatus)
			}
			if tt.wantCode == "" {
				if r.body["success"] != true {
					t.Errorf("got body %v, want {\"success\":true}", r.body)
				}
			} else if r.body["code"] != tt.wantCode || r.body["message"] == "" {
				t.Errorf("got body %v, want code %q and a message", r.body, tt.wantCode)
			}
			if tt.wantStored > 0 && len(s.store.msgs) != tt.wantStored {
				t.Errorf("got %d stored messages, want %d", len(s.store.msgs), tt.wantStored)
			}
			if tt.wantStatus != 200 && len(s.store.msgs) != 0 {
				t.Errorf("got %d stored messages, want none", len(s.store.msgs))
			}
			for _, m := range s.store.msgs {
				if m.Source != mapping.SourceSegmentAPI || !m.ReceivedAt.Equal(receivedAt) {
					t.Errorf("got source %q, receivedAt %v, want %q, %v", m.Source, m.ReceivedAt, mapping.SourceSegmentAPI, receivedAt)
				}
			}
		})
	}
}

func TestTrackingAPIHandlerMetrics(t *testing.T) {
	s := newTestServer(t, Config{})
	body := []byte(`{"batch":[{"type":"identify","userId":"u"},{"type":"identify"},{"type":"nope","userId":"u"}]}`)
	if r := s.do(t, http.MethodPost, "/v1/batch", body, map[string]string{"Authorization": basic("wk_server")}); r.status != 200 {
		t.Fatalf("got status %d, want 200", r.status)
	}
	s.do(t, http.MethodPost, "/v1/batch", body, nil)
	if s.metrics.received != 3 {
		t.Errorf("got %d received, want 3", s.metrics.received)
	}
	want := map[string]int{ReasonMissingIdentity: 1, ReasonUnknownType: 1, "unauthorized": 1}
	for reason, n := range want {
		if s.metrics.rejected[reason] != n {
			t.Errorf("got rejected %v, want %v", s.metrics.rejected, want)
			break
		}
	}
}

func TestTrackingAPIStoreFailure(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
	}{
		{"plain error is internal", errors.New("disk full"), 500},
		{"classified error passes through", &mapping.Error{Code: mapping.CodeUnavailable, Message: "shutting down"}, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Config{})
			s.store.err = tt.err
			r := s.do(t, http.MethodPost, "/v1/identify", []byte(`{"userId":"u"}`), map[string]string{"Authorization": basic("wk_server")})
			if r.status != tt.wantStatus {
				t.Errorf("got status %d, want %d", r.status, tt.wantStatus)
			}
			if msg, _ := r.body["message"].(string); strings.Contains(msg, "disk") {
				t.Errorf("got message %q, want the cause kept out of the answer", msg)
			}
		})
	}
}

func TestTrackingAPIRateLimit(t *testing.T) {
	s := newTestServer(t, Config{RateLimit: RateLimit{PerSecond: 2, Burst: 4}})
	auth := map[string]string{"Authorization": basic("wk_server")}
	three := []byte(`{"batch":[{"type":"identify","userId":"a"},{"type":"identify","userId":"b"},{"type":"identify","userId":"c"}]}`)
	one := []byte(`{"userId":"u"}`)
	const client, other = "192.0.2.1:1000", "198.51.100.7:2000"
	big := []byte(`{"batch":[` + strings.Repeat(`{"type":"identify","userId":"a"},`, 2499) + `{"type":"identify","userId":"a"}]}`)

	steps := []struct {
		name       string
		advance    time.Duration
		remote     string
		body       []byte
		header     map[string]string
		wantStatus int
		wantRetry  string
	}{
		{"burst", 0, client, three, auth, 200, ""},
		{"one left", 0, client, one, auth, 200, ""},
		{"empty", 0, client, one, auth, 429, "1"},
		{"three needs 1.5 s", 0, client, three, auth, 429, "2"},
		{"another key from the same address has its own bucket", 0, client, []byte(`{"userId":"u","writeKey":"wk_browser"}`), nil, 200, ""},
		{"the same key from another address has its own bucket", 0, other, one, auth, 200, ""},
		{"refilled after a second", time.Second, client, []byte(`{"batch":[{"type":"identify","userId":"a"},{"type":"identify","userId":"b"}]}`), auth, 200, ""},
		{"a 2,500-event batch waits for a full bucket", 0, client, big, auth, 429, "2"},
		{"and is accepted when it is full", 2 * time.Second, client, big, auth, 200, ""},
		{"costing the burst only: half a second later one event fits", 500 * time.Millisecond, client, one, auth, 200, ""},
	}
	for _, st := range steps {
		s.now = s.now.Add(st.advance)
		r := s.doFrom(t, st.remote, http.MethodPost, "/v1/batch", st.body, st.header)
		if !bytes.HasPrefix(st.body, []byte(`{"batch"`)) {
			r = s.doFrom(t, st.remote, http.MethodPost, "/v1/identify", st.body, st.header)
		}
		if r.status != st.wantStatus {
			t.Fatalf("%s: got status %d (%v), want %d", st.name, r.status, r.body, st.wantStatus)
		}
		if got := r.header.Get("Retry-After"); got != st.wantRetry {
			t.Errorf("%s: got Retry-After %q, want %q", st.name, got, st.wantRetry)
		}
		if st.wantStatus == 429 && r.body["code"] != "rate_limited" {
			t.Errorf("%s: got body %v, want code rate_limited", st.name, r.body)
		}
	}
}

func TestTrackingAPINoRateLimit(t *testing.T) {
	s := newTestServer(t, Config{RateLimit: RateLimit{PerSecond: 0, Burst: 1}})
	for i := range 50 {
		if r := s.do(t, http.MethodPost, "/v1/identify", []byte(`{"userId":"u"}`), map[string]string{"Authorization": basic("wk_server")}); r.status != 200 {
			t.Fatalf("request %d: got status %d, want 200 (0 means no limit)", i, r.status)
		}
	}
}

func TestLimiterForgetsFullBuckets(t *testing.T) {
	l := newLimiter(RateLimit{PerSecond: 10, Burst: 10})
	now := receivedAt
	for i := range 3000 {
		l.take("wk", "ip-"+strconv.Itoa(i), 5, now)
	}
	if wait := l.take("wk", "ip-0", 10, now); wait == 0 {
		t.Fatalf("ip-0 after spending 5 of 10: got no wait for 10, want one")
	}
	now = now.Add(2 * time.Second) // every bucket has refilled
	l.take("wk", "ip-new", 1, now.Add(sweepEvery))
	if n := len(l.buckets); n != 1 {
		t.Errorf("got %d buckets after they all refilled, want only the new one", n)
	}
}

func TestWebhookHandler(t *testing.T) {
	identify := readTestdata(t, "webhook_identify.json")
	batch := readTestdata(t, "webhook_batch.json")
	signed := func(b []byte) map[string]string {
		return map[string]string{"X-Signature": Sign(webhookSecret, b), "Content-Type": "application/json"}
	}
	tests := []struct {
		name       string
		secret     []byte
		method     string
		body       []byte
		header     map[string]string
		wantStatus int
		wantStored int
	}{
		{"signed identify", webhookSecret, http.MethodPost, identify, signed(identify), 200, 1},
		{"PUT", webhookSecret, http.MethodPut, identify, signed(identify), 200, 1},
		{"PATCH", webhookSecret, http.MethodPatch, identify, signed(identify), 200, 1},
		{"signed array", webhookSecret, http.MethodPost, batch, signed(firstElementByHand(t, batch)), 200, 3},
		{"gzip, signed over the decompressed body", webhookSecret, http.MethodPost, gzipBytes(t, identify),
			map[string]string{"X-Signature": Sign(webhookSecret, identify), "Content-Encoding": "gzip"}, 200, 1},
		{"no signature", webhookSecret, http.MethodPost, identify, nil, 401, 0},
		{"bad signature", webhookSecret, http.MethodPost, identify, map[string]string{"X-Signature": Sign([]byte("x"), identify)}, 401, 0},
		{"signed but invalid", webhookSecret, http.MethodPost, []byte(`{"type":`), signed([]byte(`{"type":`)), 400, 0},
		{"write key instead of a signature", webhookSecret, http.MethodPost, identify, map[string]string{"Authorization": basic("wk_server")}, 401, 0},
		{"write key in the body instead of a signature", webhookSecret, http.MethodPost, []byte(`{"type":"identify","userId":"u","writeKey":"wk_server"}`), nil, 401, 0},
		{"signed, with a write key besides", webhookSecret, http.MethodPost, identify, map[string]string{"X-Signature": Sign(webhookSecret, identify), "Authorization": basic("wk_server")}, 200, 1},
		{"signed, with the right bearer", webhookSecret, http.MethodPost, identify, map[string]string{"X-Signature": Sign(webhookSecret, identify), "Authorization": "Bearer " + string(webhookSecret)}, 200, 1},
		{"signed, with a wrong bearer", webhookSecret, http.MethodPost, identify, map[string]string{"X-Signature": Sign(webhookSecret, identify), "Authorization": "Bearer wk_server"}, 401, 0},
		{"bearer without a signature", webhookSecret, http.MethodPost, identify, map[string]string{"Authorization": "Bearer " + string(webhookSecret)}, 401, 0},
		{"signature not hex", webhookSecret, http.MethodPost, identify, map[string]string{"X-Signature": "not-hex"}, 401, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Config{SharedSecret: tt.secret})
			r := s.do(t, tt.method, "/segment/webhook", tt.body, tt.header)
			if r.status != tt.wantStatus {
				t.Fatalf("got status %d (%v), want %d", r.status, r.body, tt.wantStatus)
			}
			if tt.wantStatus == 200 && r.body["success"] != true {
				t.Errorf("got body %v, want {\"success\":true}", r.body)
			}
			if len(s.store.msgs) != tt.wantStored {
				t.Errorf("got %d stored messages, want %d", len(s.store.msgs), tt.wantStored)
			}
			for _, m := range s.store.msgs {
				if m.Source != mapping.SourceSegmentWebhook {
					t.Errorf("got source %q, want %q", m.Source, mapping.SourceSegmentWebhook)
				}
			}
		})
	}
}

func TestWebhookHandlerBodyLimit(t *testing.T) {
	s := newTestServer(t, Config{SharedSecret: webhookSecret, MaxWebhookBytes: 100})
	body := []byte(`{"type":"identify","userId":"` + strings.Repeat("u", 100) + `"}`)
	r := s.do(t, http.MethodPost, "/segment/webhook", body, map[string]string{"X-Signature": Sign(webhookSecret, body)})
	if r.status != 400 || r.body["code"] != "too_large" {
		t.Errorf("got %d %v, want 400 too_large", r.status, r.body)
	}
}

func TestCORS(t *testing.T) {
	s := newTestServer(t, Config{})
	t.Run("preflight", func(t *testing.T) {
		r := s.do(t, http.MethodOptions, "/v1/batch", nil, map[string]string{
			"Origin": "https://shop.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type",
		})
		if r.status != http.StatusNoContent {
			t.Fatalf("got status %d, want 204", r.status)
		}
		want := map[string]string{
			"Access-Control-Allow-Origin":  "https://shop.example",
			"Access-Control-Allow-Methods": "POST, OPTIONS",
			"Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
			"Access-Control-Max-Age":       "86400",
			"Vary":                         "Origin",
		}
		for k, v := range want {
			if got := r.header.Get(k); got != v {
				t.Errorf("got %s %q, want %q", k, got, v)
			}
		}
	})
	t.Run("request", func(t *testing.T) {
		r := s.do(t, http.MethodPost, "/v1/t", []byte(`{"userId":"u","event":"E","writeKey":"wk_browser"}`), map[string]string{"Origin": "http://localhost:3000", "Content-Type": "text/plain"})
		if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
			t.Errorf("got %d with Allow-Origin %q, want 200 with the origin", r.status, r.header.Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("error", func(t *testing.T) {
		r := s.do(t, http.MethodPost, "/v1/t", []byte(`{}`), map[string]string{"Origin": "https://a.example"})
		if r.status != 401 || r.header.Get("Access-Control-Allow-Origin") != "https://a.example" {
			t.Errorf("got %d with Allow-Origin %q, want 401 readable by the page", r.status, r.header.Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("middleware answers a preflight itself", func(t *testing.T) {
		e := echo.New()
		e.Use(CORS())
		e.POST("/v1/:call", func(c echo.Context) error { return c.NoContent(http.StatusTeapot) })
		req := httptest.NewRequest(http.MethodOptions, "/v1/track", nil)
		req.Header.Set("Origin", "https://b.example")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Methods") == "" {
			t.Errorf("got %d %v, want 204 with the preflight headers", rec.Code, rec.Header())
		}
	})
}

func TestNewHandlerNeedsStore(t *testing.T) {
	if _, err := NewHandler(Config{}); err == nil {
		t.Error("got no error, want one for a missing Store")
	}
}

// TestBodiesOverTheMemoryBudget: a body that needs more memory than the
// route's budget has free is answered 503 with Retry-After (Segment and its
// libraries retry), on the Tracking API and on the webhook alike.
func TestBodiesOverTheMemoryBudget(t *testing.T) {
	s := newTestServer(t, Config{MaxPendingBytes: chunkSize})
	big := []byte(`{"batch":[{"type":"identify","userId":"u","traits":{"x":"` + strings.Repeat("x", chunkSize) + `"}}]}`)
	delivery := []byte(`{"type":"identify","userId":"u","traits":{"x":"` + strings.Repeat("x", chunkSize) + `"}}`)
	small := []byte(`{"type":"identify","userId":"u"}`)
	tests := []struct {
		name, path string
		body       []byte
		header     map[string]string
		want       int
	}{
		{"Tracking API", "/v1/batch", big, map[string]string{"Authorization": basic("wk_server")}, 503},
		{"webhook", "/segment/webhook", delivery, map[string]string{"X-Signature": Sign(webhookSecret, delivery)}, 503},
		{"a small body still fits", "/segment/webhook", small, map[string]string{"X-Signature": Sign(webhookSecret, small)}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.do(t, http.MethodPost, tt.path, tt.body, tt.header)
			if r.status != tt.want {
				t.Fatalf("got status %d (%v), want %d", r.status, r.body, tt.want)
			}
			if tt.want == 503 && (r.header.Get("Retry-After") != "1" || r.body["code"] != "unavailable") {
				t.Errorf("got Retry-After %q, body %v; want 1 and code unavailable", r.header.Get("Retry-After"), r.body)
			}
		})
	}
}
