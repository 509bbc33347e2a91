package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/httperror"
	"github.com/bridgeworks/bridge/mapping/store"
)

// Cookie and form field names.
const (
	sessionCookie = "bridge_admin"       // the login session
	loginCookie   = "bridge_admin_login" // the login form's CSRF token, before there is a session
	csrfField     = "csrf"
)

// SessionStore keeps the admin's login sessions and its login lockout in
// the database, so that every replica on it agrees: an operator signed in
// through one replica is signed in on all, and wrong passwords count
// against a client whichever replica they reach. *store.Store implements
// it; its methods there state their contracts.
type SessionStore interface {
	CreateAdminSession(ctx context.Context, id, csrf string, now time.Time, lim store.SessionLimits) error
	AdminSession(ctx context.Context, id string, now time.Time, lim store.SessionLimits) (store.AdminSession, bool, error)
	DeleteAdminSession(ctx context.Context, id string) error
	SetAdminFlash(ctx context.Context, id, flash string) error
	PopAdminFlash(ctx context.Context, id string) (string, error)
	LoginLockout(ctx context.Context, client string, now time.Time, lim store.LoginLimit) (time.Duration, bool, error)
	LoginFailed(ctx context.Context, client string, now time.Time, lim store.LoginLimit) (time.Duration, error)
	LoginSucceeded(ctx context.Context, client string) error
}

// session is one operator's login, kept in the database (SessionStore);
// the cookie holds only its random ID.
type session struct {
	id    string // from the cookie; the store keeps only its hash
	csrf  string
	flash bool // a flash message waits for this request's page
}

// flash is a message shown once, on the page a form redirects to. It is
// stored as JSON with the session.
type flash struct {
	Error bool
	Text  string
	Links []flashLink
}

type flashLink struct{ Label, Href string }

// randomToken returns 32 random bytes, URL-safe base64.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("admin: crypto/rand failed: %v", err)) // never happens on a supported platform
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// session returns the live session the request's cookie names and records
// its use, or nil when there is none (no cookie, ended, expired).
func (a *Admin) session(c echo.Context) (*session, error) {
	id := a.sessionID(c)
	st, ok, err := a.store.AdminSession(c.Request().Context(), id, a.now(), a.limits)
	if err != nil || !ok {
		return nil, err
	}
	return &session{id: id, csrf: st.CSRF, flash: st.Flash != ""}, nil
}

// popFlash takes the message waiting for s, or nil. Whichever replica
// serves the page, the message is shown once. A store failure is logged
// and shows no message.
func (a *Admin) popFlash(c echo.Context, s *session) *flash {
	if !s.flash {
		return nil
	}
	s.flash = false
	text, err := a.store.PopAdminFlash(c.Request().Context(), s.id)
	if err != nil || text == "" {
		if err != nil {
			a.log.Error("admin flash message", "err", err)
		}
		return nil
	}
	var f flash
	if err := json.Unmarshal([]byte(text), &f); err != nil {
		a.log.Error("admin flash message", "err", err)
		return nil
	}
	return &f
}

// setFlash leaves f for the next page of s. A store failure is logged: the
// action it reports is done, only its message is lost.
func (a *Admin) setFlash(c echo.Context, s *session, f flash) {
	b, err := json.Marshal(f)
	if err == nil {
		err = a.store.SetAdminFlash(c.Request().Context(), s.id, string(b))
	}
	if err != nil {
		a.log.Error("admin flash message", "err", err)
	}
}

// validToken compares a submitted token with the expected one in constant time.
func validToken(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// freeFailures is how many wrong passwords a client may send at once before
// the login limit slows it down: the burst of its token bucket.
const freeFailures = 5

// loginLimit is the lockout of wrong admin passwords (page and API alike)
// per client IP: freeFailures at once, then one more each time a token
// comes back (perMinute a minute); see store.LoginLimit. It is kept in the
// database, so it counts across replicas. ok is false (no limit) when
// perMinute is 0 or less.
func loginLimit(perMinute float64) (lim store.LoginLimit, ok bool) {
	if !(perMinute > 0) {
		return store.LoginLimit{}, false
	}
	return store.LoginLimit{Every: time.Duration(float64(time.Minute) / perMinute), Burst: freeFailures}, true
}

// locked returns how long the client must wait before its password is
// checked (0: not locked out), and whether it has wrong passwords on record.
func (a *Admin) locked(ctx context.Context, ip string, now time.Time) (time.Duration, bool, error) {
	if !a.limited {
		return 0, false, nil
	}
	return a.store.LoginLockout(ctx, ip, now, a.lockout)
}

// wrongPassword records a wrong password and returns the lockout it causes (0 for none yet).
func (a *Admin) wrongPassword(ctx context.Context, ip string, now time.Time) (time.Duration, error) {
	if !a.limited {
		return 0, nil
	}
	return a.store.LoginFailed(ctx, ip, now, a.lockout)
}

// rightPassword forgets the client's wrong passwords, if locked said it had
// some (so that a right password is not a write).
func (a *Admin) rightPassword(ctx context.Context, ip string, failed bool) error {
	if !failed {
		return nil
	}
	return a.store.LoginSucceeded(ctx, ip)
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
	s, err := a.session(c)
	if err != nil {
		return a.fail(c, nil, err)
	}
	if s != nil {
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
	ctx, ip := c.Request().Context(), clientIP(c)
	wait, failed, err := a.locked(ctx, ip, now)
	if err != nil {
		return a.fail(c, nil, err)
	}
	if wait > 0 {
		return a.lockedOut(c, wait)
	}
	got := sha256.Sum256([]byte(c.Request().PostFormValue("password")))
	want := sha256.Sum256(a.password)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		wait, err := a.wrongPassword(ctx, ip, now)
		if err != nil {
			return a.fail(c, nil, err)
		}
		if wait > 0 {
			return a.lockedOut(c, wait)
		}
		return a.renderLogin(c, httperror.Status(mapping.CodeUnauthorized), "Wrong password. After 5 wrong attempts, sign-in is locked for a while.", "")
	}
	if err := a.rightPassword(ctx, ip, failed); err != nil {
		return a.fail(c, nil, err)
	}
	if old := a.sessionID(c); old != "" {
		if err := a.store.DeleteAdminSession(ctx, old); err != nil {
			return a.fail(c, nil, err)
		}
	}
	id := randomToken()
	if err := a.store.CreateAdminSession(ctx, id, randomToken(), now, a.limits); err != nil {
		return a.fail(c, nil, err)
	}
	c.SetCookie(a.cookie(c, sessionCookie, id, a.limits.Max))
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
	if err := a.store.DeleteAdminSession(c.Request().Context(), s.id); err != nil {
		return err
	}
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
