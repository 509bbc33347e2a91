package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

// jimoPageOrigin is the page origin the Jimo end-to-end bridges allow.
const jimoPageOrigin = "https://app.example.test"

// newUUID returns a random (version 4) UUID: unique and not guessable, as
// shared token mode requires of a Jimo token.
func newUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// acceptUnsigned starts a bridge that takes session reports without a
// signature although its signing secret is configured, as reports of
// commands bridge.js observes (session:reset, identify) carry none.
const acceptUnsigned = "-jimo-require-signature=false"

// signUserID is what the app's backend sends as a session signature.
func signUserID(secret, value string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil))
}

// httpResult is a response read whole.
type httpResult struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request to the bridge and reads the answer.
func (b *testBridge) do(t testing.TB, method, path string, body []byte, headers map[string]string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, b.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return httpResult{status: resp.StatusCode, header: resp.Header, body: out}
}

// session posts a session report as the page would, from origin.
func (b *testBridge) session(t testing.TB, origin string, report map[string]any) httpResult {
	t.Helper()
	body, err := json.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	return b.do(t, http.MethodPost, "/jimo/session", body, map[string]string{"Content-Type": "application/json", "Origin": origin})
}

// sessionAnswer decodes a 200 answer of POST /jimo/session.
func sessionAnswer(t testing.TB, r httpResult) (userID, jimoToken string) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("POST /jimo/session: got status %d, want 200: %s", r.status, r.body)
	}
	var out struct {
		UserID    string `json:"userId"`
		JimoToken string `json:"jimoToken"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("POST /jimo/session: %v: %s", err, r.body)
	}
	return out.UserID, out.JimoToken
}

// errorAnswer decodes an error answer and checks its status and code.
func errorAnswer(t testing.TB, r httpResult, wantStatus int, wantCode mapping.Code) string {
	t.Helper()
	var out struct {
		Code    mapping.Code `json:"code"`
		Message string       `json:"message"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, r.body)
	}
	if r.status != wantStatus || out.Code != wantCode {
		t.Fatalf("got status %d code %q (%s), want %d %q", r.status, out.Code, out.Message, wantStatus, wantCode)
	}
	if out.Message == "" {
		t.Errorf("error has no message: %s", r.body)
	}
	return out.Message
}

// mustProfile looks a profile up and fails the test when there is none.
func mustProfile(t testing.TB, b *testBridge, identifier string) store.Profile {
	t.Helper()
	p, ok := b.profile(t, identifier)
	if !ok {
		t.Fatalf("lookup %s: not found, want a profile", identifier)
	}
	return p
}

// wantIdentifiers checks that p holds every identifier in want (KIND:VALUE).
func wantIdentifiers(t testing.TB, p store.Profile, want ...string) {
	t.Helper()
	got := identifierSet(p)
	for _, w := range want {
		if !got[w] {
			t.Errorf("profile %d lacks %s; got %v", p.ID, w, got)
		}
	}
}

