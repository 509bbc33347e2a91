package admin

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

func TestNewRequiresStoreAndPassword(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no store", Config{Password: "x"}},
		{"no password", Config{Store: &store.Store{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Errorf("got no error, want one")
			}
		})
	}
}

func TestPagesRequireASession(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser("192.0.2.1")
	tests := []struct {
		method, target string
		wantLocation   string
	}{
		{http.MethodGet, "/admin/", "/admin/login"},
		{http.MethodGet, "/admin/search?q=anon", "/admin/login?next=%2Fadmin%2Fsearch%3Fq%3Danon"},
		{http.MethodGet, "/admin/profiles/1", "/admin/login?next=%2Fadmin%2Fprofiles%2F1"},
		{http.MethodGet, "/admin/profile?identifier=user_id:x", "/admin/login?next=%2Fadmin%2Fprofile%3Fidentifier%3Duser_id%3Ax"},
		{http.MethodGet, "/admin/conflicts", "/admin/login?next=%2Fadmin%2Fconflicts"},
		{http.MethodGet, "/admin/jobs", "/admin/login?next=%2Fadmin%2Fjobs"},
		{http.MethodGet, "/admin/warnings", "/admin/login?next=%2Fadmin%2Fwarnings"},
		{http.MethodGet, "/admin/delete", "/admin/login?next=%2Fadmin%2Fdelete"},
		{http.MethodGet, "/admin/nowhere", "/admin/login?next=%2Fadmin%2Fnowhere"},
		{http.MethodPost, "/admin/conflicts/1/resolve", "/admin/login"},
		{http.MethodPost, "/admin/links/1/unmerge", "/admin/login"},
		{http.MethodPost, "/admin/delete", "/admin/login"},
		{http.MethodPost, "/admin/jobs/retry", "/admin/login"},
		{http.MethodPost, "/admin/logout", "/admin/login"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			var rec interface {
				Result() *http.Response
			}
			if tt.method == http.MethodPost {
				rec = b.post(tt.target, url.Values{"reason": {"r"}, "id": {"1"}})
			} else {
				rec = b.get(tt.target)
			}
			res := rec.Result()
			if res.StatusCode != http.StatusSeeOther {
				t.Fatalf("got status %d, want 303", res.StatusCode)
			}
			if got := res.Header.Get("Location"); got != tt.wantLocation {
				t.Errorf("got Location %q, want %q", got, tt.wantLocation)
			}
		})
	}
	t.Run("bare /admin", func(t *testing.T) {
		rec := b.get("/admin")
		if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "/admin/" {
			t.Errorf("got %d to %q, want 301 to /admin/", rec.Code, rec.Header().Get("Location"))
		}
	})
}

func TestLogin(t *testing.T) {
	e := newEnv(t, nil)

	t.Run("wrong password", func(t *testing.T) {
		b := e.browser("192.0.2.10")
		rec := b.tryLogin("not the password")
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("got status %d, want 401", rec.Code)
		}
		mustContain(t, "login page", rec.Body.String(), "Wrong password")
		mustNotContain(t, "login page", rec.Body.String(), testPassword, "not the password")
		if _, ok := b.cookies[sessionCookie]; ok {
			t.Errorf("got a session cookie after a wrong password, want none")
		}
	})

	t.Run("right password", func(t *testing.T) {
		b := e.browser("192.0.2.11")
		rec := b.tryLogin(testPassword)
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/admin/" {
			t.Fatalf("got %d to %q, want 303 to /admin/", rec.Code, rec.Header().Get("Location"))
		}
		ck := b.cookies[sessionCookie]
		if ck == nil {
			t.Fatal("got no session cookie")
		}
		if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/admin" || ck.Secure {
			t.Errorf("got cookie HttpOnly=%v SameSite=%v Path=%q Secure=%v, want true, Strict, /admin, false", ck.HttpOnly, ck.SameSite, ck.Path, ck.Secure)
		}
		if len(ck.Value) < 43 {
			t.Errorf("got a session ID of %d characters, want 32 random bytes (43 in base64)", len(ck.Value))
		}
		page := b.follow(rec)
		if page.Code != http.StatusOK {
			t.Fatalf("overview: got status %d, want 200", page.Code)
		}
		mustNotContain(t, "overview", page.Body.String(), testPassword, ck.Value)
	})

	t.Run("secure behind TLS", func(t *testing.T) {
		b := e.browser("192.0.2.12")
		b.header.Set("X-Forwarded-Proto", "https")
		b.tryLogin(testPassword)
		if ck := b.cookies[sessionCookie]; ck == nil || !ck.Secure {
			t.Errorf("got cookie %+v, want Secure behind X-Forwarded-Proto: https", ck)
		}
	})

	t.Run("next page after login", func(t *testing.T) {
		b := e.browser("192.0.2.13")
		rec := b.get("/admin/conflicts")
		form := b.follow(rec)
		mustContain(t, "login form", form.Body.String(), `name="next" value="/admin/conflicts"`)
		rec = b.post("/admin/login", url.Values{csrfField: {token(t, form.Body.String())}, "password": {testPassword}, "next": {"/admin/conflicts"}})
		if got := rec.Header().Get("Location"); got != "/admin/conflicts" {
			t.Errorf("got Location %q, want /admin/conflicts", got)
		}
	})

	t.Run("next is never another site", func(t *testing.T) {
		for _, next := range []string{"https://evil.example/", "//evil.example/admin/", "/admin/../x", "/elsewhere"} {
			b := e.browser("192.0.2.14")
			form := b.get("/admin/login")
			rec := b.post("/admin/login", url.Values{csrfField: {token(t, form.Body.String())}, "password": {testPassword}, "next": {next}})
			if got := rec.Header().Get("Location"); got != "/admin/" {
				t.Errorf("next=%q: got Location %q, want /admin/", next, got)
			}
		}
	})

	t.Run("login form token missing or wrong", func(t *testing.T) {
		for name, form := range map[string]url.Values{
			"missing": {"password": {testPassword}},
			"wrong":   {"password": {testPassword}, csrfField: {"forged"}},
		} {
			b := e.browser("192.0.2.15")
			b.get("/admin/login")
			rec := b.do(http.MethodPost, "/admin/login", form)
			if rec.Code != http.StatusForbidden {
				t.Errorf("%s: got status %d, want 403", name, rec.Code)
			}
			if _, ok := b.cookies[sessionCookie]; ok {
				t.Errorf("%s: got a session cookie, want none", name)
			}
		}
	})
}

