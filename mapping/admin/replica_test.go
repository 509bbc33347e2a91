package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestSessionSharedAcrossReplicas: two admin servers, each on a Store of
// its own opened on one database file, stand for two replicas behind a
// load balancer. An operator who signs in through one is signed in on the
// other; a flash left by one is shown once by the other; a logout on one
// ends the session on both.
func TestSessionSharedAcrossReplicas(t *testing.T) {
	a := newEnv(t, nil)
	a.seed()
	b := a.replica()
	op := a.browser("192.0.2.70").login()

	op.e = b
	page := op.get("/admin/")
	if page.Code != http.StatusOK {
		t.Fatalf("replica B with replica A's session: got status %d, want 200", page.Code)
	}
	if got := token(t, page.Body.String()); got != op.csrf {
		t.Errorf("replica B: got CSRF token %q, want the session's %q", got, op.csrf)
	}

	// A form posted to B with the token A showed; its flash shown by A, once.
	l := a.link("user_id:"+bob, "anonymous_id:"+anonA1)
	rec := op.post("/admin/conflicts/"+itoa(l.ID)+"/resolve", url.Values{
		"action": {"dismiss"}, "reason": {"ticket 7"}, "back": {"/admin/conflicts"},
	})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("resolve on replica B: got status %d, want 303; body:\n%s", rec.Code, rec.Body)
	}
	op.e = a
	mustContain(t, "replica A after the resolve", op.follow(rec).Body.String(), "dismissed: the identifiers stay apart")
	op.e = b
	mustNotContain(t, "replica B reloaded", op.get("/admin/conflicts").Body.String(), "dismissed: the identifiers stay apart")

	// Logout on B ends the session on A: its old cookie opens nothing there.
	old := op.cookies[sessionCookie].Value
	if rec := op.post("/admin/logout", nil); rec.Code != http.StatusSeeOther {
		t.Fatalf("logout on replica B: got status %d, want 303", rec.Code)
	}
	op.e = a
	op.cookies[sessionCookie] = &http.Cookie{Name: sessionCookie, Value: old}
	if rec := op.get("/admin/"); rec.Code != http.StatusSeeOther {
		t.Errorf("replica A after the logout on B: got status %d, want 303 to the login", rec.Code)
	}
}

// TestLockoutSharedAcrossReplicas: wrong passwords sent to two replicas
// count together, and the lockout holds on both, for the API too.
func TestLockoutSharedAcrossReplicas(t *testing.T) {
	a := newEnv(t, nil)
	b := a.replica()
	b.admin.RegisterAPI(b.echo.Group("/locked/api/v1", b.admin.RequireAPI()))
	guesser := a.browser("198.51.100.20")
	for i := 1; i < freeFailures; i++ {
		guesser.e = []*env{a, b}[i%2]
		if rec := guesser.tryLogin("guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: got status %d, want 401", i, rec.Code)
		}
	}
	guesser.e = a
	if rec := guesser.tryLogin("guess"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("wrong password %d, across both: got status %d, want 429", freeFailures, rec.Code)
	}
	guesser.e = b
	if rec := guesser.tryLogin(testPassword); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "30" {
		t.Errorf("right password on replica B while locked: got %d with Retry-After %q, want 429 with 30", rec.Code, rec.Header().Get("Retry-After"))
	}
	req := httptest.NewRequest(http.MethodGet, "/locked/api/v1/warnings", nil)
	req.RemoteAddr = "198.51.100.20:40000"
	req.Header.Set("Authorization", "Bearer "+testPassword)
	rec := httptest.NewRecorder()
	b.echo.ServeHTTP(rec, req)
	if rec.Code != http.StatusTooManyRequests {
		t.Errorf("API on replica B while locked: got status %d, want 429", rec.Code)
	}
}