// warnings reads GET /api/v1/warnings as the admin.
func (b *testBridge) warnings(t testing.TB) []store.Warning {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.URL+"/api/v1/warnings", nil)
	req.SetBasicAuth("admin", testAdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /api/v1/warnings: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/warnings: got status %d, want 200: %s", resp.StatusCode, body)
	}
	var out struct {
		Warnings []store.Warning `json:"warnings"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("GET /api/v1/warnings: %v: %s", err, body)
	}
	return out.Warnings
}

// metric returns the value of one series of GET /metrics, written as in the
// exposition format (name{label="value",...}), or 0 when absent.
func (b *testBridge) metric(t testing.TB, series string) float64 {
	t.Helper()
	return value(find(t, b.scrape(t), series))
}

// TestJimoSessionJoinsSegmentIdentify is the end-to-end case: Segment's
// own Go library identifies user U from browser A1, the page reports a Jimo
// session reset for U from browser A2, and one profile holds U, A1 and A2.
func TestJimoSessionJoinsSegmentIdentify(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, acceptUnsigned)
	u, a1, a2 := newUUID(t), newUUID(t), newUUID(t)

	cb := &recordingCallback{}
	client := newClient(t, b, cb)
	must(t, client.Enqueue(analytics.Identify{UserId: u, AnonymousId: a1, Traits: analytics.NewTraits().SetName("Ada")}))
	if err := client.Close(); err != nil {
		t.Fatalf("close client: %v", err)
	}
	if len(cb.failed) > 0 || cb.succeeded != 1 {
		t.Fatalf("analytics-go: got %d delivered and failures %v, want 1 delivered", cb.succeeded, cb.failed)
	}

	r := b.session(t, jimoPageOrigin, map[string]any{"token": u, "anonymousId": a2, "email": "ada@example.com"})
	if got := r.header.Get("Access-Control-Allow-Origin"); got != jimoPageOrigin {
		t.Errorf("Access-Control-Allow-Origin: got %q, want %q", got, jimoPageOrigin)
	}
	userID, token := sessionAnswer(t, r)
	if userID != u || token != u {
		t.Errorf("answer: got userId %q jimoToken %q, want both %q (shared mode)", userID, token, u)
	}

	p := mustProfile(t, b, "user_id:"+u)
	if p.UserID != u {
		t.Errorf("profile user ID: got %q, want %q", p.UserID, u)
	}
	wantIdentifiers(t, p, "user_id:"+u, "anonymous_id:"+a1, "anonymous_id:"+a2)
	if p.Traits["email"] != "ada@example.com" || p.Traits["name"] != "Ada" {
		t.Errorf("traits: got %v, want the page's email and Segment's name", p.Traits)
	}
	for _, id := range []string{"anonymous_id:" + a1, "anonymous_id:" + a2, "email:ada@example.com"} {
		if other := mustProfile(t, b, id); other.ID != p.ID {
			t.Errorf("lookup %s: got profile %d, want %d", id, other.ID, p.ID)
		}
	}

	// The page reports the same reset again (a retry with the same messageId): nothing changes.
	report := map[string]any{"token": u, "anonymousId": a2, "messageId": "jb-" + newUUID(t)}
	sessionAnswer(t, b.session(t, jimoPageOrigin, report))
	sessionAnswer(t, b.session(t, jimoPageOrigin, report))
	if got := b.metric(t, `bridge_messages_duplicate_total{source="jimo.session"}`); got != 1 {
		t.Errorf("duplicate session reports: got %v, want 1", got)
	}
}

// TestJimoLegacyTokenEndToEnd: a legacy session:reset whose token is not the
// user ID (set user:id in the callback) links the token to the user.
func TestJimoLegacyTokenEndToEnd(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, acceptUnsigned)

	t.Run("token linked to the user", func(t *testing.T) {
		token, u, a := newUUID(t), newUUID(t), newUUID(t)
		userID, jimoToken := sessionAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"token": token, "userId": u, "anonymousId": a}))
		if userID != u || jimoToken != token {
			t.Errorf("answer: got userId %q jimoToken %q, want %q and the legacy token %q", userID, jimoToken, u, token)
		}
		p := mustProfile(t, b, "jimo_token:"+token)
		if p.UserID != u {
			t.Errorf("profile of the token: got user ID %q, want %q", p.UserID, u)
		}
		wantIdentifiers(t, p, "user_id:"+u, "jimo_token:"+token, "anonymous_id:"+a)
		if _, ok := b.profile(t, "user_id:"+token); ok {
			t.Errorf("the legacy token became a user ID; want it only as jimo_token")
		}
	})

	t.Run("guessable token refused", func(t *testing.T) {
		u := newUUID(t)
		msg := errorAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"token": "1234567", "userId": u}), http.StatusUnprocessableEntity, mapping.CodeUnprocessable)
		if !strings.Contains(msg, "session token") || !strings.Contains(msg, "derived") {
			t.Errorf("message: got %q, want it to name the session token and point to derived mode", msg)
		}
		if _, ok := b.profile(t, "user_id:"+u); ok {
			t.Errorf("a refused report linked the user")
		}
	})

	t.Run("guessable user ID accepted with a warning", func(t *testing.T) {
		token, a := newUUID(t), newUUID(t)
		u := fmt.Sprint(time.Now().UnixNano() % 1e9) // all digits: Segment accepts it, Jimo must not key on it
		userID, jimoToken := sessionAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"token": token, "userId": u, "anonymousId": a}))
		if userID != u || jimoToken != token {
			t.Errorf("answer: got userId %q jimoToken %q, want %q and %q", userID, jimoToken, u, token)
		}
		p := mustProfile(t, b, "user_id:"+u)
		wantIdentifiers(t, p, "jimo_token:"+token, "anonymous_id:"+a)
		found := false
		for _, w := range b.warnings(t) {
			found = found || (w.Identifier.String() == "user_id:"+u && strings.Contains(w.Reason, "all digits"))
		}
		if !found {
			t.Errorf("warnings: want user_id:%s listed as all digits", u)
		}
	})
}

// TestJimoDerivedModeEndToEnd: in derived mode the page gets an opaque token
// only with a valid signature, and the token finds the user everywhere.
func TestJimoDerivedModeEndToEnd(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, "-jimo-token-mode", "derived")
	u, a := "42", newUUID(t) // a guessable app user ID is fine: Jimo never sees it

	errorAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"userId": u, "anonymousId": a}), http.StatusUnauthorized, mapping.CodeUnauthorized)
	errorAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"userId": u, "signature": signUserID(testSigningSecret, "43")}), http.StatusUnauthorized, mapping.CodeUnauthorized)
	errorAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"userId": u, "signature": signUserID("another-secret", u)}), http.StatusUnauthorized, mapping.CodeUnauthorized)
	if _, ok := b.profile(t, "user_id:"+u); ok {
		t.Fatalf("an unsigned report linked the user")
	}

	userID, token := sessionAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"userId": u, "anonymousId": a, "signature": signUserID(testSigningSecret, u)}))
	if userID != u {
		t.Errorf("answer userId: got %q, want %q", userID, u)
	}
	// Not the user ID (a random token contains "42" now and then: that is no leak).
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{22,}$`).MatchString(token) || token == u {
		t.Fatalf("answer jimoToken: got %q, want an opaque URL-safe token of at least 128 bits", token)
	}
	p := mustProfile(t, b, "jimo_token:"+token)
	if p.UserID != u {
		t.Errorf("profile of the token: got user ID %q, want %q", p.UserID, u)
	}
	wantIdentifiers(t, p, "user_id:"+u, "jimo_token:"+token, "anonymous_id:"+a)

	// The same user signs in again: the same token.
	if _, again := sessionAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"userId": u, "signature": signUserID(testSigningSecret, u)})); again != token {
		t.Errorf("second sign-in: got token %q, want %q", again, token)
	}
	// Jimo's webhook names the token; the bridge translates it to the user.
	body := webhookBody(t, token, "derived-"+newUUID(t)+"@example.com")
	r := b.do(t, http.MethodPost, "/jimo/webhook?secret="+testWebhookSecret, body, map[string]string{"Content-Type": "application/json"})
	if r.status != http.StatusOK {
		t.Fatalf("webhook: got status %d, want 200: %s", r.status, r.body)
	}
	if after := mustProfile(t, b, "jimo_token:"+token); after.ID != p.ID || after.UserID != u {
		t.Errorf("after the webhook: got profile %d user %q, want %d %q", after.ID, after.UserID, p.ID, u)
	}
	if _, ok := b.profile(t, "user_id:"+token); ok {
		t.Errorf("the webhook's token became a user ID; want it translated")
	}
}