func TestLockoutAfterRepeatedWrongPasswords(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser("198.51.100.7")
	for i := 1; i < freeFailures; i++ {
		if rec := b.tryLogin("guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: got status %d, want 401", i, rec.Code)
		}
	}
	rec := b.tryLogin("guess")
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("attempt %d: got status %d, want 429", freeFailures, rec.Code)
	}
	if got := rec.Header().Get("Retry-After"); got != "30" {
		t.Errorf("got Retry-After %q, want 30", got)
	}
	mustContain(t, "lockout page", rec.Body.String(), "Too many wrong passwords", "30 s")

	// Locked: even the right password is refused without being checked.
	if rec := b.tryLogin(testPassword); rec.Code != http.StatusTooManyRequests {
		t.Errorf("right password while locked: got status %d, want 429", rec.Code)
	}
	// Another client is not locked out.
	if rec := e.browser("198.51.100.8").tryLogin(testPassword); rec.Code != http.StatusSeeOther {
		t.Errorf("another client: got status %d, want 303", rec.Code)
	}
	// A forged X-Forwarded-For does not escape the lockout.
	b.header.Set("X-Forwarded-For", "203.0.113.99")
	if rec := b.tryLogin(testPassword); rec.Code != http.StatusTooManyRequests {
		t.Errorf("forged X-Forwarded-For: got status %d, want 429", rec.Code)
	}
	b.header.Del("X-Forwarded-For")

	// After the wait one more guess is allowed (2 a minute); a wrong one spends it.
	e.clock.Add(31 * time.Second)
	if rec := b.tryLogin("guess"); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "29" {
		t.Errorf("wrong password after the wait: got %d with Retry-After %q, want 429 with 29", rec.Code, rec.Header().Get("Retry-After"))
	}
	e.clock.Add(30 * time.Second)
	if rec := b.tryLogin(testPassword); rec.Code != http.StatusSeeOther {
		t.Errorf("right password after the wait: got status %d, want 303", rec.Code)
	}
	// A success resets the count.
	delete(b.cookies, sessionCookie)
	if rec := b.tryLogin("guess"); rec.Code != http.StatusUnauthorized {
		t.Errorf("wrong password after a success: got status %d, want 401", rec.Code)
	}
}

