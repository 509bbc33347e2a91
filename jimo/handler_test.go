package jimo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/httperror"
)

// recordingStore is a fake Store that keeps what it is given and
// deduplicates on (source, ID) like the real one.
type recordingStore struct {
	mu   sync.Mutex
	msgs []mapping.Message
	seen map[string]bool
	err  error
}

func (s *recordingStore) Submit(_ context.Context, msgs []mapping.Message) ([]mapping.Receipt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	receipts := make([]mapping.Receipt, len(msgs))
	for i, m := range msgs {
		key := string(m.Source) + "|" + m.ID
		receipts[i].Duplicate = s.seen[key]
		s.seen[key] = true
		s.msgs = append(s.msgs, m)
	}
	return receipts, nil
}

func (s *recordingStore) messages() []mapping.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mapping.Message(nil), s.msgs...)
}

type testServer struct {
	e     *echo.Echo
	store *recordingStore
	logs  *bytes.Buffer
	now   time.Time
}

const testWebhookSecret = "jimo-webhook-secret-value"

func newTestServer(t *testing.T, mutate func(*Config)) *testServer {
	t.Helper()
	ts := &testServer{store: &recordingStore{}, logs: &bytes.Buffer{}, now: testReceivedAt}
	cfg := Config{
		Store:          ts.store,
		Session:        SessionConfig{Blocklist: mapping.NewBlocklist(nil), SigningSecret: testSigningSecret},
		WebhookSecret:  testWebhookSecret,
		AllowedOrigins: []string{"https://app.example.com"},
		Logger:         slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:            func() time.Time { return ts.now },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	e := echo.New()
	e.HTTPErrorHandler = httperror.Handler(cfg.Logger) // the server's own
	e.GET("/jimo/bridge.js", h.Script)
	e.HEAD("/jimo/bridge.js", h.Script)
	e.Match([]string{http.MethodPost, http.MethodOptions}, "/jimo/session", h.Session, h.CORS())
	e.POST("/jimo/webhook", h.Webhook)
	ts.e = e
	return ts
}

func (ts *testServer) do(method, target, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	ts.e.ServeHTTP(rec, req)
	return rec
}

func decodeJSON(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("response %q is not JSON: %v", rec.Body.String(), err)
	}
	return m
}

