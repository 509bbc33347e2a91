package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bridgeworks/bridge/mapping"
)

// deepArrays is a JSON value nested depth levels deep in arrays, 2 bytes a level.
func deepArrays(depth int) string {
	return strings.Repeat("[", depth) + strings.Repeat("]", depth)
}

// TestJimoDecodersRefuseDeepAndInvalidBodies: /jimo/session and /jimo/webhook
// refuse nesting deeper than 64 levels and invalid UTF-8 with 400, as /v1
// does, and store nothing: a report with attributes nested 8,000 levels deep
// (16 KB) was stored before, and its profile page rendered 131 MB.
func TestJimoDecodersRefuseDeepAndInvalidBodies(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin)
	const user = "user-deep-3f9a7c1e5b2d8a64"
	sig := signUserID(testSigningSecret, user)
	session := func(attributes string) []byte {
		return fmt.Appendf(nil, `{"token":%q,"signature":%q,"anonymousId":"anon-deep-1","attributes":%s}`, user, sig, attributes)
	}
	webhook := func(experience string) []byte {
		return fmt.Appendf(nil, `{"event":"tour.completed","time":1700000000000,"jimer":{"identifyToken":%q},"experience":%s}`, user, experience)
	}
	webhookPath := "/jimo/webhook?secret=" + testWebhookSecret
	tests := []struct {
		name, path  string
		body        []byte
		wantMessage string
	}{
		{"session nested 8,000 levels", "/jimo/session", session(`{"a":` + deepArrays(8000) + `}`), "nested deeper than 64 levels"},
		{"session nested 65 levels", "/jimo/session", session(`{"a":` + deepArrays(63) + `}`), "nested deeper than 64 levels"},
		{"session invalid UTF-8", "/jimo/session", session(`{"name":"caf` + "\xe9" + `"}`), "not valid UTF-8"},
		{"webhook nested 8,000 levels", webhookPath, webhook(deepArrays(8000)), "nested deeper than 64 levels"},
		{"webhook invalid UTF-8", webhookPath, webhook(`{"name":"` + "\xff" + `"}`), "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, http.MethodPost, tt.path, tt.body, map[string]string{"Content-Type": "application/json", "Origin": jimoPageOrigin})
			if msg := errorAnswer(t, r, http.StatusBadRequest, mapping.CodeInvalid); !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("message: got %q, want it to contain %q", msg, tt.wantMessage)
			}
		})
	}
	if _, ok := b.profile(t, "user_id:"+user); ok {
		t.Errorf("a refused report or webhook stored user %s", user)
	}
	// At the limit the same report is stored.
	r := b.do(t, http.MethodPost, "/jimo/session", session(`{"a":`+deepArrays(62)+`}`), map[string]string{"Content-Type": "application/json", "Origin": jimoPageOrigin})
	if got, _ := sessionAnswer(t, r); got != user {
		t.Errorf("report at 64 levels: got user %q, want %q", got, user)
	}
}

// TestJimoBodiesBoundedBeforeAuthentication: a session report (whose
// signature is inside the body) is read up to MaxSessionBody and no further,
// and a webhook with a wrong secret is refused before its body is read.
func TestJimoBodiesBoundedBeforeAuthentication(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin)
	post := func(path string, body io.Reader) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, b.URL+path, body)
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = -1 // chunked: no Content-Length to refuse early on
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	// 64 MB offered; the answer comes after the limit, while the client is
	// still sending (what it wrote by then sits in socket buffers).
	const offered = 64 << 20
	counted := &countingReader{r: io.MultiReader(strings.NewReader(`{"token":"`), neverEnding('a'))}
	if status, body := post("/jimo/session", io.LimitReader(counted, offered)); status != http.StatusBadRequest || !strings.Contains(body, `"too_large"`) {
		t.Errorf("oversized session report: got %d %s, want 400 too_large", status, body)
	}
	if counted.n.Load() >= offered/4 {
		t.Errorf("the client sent %d bytes of a session report before the answer, want the answer after about 16 KiB", counted.n.Load())
	}
	counted = &countingReader{r: neverEnding(' ')}
	if status, _ := post("/jimo/webhook?secret=wrong", io.LimitReader(counted, offered)); status != http.StatusUnauthorized {
		t.Errorf("webhook with a wrong secret: got %d, want 401", status)
	}
	if counted.n.Load() >= offered/4 {
		t.Errorf("the client sent %d bytes of an unauthenticated webhook before the answer, want the answer before its body is read", counted.n.Load())
	}
}