func TestSessionExpiresAndLogout(t *testing.T) {
	e := newEnv(t, nil)

	t.Run("idle", func(t *testing.T) {
		b := e.browser("192.0.2.20").login()
		e.clock.Add(time.Hour)
		if rec := b.get("/admin/"); rec.Code != http.StatusOK {
			t.Fatalf("after 1 h: got status %d, want 200", rec.Code)
		}
		e.clock.Add(2*time.Hour + time.Second)
		if rec := b.get("/admin/"); rec.Code != http.StatusSeeOther {
			t.Errorf("after 2 h idle: got status %d, want 303 to the login", rec.Code)
		}
	})

	t.Run("logout", func(t *testing.T) {
		b := e.browser("192.0.2.21").login()
		old := b.cookies[sessionCookie].Value
		rec := b.post("/admin/logout", nil)
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/admin/login?bye=1" {
			t.Fatalf("logout: got %d to %q, want 303 to /admin/login?bye=1", rec.Code, rec.Header().Get("Location"))
		}
		mustContain(t, "login page", b.follow(rec).Body.String(), "You are signed out.")
		// The old cookie no longer opens anything.
		b.cookies[sessionCookie] = &http.Cookie{Name: sessionCookie, Value: old}
		if rec := b.get("/admin/"); rec.Code != http.StatusSeeOther {
			t.Errorf("old session after logout: got status %d, want 303", rec.Code)
		}
	})

	t.Run("logout needs the token", func(t *testing.T) {
		b := e.browser("192.0.2.22").login()
		if rec := b.post("/admin/logout", url.Values{csrfField: {"wrong"}}); rec.Code != http.StatusForbidden {
			t.Errorf("got status %d, want 403", rec.Code)
		}
	})

	t.Run("a login never keeps a session ID it was given", func(t *testing.T) {
		b := e.browser("192.0.2.23")
		b.cookies[sessionCookie] = &http.Cookie{Name: sessionCookie, Value: "chosen-by-an-attacker"}
		b.login()
		if got := b.cookies[sessionCookie].Value; got == "chosen-by-an-attacker" {
			t.Errorf("got session ID %q, want a fresh one", got)
		}
	})
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	b := e.browser("192.0.2.30").login()
	l := e.link("user_id:"+alice, "anonymous_id:"+anonA2)
	other := e.browser("192.0.2.31").login()

	tests := []struct {
		name  string
		token []string // nil: no field
	}{
		{"missing", nil},
		{"empty", []string{""}},
		{"wrong", []string{"forged-token"}},
		{"another session's", []string{other.csrf}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"reason": {"csrf test"}}
			if tt.token != nil {
				form[csrfField] = tt.token
			}
			rec := b.do(http.MethodPost, "/admin/links/"+itoa(l.ID)+"/unmerge", form)
			if rec.Code != http.StatusForbidden {
				t.Fatalf("got status %d, want 403", rec.Code)
			}
			mustContain(t, "403 page", rec.Body.String(), "This form has expired")
		})
	}
	if got := e.link("user_id:"+alice, "anonymous_id:"+anonA2); got.Decision != mapping.DecisionApplied || got.Withdrawn {
		t.Errorf("after refused forms: got decision %s withdrawn=%v, want applied and not withdrawn", got.Decision, got.Withdrawn)
	}
	// Every form of every page carries the token.
	p := e.mustProfile("user_id:" + alice)
	for _, page := range []string{"/admin/", "/admin/profiles/" + itoa(p.ID), "/admin/conflicts", "/admin/jobs", "/admin/delete?identifier=user_id:" + alice} {
		body := b.get(page).Body.String()
		posts := strings.Count(body, `method="post"`)
		tokens := strings.Count(body, `name="csrf" value="`+b.csrf+`"`)
		if posts == 0 || posts != tokens {
			t.Errorf("%s: got %d POST forms and %d tokens, want one token per form", page, posts, tokens)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser("192.0.2.40")
	anon := e.browser("192.0.2.41")
	b.login()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
	}
	tests := []struct {
		name, target string
		b            *browser
		wantStatus   int
		wantType     string
	}{
		{"login", "/admin/login", anon, 200, "text/html; charset=UTF-8"},
		{"redirect to login", "/admin/", anon, 303, ""},
		{"overview", "/admin/", b, 200, "text/html; charset=UTF-8"},
		{"not found", "/admin/profiles/999999", b, 404, "text/html; charset=UTF-8"},
		{"stylesheet", "/admin/static/admin.css", anon, 200, "text/css; charset=utf-8"},
		{"script", "/admin/static/admin.js", anon, 200, "text/javascript; charset=utf-8"},
		{"missing static", "/admin/static/nope.css", anon, 404, "text/html; charset=UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tt.b.get(tt.target)
			if rec.Code != tt.wantStatus {
				t.Fatalf("got status %d, want %d", rec.Code, tt.wantStatus)
			}
			for k, v := range want {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("got %s %q, want %q", k, got, v)
				}
			}
			if tt.wantType != "" && rec.Header().Get("Content-Type") != tt.wantType {
				t.Errorf("got Content-Type %q, want %q", rec.Header().Get("Content-Type"), tt.wantType)
			}
		})
	}
}

func TestPagesUseNoInlineScriptOrStyle(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	b := e.browser("192.0.2.50").login()
	p := e.mustProfile("user_id:" + alice)
	for _, page := range []string{"/admin/login", "/admin/", "/admin/search?q=anon&prefix=1", "/admin/profiles/" + itoa(p.ID), "/admin/conflicts", "/admin/jobs", "/admin/warnings", "/admin/delete"} {
		body := b.get(page).Body.String()
		// The CSP allows only files from /admin/static: no inline script, style or handlers.
		mustNotContain(t, page, body, "<script>", "style=", "<style", " onclick=", " onerror=", "javascript:")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