func TestSessionHandler(t *testing.T) {
	derivedCfg := func(c *Config) {
		c.Session.Mode = ModeDerived
		c.Session.TokenSecret = testTokenSecret
	}
	signedCfg := func(c *Config) { c.Session.RequireSignature = true }
	sig := func(v string) string { return Sign(testSigningSecret, v) }
	tests := []struct {
		name       string
		cfg        func(*Config)
		body       string
		wantStatus int
		wantBody   map[string]any // exact JSON answer for 200
		wantCode   string         // error code otherwise
		wantStored int
	}{
		{
			name: "shared ok", body: string(readFixture(t, "session_shared.json")), wantStatus: 200,
			wantBody:   map[string]any{"userId": goodUserID, "jimoToken": goodUserID},
			wantStored: 1,
		},
		{name: "guessable", body: `{"token":"12345","anonymousId":"` + anonID + `"}`, wantStatus: 422, wantCode: "unprocessable", wantStored: 1},
		{name: "signature missing", cfg: signedCfg, body: `{"token":"` + goodUserID + `"}`, wantStatus: 401, wantCode: "unauthorized"},
		{name: "signature wrong", cfg: signedCfg, body: `{"token":"` + goodUserID + `","signature":"` + sig("x") + `"}`, wantStatus: 401, wantCode: "unauthorized"},
		{
			name: "signature ok", cfg: signedCfg, body: `{"token":"` + goodUserID + `","signature":"` + sig(goodUserID) + `"}`, wantStatus: 200,
			wantBody: map[string]any{"userId": goodUserID, "jimoToken": goodUserID}, wantStored: 1,
		},
		{
			name: "derived ok", cfg: derivedCfg, body: `{"userId":"42","signature":"` + sig("42") + `","anonymousId":"` + anonID + `"}`, wantStatus: 200,
			wantBody: map[string]any{"userId": "42", "jimoToken": DeriveToken(testTokenSecret, "42")}, wantStored: 1,
		},
		{name: "derived without signature", cfg: derivedCfg, body: `{"userId":"42"}`, wantStatus: 401, wantCode: "unauthorized"},
		{name: "derived fixture has a bad signature", cfg: derivedCfg, body: string(readFixture(t, "session_derived.json")), wantStatus: 401, wantCode: "unauthorized"},
		{
			name: "logout", body: string(readFixture(t, "session_logout.json")), wantStatus: 200,
			wantBody: map[string]any{"userId": "", "jimoToken": ""}, wantStored: 1,
		},
		{
			name: "impersonating", body: `{"token":"` + goodUserID + `","impersonating":true}`, wantStatus: 200,
			wantBody: map[string]any{"userId": goodUserID, "jimoToken": ""}, wantStored: 1,
		},
		{name: "wrong type", body: `{"token":42}`, wantStatus: 400, wantCode: "invalid"},
		{name: "malformed", body: `{"token":`, wantStatus: 400, wantCode: "invalid"},
		{name: "oversize", body: `{"token":"` + goodUserID + `","name":"` + strings.Repeat("x", MaxSessionBody) + `"}`, wantStatus: 400, wantCode: "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.cfg)
			rec := ts.do(http.MethodPost, "/jimo/session", tt.body, nil)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", rec.Code, tt.wantStatus, rec.Body)
			}
			got := decodeJSON(t, rec)
			if tt.wantBody != nil {
				if len(got) != len(tt.wantBody) {
					t.Errorf("body: got %v, want %v", got, tt.wantBody)
				}
				for k, v := range tt.wantBody {
					if got[k] != v {
						t.Errorf("body[%q]: got %v, want %v", k, got[k], v)
					}
				}
			} else {
				if got["code"] != tt.wantCode || got["message"] == "" {
					t.Errorf("body: got %v, want code %q and a message", got, tt.wantCode)
				}
			}
			msgs := ts.store.messages()
			if len(msgs) != tt.wantStored {
				t.Fatalf("stored: got %d messages, want %d", len(msgs), tt.wantStored)
			}
			for _, m := range msgs {
				if bytes.Contains(m.Raw, []byte("signature")) {
					t.Errorf("stored Raw %s contains the signature", m.Raw)
				}
			}
			if req, err := DecodeSession([]byte(tt.body)); err == nil && len(req.Signature) >= 16 && strings.Contains(ts.logs.String(), req.Signature) {
				t.Errorf("logs contain the signature: %s", ts.logs)
			}
		})
	}
}

func TestSessionHandlerDerivedDeterministic(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Session.Mode = ModeDerived
		c.Session.TokenSecret = testTokenSecret
	})
	body := `{"userId":"user-7","signature":"` + Sign(testSigningSecret, "user-7") + `"}`
	var tokens []string
	for i := 0; i < 2; i++ {
		ts.now = ts.now.Add(time.Hour)
		rec := ts.do(http.MethodPost, "/jimo/session", body, nil)
		if rec.Code != 200 {
			t.Fatalf("status: got %d, want 200 (%s)", rec.Code, rec.Body)
		}
		tokens = append(tokens, decodeJSON(t, rec)["jimoToken"].(string))
	}
	if tokens[0] != tokens[1] || tokens[0] != DeriveToken(testTokenSecret, "user-7") {
		t.Errorf("tokens: got %q, want the same derived token twice", tokens)
	}
	msgs := ts.store.messages()
	if len(msgs) != 2 || msgs[0].UserID != "user-7" || msgs[0].JimoToken != tokens[0] {
		t.Errorf("stored: got %+v, want two messages linking user-7 to its token", msgs)
	}
}