// neverEnding is an endless stream of one byte.
type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// countingReader counts the bytes read through it (the client's transport
// may go on reading while the test looks).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// adminLogin submits the admin login form through the real server as a
// browser would, with extra headers on both requests; it returns the status
// of the form's answer and a client holding the cookies.
func adminLogin(t *testing.T, b *testBridge, password string, headers map[string]string) (int, *http.Client) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(req *http.Request) (int, string) {
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	req, _ := http.NewRequest(http.MethodGet, b.URL+"/admin/login", nil)
	status, form := do(req)
	m := csrfField.FindStringSubmatch(form)
	if status != http.StatusOK || m == nil {
		t.Fatalf("GET /admin/login: got %d without a form token, want 200 with one", status)
	}
	values := url.Values{"csrf": {m[1]}, "password": {password}}
	req, _ = http.NewRequest(http.MethodPost, b.URL+"/admin/login", strings.NewReader(values.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	status, _ = do(req)
	return status, client
}

// adminPage GETs an admin page with a signed-in client.
func adminPage(t *testing.T, client *http.Client, b *testBridge, path string) string {
	t.Helper()
	resp, err := client.Get(b.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got %d, want 200", path, resp.StatusCode)
	}
	return string(body)
}

// TestJimoSignaturePolicy: an explicitly configured signing secret requires
// signatures (DESIGN §4), as BRIDGE_JIMO_REQUIRE_SIGNATURE=true does; only a
// generated secret with no explicit choice, or an explicit
// BRIDGE_JIMO_REQUIRE_SIGNATURE=false, accepts unsigned reports, and then the
// admin overview warns that anyone who knows a user ID can join a browser to it.
func TestJimoSignaturePolicy(t *testing.T) {
	const warning = "Anyone who knows a user ID can join a browser to that user"
	generated := "-jimo-signing-secret=" // later flags win: no secret configured, one is generated
	tests := []struct {
		name         string
		args         []string
		wantUnsigned int
		wantWarning  bool
	}{
		{"configured secret", nil, http.StatusUnauthorized, false},
		{"generated secret", []string{generated}, http.StatusOK, true},
		{"generated secret, required", []string{generated, "-jimo-require-signature"}, http.StatusUnauthorized, false},
		{"configured secret, explicitly not required", []string{"-jimo-require-signature=false"}, http.StatusOK, true},
		{"derived mode, generated secret", []string{generated, "-jimo-token-mode", "derived"}, http.StatusUnauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBridge(t, "", append([]string{"-allowed-origins", jimoPageOrigin}, tt.args...)...)
			user := "user-" + newUUID(t)
			r := b.session(t, jimoPageOrigin, map[string]any{"token": user, "userId": user})
			if r.status != tt.wantUnsigned {
				t.Errorf("unsigned report: got %d %s, want %d", r.status, r.body, tt.wantUnsigned)
			}
			if tt.wantUnsigned == http.StatusUnauthorized {
				errorAnswer(t, r, http.StatusUnauthorized, mapping.CodeUnauthorized)
			}
			status, client := adminLogin(t, b, testAdminPassword, nil)
			if status != http.StatusSeeOther {
				t.Fatalf("admin login: got %d, want 303", status)
			}
			if got := strings.Contains(adminPage(t, client, b, "/admin/"), warning); got != tt.wantWarning {
				t.Errorf("overview warns about unsigned sessions: got %v, want %v", got, tt.wantWarning)
			}
		})
	}
	// With the configured secret, a signed report is taken.
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin)
	user := "user-" + newUUID(t)
	if got, _ := sessionAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"token": user, "signature": signUserID(testSigningSecret, user)})); got != user {
		t.Errorf("signed report: got user %q, want %q", got, user)
	}
}
