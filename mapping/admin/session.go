package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/httperror"
)

// Cookie and form field names.
const (
	sessionCookie = "bridge_admin"       // the login session
	loginCookie   = "bridge_admin_login" // the login form's CSRF token, before there is a session
	csrfField     = "csrf"
)

// maxSessions bounds the session map; the least recently used session goes first.
const maxSessions = 1000

// session is one operator's login, kept on the server; the cookie holds only its random ID.
type session struct {
	csrf     string
	created  time.Time
	lastSeen time.Time
	flash    *flash
}

// flash is a message shown once, on the page a form redirects to.
type flash struct {
	Error bool
	Text  string
	Links []flashLink
}

type flashLink struct{ Label, Href string }

// sessions maps the SHA-256 of a session ID to its session. They live in
// this process (per-replica by design: an operator signs in to the replica
// that serves the admin page; see README, "Behind a proxy").
type sessions struct {
	mu        sync.Mutex
	m         map[[32]byte]*session
	idle, max time.Duration
}

func newSessions(idle, max time.Duration) *sessions {
	return &sessions{m: map[[32]byte]*session{}, idle: idle, max: max}
}

// randomToken returns 32 random bytes, URL-safe base64.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("admin: crypto/rand failed: %v", err)) // never happens on a supported platform
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and returns its ID (for the cookie).
func (ss *sessions) create(now time.Time) (string, *session) {
	id := randomToken()
	s := &session{csrf: randomToken(), created: now, lastSeen: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, old := range ss.m {
		if ss.expired(old, now) {
			delete(ss.m, k)
		}
	}
	if len(ss.m) >= maxSessions {
		var oldest [32]byte
		var t time.Time
		for k, old := range ss.m {
			if t.IsZero() || old.lastSeen.Before(t) {
				oldest, t = k, old.lastSeen
			}
		}
		delete(ss.m, oldest)
	}
	ss.m[sha256.Sum256([]byte(id))] = s
	return id, s
}

func (ss *sessions) expired(s *session, now time.Time) bool {
	return now.Sub(s.lastSeen) > ss.idle || now.Sub(s.created) > ss.max
}

// get returns the live session with this ID and marks it used, or nil.
func (ss *sessions) get(id string, now time.Time) *session {
	if id == "" {
		return nil
	}
	key := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[key]
	if s == nil {
		return nil
	}
	if ss.expired(s, now) {
		delete(ss.m, key)
		return nil
	}
	s.lastSeen = now
	return s
}

func (ss *sessions) delete(id string) {
	ss.mu.Lock()
	delete(ss.m, sha256.Sum256([]byte(id)))
	ss.mu.Unlock()
}

func (ss *sessions) setFlash(s *session, f flash) {
	ss.mu.Lock()
	s.flash = &f
	ss.mu.Unlock()
}

func (ss *sessions) popFlash(s *session) *flash {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

// validToken compares a submitted token with the expected one in constant time.
func validToken(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// freeFailures is how many wrong passwords a client may send at once before
// the login limit slows it down: the burst of its token bucket.
const freeFailures = 5

// throttle limits wrong admin passwords (page and API alike) per client IP
// with a token bucket of golang.org/x/time/rate: freeFailures at once, then
// one more each time a token comes back (LoginRate a minute). Only wrong
// passwords take tokens; a client with none left is refused without its
// password being checked, and a right password forgets its bucket. The
// buckets live in this process: each replica limits on its own (per-replica
// by design; n replicas allow n times the rate, which against a generated
// password changes nothing). A nil *throttle limits nothing.
type throttle struct {
	limit rate.Limit

	mu        sync.Mutex
	m         map[string]*rate.Limiter
	lastSweep time.Time
}

// maxThrottled bounds the clients a throttle remembers; full buckets go first.
const maxThrottled = 1 << 16

// newThrottle returns the throttle of perMinute wrong passwords a minute, or
// nil (no limit) when perMinute is 0 or less.
func newThrottle(perMinute float64) *throttle {
	if !(perMinute > 0) {
		return nil
	}
	return &throttle{limit: rate.Limit(perMinute / 60), m: map[string]*rate.Limiter{}}
}

// wait is how long until lim has a token, or 0.
func wait(lim *rate.Limiter, now time.Time) time.Duration {
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(lim.Limit()) * float64(time.Second))
}

// locked returns how long the client must still wait, or 0.
func (t *throttle) locked(ip string, now time.Time) time.Duration {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	lim := t.m[ip]
	t.mu.Unlock()
	if lim == nil {
		return 0
	}
	return wait(lim, now)
}

// fail records a wrong password and returns the lockout it causes (0 for none yet).
func (t *throttle) fail(ip string, now time.Time) time.Duration {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	lim := t.m[ip]
	if lim == nil {
		t.sweep(now)
		lim = rate.NewLimiter(t.limit, freeFailures)
		t.m[ip] = lim
	}
	t.mu.Unlock()
	lim.AllowN(now, 1)
	return wait(lim, now)
}

// succeed forgets the client's wrong passwords.
func (t *throttle) succeed(ip string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	delete(t.m, ip)
	t.mu.Unlock()
}

// sweep forgets full buckets (as good as none), at most once a minute unless
// the map is full, then arbitrary ones while it still is. Callers hold t.mu.
func (t *throttle) sweep(now time.Time) {
	full := len(t.m) >= maxThrottled
	if !full && now.Sub(t.lastSweep) < time.Minute {
		return
	}
	t.lastSweep = now
	for k, lim := range t.m {
		if lim.TokensAt(now) >= freeFailures {
			delete(t.m, k)
		}
	}
	for k := range t.m {
		if len(t.m) < maxThrottled {
			break
		}
		delete(t.m, k)
	}
}

// clientIP is the address lockouts count against: Echo's IPExtractor when
// the server configured one (behind a trusted proxy), else the peer
// address. Headers a client can forge are not trusted by default.
func clientIP(c echo.Context) string {
	if c.Echo().IPExtractor != nil {
		return c.RealIP()
	}
	host, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		return c.Request().RemoteAddr
	}
	return host
}

// overTLS reports whether cookies must be Secure: configured so, or the
// request came over TLS or through a proxy that says it did. Trusting the
// header from anyone is safe here: a forged one only makes the cookie stricter.
func (a *Admin) overTLS(c echo.Context) bool {
	r := c.Request()
	if a.secure || r.TLS != nil || c.Scheme() == "https" {
		return true
	}
	protos := r.Header.Values("X-Forwarded-Proto")
	return len(protos) > 0 && strings.EqualFold(strings.TrimSpace(protos[len(protos)-1]), "https")
}

func (a *Admin) sessionID(c echo.Context) string {
	ck, err := c.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	return ck.Value
}

// cookie builds an admin cookie: HttpOnly, SameSite=Strict, scoped to the
// admin path, Secure when configured or when the request came over HTTPS.
func (a *Admin) cookie(c echo.Context, name, value string, maxAge time.Duration) *http.Cookie {
	path := a.base
	if path == "" {
		path = "/"
	}
	ck := &http.Cookie{Name: name, Value: value, Path: path, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: a.overTLS(c)}
	if maxAge < 0 {
		ck.MaxAge = -1
	} else {
		ck.MaxAge = int(maxAge.Seconds())
	}
	return ck
}

type loginView struct {
	frame
	Next       string
	LoginToken string
	Error      string
	Notice     string
}

// loginForm shows the login form (or goes to the overview when already logged in).
func (a *Admin) loginForm(c echo.Context) error {
	if s := a.sessions.get(a.sessionID(c), a.now()); s != nil {
		return c.Redirect(http.StatusSeeOther, a.next(c.QueryParam("next")))
	}
	notice := ""
	if c.QueryParam("bye") != "" {
		notice = "You are signed out."
	}
	return a.renderLogin(c, http.StatusOK, "", notice)
}

func (a *Admin) renderLogin(c echo.Context, status int, errMsg, notice string) error {
	token := randomToken()
	c.SetCookie(a.cookie(c, loginCookie, token, time.Hour))
	return a.render(c, status, "login", loginView{
		frame:      a.frame(c, nil, "Sign in", ""),
		Next:       a.next(c.FormValue("next")),
		LoginToken: token,
		Error:      errMsg,
		Notice:     notice,
	})
}

// next returns where to go after the login: a local admin path, else the overview.
func (a *Admin) next(p string) string {
	if a.local(p) {
		return p
	}
	return a.base + "/"
}

// login checks the password (in constant time) unless the client is locked
// out, and starts a session with a fresh ID.
func (a *Admin) login(c echo.Context) error {
	now := a.now()
	ck, err := c.Cookie(loginCookie)
	if err != nil || !validToken(formToken(c), ck.Value) {
		status := httperror.Status(mapping.CodeForbidden)
		return a.render(c, status, "error", errorView{
			frame:   a.frame(c, nil, "Forbidden", ""),
			Status:  status,
			Heading: "The sign-in form has expired",
			Message: "The form's security token was missing or wrong (or cookies are disabled). Open the sign-in page again and retry.",
		})
	}
	ip := clientIP(c)
	if wait := a.throttle.locked(ip, now); wait > 0 {
		return a.lockedOut(c, wait)
	}
	got := sha256.Sum256([]byte(c.Request().PostFormValue("password")))
	want := sha256.Sum256(a.password)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		if wait := a.throttle.fail(ip, now); wait > 0 {
			return a.lockedOut(c, wait)
		}
		return a.renderLogin(c, httperror.Status(mapping.CodeUnauthorized), "Wrong password. After 5 wrong attempts, sign-in is locked for a while.", "")
	}
	a.throttle.succeed(ip)
	if old := a.sessionID(c); old != "" {
		a.sessions.delete(old)
	}
	id, _ := a.sessions.create(now)
	c.SetCookie(a.cookie(c, sessionCookie, id, a.sessions.max))
	c.SetCookie(a.cookie(c, loginCookie, "", -1))
	return c.Redirect(http.StatusSeeOther, a.next(c.FormValue("next")))
}

func (a *Admin) lockedOut(c echo.Context, wait time.Duration) error {
	secs := int(wait.Round(time.Second).Seconds())
	if secs < 1 {
		secs = 1
	}
	c.Response().Header().Set("Retry-After", fmt.Sprint(secs))
	status := httperror.Status(mapping.CodeRateLimited)
	return a.render(c, status, "error", errorView{
		frame:   a.frame(c, nil, "Too many attempts", ""),
		Status:  status,
		Heading: "Too many wrong passwords",
		Message: fmt.Sprintf("Sign-in from your address is locked for %s after repeated wrong passwords. Wait, then try again with the password from BRIDGE_ADMIN_PASSWORD.", humanDuration(time.Duration(secs)*time.Second)),
	})
}

// logout ends the session and clears its cookie.
func (a *Admin) logout(c echo.Context, s *session) error {
	a.sessions.delete(a.sessionID(c))
	c.SetCookie(a.cookie(c, sessionCookie, "", -1))
	return c.Redirect(http.StatusSeeOther, a.base+"/login?bye=1")
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