func TestSessionHandlerStoreFailure(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.store.err = errors.New("disk on fire")
	rec := ts.do(http.MethodPost, "/jimo/session", `{"token":"`+goodUserID+`"}`, nil)
	if rec.Code != 500 {
		t.Fatalf("status: got %d, want 500", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "disk on fire") {
		t.Errorf("body %s shows the internal cause", rec.Body)
	}
	ts.store.err = mapping.Errorf(mapping.CodeUnavailable, "shutting down")
	if rec := ts.do(http.MethodPost, "/jimo/session", `{"token":"`+goodUserID+`"}`, nil); rec.Code != 503 {
		t.Errorf("store unavailable: got %d, want 503", rec.Code)
	}
}

func TestWebhookHandler(t *testing.T) {
	tour := string(readFixture(t, "webhook_tour_completed.json"))
	tests := []struct {
		name       string
		cfg        func(*Config)
		target     string
		header     map[string]string
		body       string
		wantStatus int
		wantStored int
	}{
		{name: "query secret", target: "/jimo/webhook?secret=" + testWebhookSecret, body: tour, wantStatus: 200, wantStored: 1},
		{name: "bearer", target: "/jimo/webhook", header: map[string]string{"Authorization": "Bearer " + testWebhookSecret}, body: tour, wantStatus: 200, wantStored: 1},
		{name: "wrong secret", target: "/jimo/webhook?secret=wrong", body: tour, wantStatus: 401},
		{name: "wrong bearer", target: "/jimo/webhook", header: map[string]string{"Authorization": "Bearer wrong"}, body: tour, wantStatus: 401},
		{name: "no secret", target: "/jimo/webhook", body: tour, wantStatus: 401},
		{name: "not configured", cfg: func(c *Config) { c.WebhookSecret = "" }, target: "/jimo/webhook?secret=", body: tour, wantStatus: 401},
		{name: "missing token stored", target: "/jimo/webhook?secret=" + testWebhookSecret, body: string(readFixture(t, "webhook_missing_token.json")), wantStatus: 200, wantStored: 1},
		{name: "malformed", target: "/jimo/webhook?secret=" + testWebhookSecret, body: `{"event":`, wantStatus: 400},
		{name: "oversize", target: "/jimo/webhook?secret=" + testWebhookSecret, body: `{"event":"e","pad":"` + strings.Repeat("x", MaxWebhookBody) + `"}`, wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.cfg)
			rec := ts.do(http.MethodPost, tt.target, tt.body, tt.header)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: got %d, want %d (%s)", rec.Code, tt.wantStatus, rec.Body)
			}
			if n := len(ts.store.messages()); n != tt.wantStored {
				t.Errorf("stored: got %d messages, want %d", n, tt.wantStored)
			}
			if strings.Contains(ts.logs.String(), testWebhookSecret) || strings.Contains(rec.Body.String(), testWebhookSecret) {
				t.Errorf("the webhook secret leaked into the logs or the answer:\n%s\n%s", ts.logs, rec.Body)
			}
		})
	}
}

func TestWebhookHandlerReplay(t *testing.T) {
	ts := newTestServer(t, nil)
	body := string(readFixture(t, "webhook_tour_completed.json"))
	for i := 0; i < 2; i++ {
		ts.now = ts.now.Add(time.Minute) // Jimo retries later; the ID must not depend on arrival
		if rec := ts.do(http.MethodPost, "/jimo/webhook?secret="+testWebhookSecret, body, nil); rec.Code != 200 {
			t.Fatalf("delivery %d: got %d, want 200", i, rec.Code)
		}
	}
	msgs := ts.store.messages()
	if len(msgs) != 2 {
		t.Fatalf("stored: got %d submissions, want 2", len(msgs))
	}
	if msgs[0].ID != msgs[1].ID {
		t.Errorf("message IDs: got %q and %q, want the same", msgs[0].ID, msgs[1].ID)
	}
	if msgs[0].Source != mapping.SourceJimoWebhook || msgs[0].JimoTokenOrUserID != "0f8fad5b-d9cb-469f-a165-70867728950e" {
		t.Errorf("message: got %+v, want source %q with the identify token to resolve", msgs[0], mapping.SourceJimoWebhook)
	}
}