// TestJimoGuessableTokenEndToEnd: shared mode refuses a guessable token with
// 422, and the operator sees why through the warnings API.
func TestJimoGuessableTokenEndToEnd(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, acceptUnsigned)
	a := newUUID(t)
	msg := errorAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"token": "1234567", "anonymousId": a}), http.StatusUnprocessableEntity, mapping.CodeUnprocessable)
	if !strings.Contains(msg, "all digits") || !strings.Contains(msg, "BRIDGE_JIMO_TOKEN_MODE=derived") {
		t.Errorf("message: got %q, want the reason and a pointer to derived mode", msg)
	}
	// Refused, so linked to nothing: the user ID is kept alone, with its warning, for operators.
	if p, ok := b.profile(t, "user_id:1234567"); ok && (len(p.Identifiers) != 1 || len(p.Warnings) != 1) {
		t.Errorf("a guessable token was linked: got %+v, want the user ID alone with a warning", p)
	}
	if _, ok := b.profile(t, "anonymous_id:"+a); ok {
		t.Errorf("the refused report's anonymous ID was stored")
	}
	if got := b.metric(t, `bridge_messages_rejected_total{source="jimo.session",reason="guessable_token"}`); got != 1 {
		t.Errorf("rejected guessable reports: got %v, want 1 (the refusal is stored)", got)
	}

	t.Run("warning listed", func(t *testing.T) {
		var reasons []string
		for _, w := range b.warnings(t) {
			if w.Value == "1234567" {
				reasons = append(reasons, w.Reason)
			}
		}
		if len(reasons) == 0 || !strings.Contains(reasons[0], "all digits") {
			t.Errorf("GET /api/v1/warnings: got %q for 1234567, want the guessable-token warning", reasons)
		}
	})
}