func TestCORS(t *testing.T) {
	const allowed = "https://app.example.com"
	tests := []struct {
		name       string
		method     string
		origin     string
		wantStatus int
		wantAllow  string
	}{
		{name: "preflight allowed", method: http.MethodOptions, origin: allowed, wantStatus: 204, wantAllow: allowed},
		{name: "preflight disallowed", method: http.MethodOptions, origin: "https://evil.example", wantStatus: 403},
		{name: "preflight without origin", method: http.MethodOptions, wantStatus: 403},
		{name: "preflight near miss", method: http.MethodOptions, origin: allowed + ".evil.example", wantStatus: 403},
		{name: "post allowed", method: http.MethodPost, origin: allowed, wantStatus: 200, wantAllow: allowed},
		{name: "post disallowed (a text/plain POST needs no preflight)", method: http.MethodPost, origin: "https://evil.example", wantStatus: 403},
		{name: "post without origin", method: http.MethodPost, wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			header := map[string]string{}
			if tt.origin != "" {
				header["Origin"] = tt.origin
			}
			if tt.method == http.MethodOptions {
				header["Access-Control-Request-Method"] = "POST"
				header["Access-Control-Request-Headers"] = "content-type"
			}
			body := ""
			if tt.method == http.MethodPost {
				body = `{"token":"` + goodUserID + `"}`
			}
			rec := ts.do(tt.method, "/jimo/session", body, header)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", rec.Code, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusForbidden {
				var body httperror.Body
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Code != mapping.CodeForbidden || !strings.Contains(body.Message, "BRIDGE_ALLOWED_ORIGINS") {
					t.Errorf("refusal body: got %s (%v), want code forbidden and a message naming BRIDGE_ALLOWED_ORIGINS", rec.Body, err)
				}
			}
			h := rec.Header()
			if got := h.Get("Access-Control-Allow-Origin"); got != tt.wantAllow {
				t.Errorf("Allow-Origin: got %q, want %q", got, tt.wantAllow)
			}
			if got := h.Values("Vary"); len(got) == 0 || !strings.Contains(strings.Join(got, ","), "Origin") {
				t.Errorf("Vary: got %q, want Origin", got)
			}
			if tt.method == http.MethodOptions && tt.wantAllow != "" {
				if got := h.Get("Access-Control-Allow-Methods"); got != "POST" {
					t.Errorf("Allow-Methods: got %q, want POST", got)
				}
				if got := h.Get("Access-Control-Allow-Headers"); got != "Content-Type" {
					t.Errorf("Allow-Headers: got %q, want Content-Type", got)
				}
			}
			if tt.wantAllow == "" && h.Get("Access-Control-Allow-Methods") != "" {
				t.Errorf("disallowed origin got Allow-Methods %q, want none", h.Get("Access-Control-Allow-Methods"))
			}
			if tt.method == http.MethodOptions && len(ts.store.messages()) != 0 {
				t.Errorf("a preflight stored a message")
			}
		})
	}
}

// doFrom sends a session report from the peer address ip with the given headers.
func (ts *testServer) doFrom(ip, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/jimo/session", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = ip + ":40000"
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	ts.e.ServeHTTP(rec, req)
	return rec
}

func TestSessionRateLimit(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.RateLimit = RateLimit{PerSecond: 2, Burst: 3} })
	body := `{"token":"` + goodUserID + `"}`
	from := func(ip string) int { return ts.doFrom(ip, body, nil).Code }
	for i := 0; i < 3; i++ {
		if code := from("192.0.2.1"); code != 200 {
			t.Fatalf("request %d within the burst: got %d, want 200", i+1, code)
		}
	}
	rec := ts.doFrom("192.0.2.1", body, nil)
	if rec.Code != 429 {
		t.Fatalf("over the burst: got %d, want 429", rec.Code)
	}
	if got := rec.Header().Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After: got %q, want \"1\"", got)
	}
	if got := decodeJSON(t, rec)["code"]; got != "rate_limited" {
		t.Errorf("code: got %v, want rate_limited", got)
	}
	if code := from("192.0.2.2"); code != 200 {
		t.Errorf("another address: got %d, want 200", code)
	}
	// Without an IPExtractor, forwarding headers are the client's word: not believed.
	for _, h := range []string{"X-Forwarded-For", "X-Real-IP"} {
		if rec := ts.doFrom("192.0.2.1", body, map[string]string{h: "203.0.113.9"}); rec.Code != 429 {
			t.Errorf("%s from the limited peer: got %d, want 429", h, rec.Code)
		}
	}
	ts.now = ts.now.Add(500 * time.Millisecond) // one token back at 2/s
	if code := from("192.0.2.1"); code != 200 {
		t.Errorf("after refill: got %d, want 200", code)
	}
	if code := from("192.0.2.1"); code != 429 {
		t.Errorf("refill spent: got %d, want 429", code)
	}
}

func TestRateLimitZeroMeansNoLimit(t *testing.T) {
	for _, perSecond := range []float64{0, -1} {
		ts := newTestServer(t, func(c *Config) { c.RateLimit = RateLimit{PerSecond: perSecond} })
		for i := 0; i < 50; i++ {
			if rec := ts.do(http.MethodPost, "/jimo/session", `{"token":"`+goodUserID+`"}`, nil); rec.Code != 200 {
				t.Fatalf("PerSecond %v, request %d: got %d, want 200", perSecond, i, rec.Code)
			}
		}
	}
}

func TestLimiterForgetsIdleClients(t *testing.T) {
	now := testReceivedAt
	l := newLimiter(RateLimit{PerSecond: 10, Burst: 20}, func() time.Time { return now })
	for i := 0; i < 100; i++ {
		l.allow(strings.Repeat("x", i))
	}
	now = now.Add(2 * time.Minute)
	l.allow("new")
	if got := len(l.clients); got != 1 {
		t.Errorf("clients after idle sweep: got %d, want 1", got)
	}
}

func TestScript(t *testing.T) {
	ts := newTestServer(t, nil)
	rec := ts.do(http.MethodGet, "/jimo/bridge.js", "", nil)
	if rec.Code != 200 {
		t.Fatalf("status: got %d, want 200", rec.Code)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/javascript; charset=utf-8" {
		t.Errorf("Content-Type: got %q, want application/javascript; charset=utf-8", got)
	}
	if got := rec.Header().Get("Cache-Control"); got != "public, max-age=300" {
		t.Errorf("Cache-Control: got %q, want public, max-age=300", got)
	}
	etag := rec.Header().Get("ETag")
	if !strings.HasPrefix(etag, `"`) || len(etag) < 10 {
		t.Errorf("ETag: got %q, want a quoted tag", etag)
	}
	if !bytes.Equal(rec.Body.Bytes(), ScriptSource()) || !bytes.Contains(rec.Body.Bytes(), []byte("jimoBridge")) {
		t.Errorf("body: got %d bytes, want the embedded script", rec.Body.Len())
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		rec := ts.do(http.MethodGet, "/jimo/bridge.js", "", map[string]string{"If-None-Match": inm})
		if rec.Code != 304 || rec.Body.Len() != 0 {
			t.Errorf("If-None-Match %s: got %d with %d bytes, want 304 without a body", inm, rec.Code, rec.Body.Len())
		}
	}
	if rec := ts.do(http.MethodGet, "/jimo/bridge.js", "", map[string]string{"If-None-Match": `"stale"`}); rec.Code != 200 {
		t.Errorf("stale If-None-Match: got %d, want 200", rec.Code)
	}
	if rec := ts.do(http.MethodHead, "/jimo/bridge.js", "", nil); rec.Code != 200 {
		t.Errorf("HEAD: got %d, want 200", rec.Code)
	}
}

func TestNewHandlerNeedsStore(t *testing.T) {
	if _, err := NewHandler(Config{}); err == nil {
		t.Errorf("NewHandler without a store: got no error, want one")
	}
}