// TestJimoSessionCORSEndToEnd: only the configured origins get CORS answers.
func TestJimoSessionCORSEndToEnd(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, acceptUnsigned)
	preflight := func(origin string) httpResult {
		return b.do(t, http.MethodOptions, "/jimo/session", nil, map[string]string{
			"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
		})
	}
	r := preflight("https://evil.example.test")
	if r.status != http.StatusForbidden {
		t.Errorf("disallowed preflight: got status %d, want 403: %s", r.status, r.body)
	}
	for name := range r.header {
		if strings.HasPrefix(name, "Access-Control-") {
			t.Errorf("disallowed preflight: got header %s: %q, want no CORS headers", name, r.header.Get(name))
		}
	}
	r = preflight(jimoPageOrigin)
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != jimoPageOrigin ||
		!strings.Contains(strings.ToLower(r.header.Get("Access-Control-Allow-Headers")), "content-type") {
		t.Errorf("allowed preflight: got %d with %v, want 204 allowing %s and Content-Type", r.status, r.header, jimoPageOrigin)
	}
	r = b.session(t, "https://evil.example.test", map[string]any{"token": newUUID(t)})
	if got := r.header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("POST from a disallowed origin: got Access-Control-Allow-Origin %q, want none", got)
	}
}

// webhookBody is a Jimo tour.completed webhook for the jimer with identifyToken and email.
func webhookBody(t testing.TB, identifyToken, email string) []byte {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"event": "tour.completed", "version": "0", "time": time.Now().UnixMilli(),
		"experience": map[string]any{"id": newUUID(t), "name": "Welcome tour", "type": "TOUR"},
		"jimer":      map[string]any{"uid": newUUID(t), "identifyToken": identifyToken, "username": "Ada Lovelace", "email": email},
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestJimoWebhookEndToEnd: Jimo's webhook, authenticated by ?secret=, is
// idempotent across Jimo's retries and joins the jimer to the user's profile.
func TestJimoWebhookEndToEnd(t *testing.T) {
	b := startBridge(t, "")
	u, a := newUUID(t), newUUID(t)
	cb := &recordingCallback{}
	client := newClient(t, b, cb)
	must(t, client.Enqueue(analytics.Identify{UserId: u, AnonymousId: a}))
	if err := client.Close(); err != nil || cb.succeeded != 1 {
		t.Fatalf("analytics-go: got %d delivered, close error %v, failures %v; want 1 delivered", cb.succeeded, err, cb.failed)
	}

	email := "jimer-" + newUUID(t) + "@example.com"
	body := webhookBody(t, u, email)
	headers := map[string]string{"Content-Type": "application/json"}
	if r := b.do(t, http.MethodPost, "/jimo/webhook", body, headers); r.status != http.StatusUnauthorized {
		t.Errorf("webhook without the secret: got status %d, want 401", r.status)
	}
	if r := b.do(t, http.MethodPost, "/jimo/webhook?secret=wrong", body, headers); r.status != http.StatusUnauthorized {
		t.Errorf("webhook with a wrong secret: got status %d, want 401", r.status)
	}
	for i := range 2 { // Jimo retries: the same delivery twice
		if r := b.do(t, http.MethodPost, "/jimo/webhook?secret="+testWebhookSecret, body, headers); r.status != http.StatusOK {
			t.Fatalf("webhook delivery %d: got status %d, want 200: %s", i+1, r.status, r.body)
		}
	}
	if got := b.metric(t, `bridge_messages_duplicate_total{source="jimo.webhook"}`); got != 1 {
		t.Errorf("duplicate webhooks: got %v, want 1 (the replay deduplicated)", got)
	}
	if got := b.metric(t, `bridge_messages_stored_total{source="jimo.webhook"}`); got != 1 {
		t.Errorf("stored webhooks: got %v, want 1", got)
	}
	p := mustProfile(t, b, "user_id:"+u)
	wantIdentifiers(t, p, "user_id:"+u, "anonymous_id:"+a)
	if p.Traits["email"] != email {
		t.Errorf("traits: got %v, want the jimer's email %s on the user's profile", p.Traits, email)
	}
	if byEmail := mustProfile(t, b, "email:"+email); byEmail.ID != p.ID {
		t.Errorf("lookup by the jimer's email: got profile %d, want %d", byEmail.ID, p.ID)
	}
	// The secret may also come as a bearer token.
	other := webhookBody(t, u, email)
	if r := b.do(t, http.MethodPost, "/jimo/webhook", other, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + testWebhookSecret}); r.status != http.StatusOK {
		t.Errorf("webhook with a bearer secret: got status %d, want 200: %s", r.status, r.body)
	}
}

// TestJimoLegacyTokenWebhookAnyOrder: in shared mode a legacy session token T
// of user U (session:reset with T, then set user:id U) reaches the bridge from
// the page and from a Jimo webhook about a tour completed later. Whichever
// arrives first, the webhook's email ends on U's profile, with T.
func TestJimoLegacyTokenWebhookAnyOrder(t *testing.T) {
	for _, webhookFirst := range []bool{false, true} {
		t.Run(fmt.Sprint("webhook first: ", webhookFirst), func(t *testing.T) {
			b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, acceptUnsigned)
			u, token, a := newUUID(t), newUUID(t), newUUID(t)
			email := "legacy-" + newUUID(t)[:8] + "@example.com"
			hook, err := json.Marshal(map[string]any{
				"event": "tour.completed", "version": "0", "time": time.Now().Add(time.Minute).UnixMilli(),
				"experience": map[string]any{"id": newUUID(t), "name": "Welcome tour"},
				"jimer":      map[string]any{"uid": newUUID(t), "identifyToken": token, "email": email},
			})
			if err != nil {
				t.Fatal(err)
			}
			sendHook := func() {
				if r := b.do(t, http.MethodPost, "/jimo/webhook?secret="+testWebhookSecret, hook, map[string]string{"Content-Type": "application/json"}); r.status != http.StatusOK {
					t.Fatalf("webhook: got %d %s", r.status, r.body)
				}
			}
			sendSession := func() {
				sessionAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"token": token, "userId": u, "anonymousId": a}))
			}
			if webhookFirst {
				sendHook()
				sendSession()
			} else {
				sendSession()
				sendHook()
			}
			p := mustProfile(t, b, "jimo_token:"+token)
			if p.UserID != u {
				t.Fatalf("profile of the legacy token: got user %q, want %q", p.UserID, u)
			}
			wantIdentifiers(t, p, "user_id:"+u, "jimo_token:"+token, "anonymous_id:"+a, "email:"+email)
		})
	}
}
