package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/httperror"
	"github.com/bridgeworks/bridge/mapping/outbox"
	"github.com/bridgeworks/bridge/mapping/store"
)

const testPassword = "correct horse battery staple"

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// clock is an adjustable clock for sessions and lockouts.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// env is an admin on a real store in a fresh SQLite file, behind a real Echo instance.
type env struct {
	t     *testing.T
	path  string // the database file
	store *store.Store
	admin *Admin
	echo  *echo.Echo
	clock *clock
}

// newEnv opens a store and mounts the admin at /admin and its API at /api/v1.
// wrap, if not nil, wraps the store the admin sees.
func newEnv(t *testing.T, wrap func(*store.Store) Store) *env {
	t.Helper()
	return newEnvWith(t, wrap, nil)
}

// newEnvWith is newEnv with the admin's Config changed by mutate, if not nil.
func newEnvWith(t *testing.T, wrap func(*store.Store) Store, mutate func(*Config)) *env {
	t.Helper()
	return newEnvOn(t, filepath.Join(t.TempDir(), "bridge.db"), &clock{now: time.Now().UTC()}, wrap, mutate)
}

// replica is another admin server on a Store of its own, opened on e's
// database file, with e's clock: a second replica on the same database.
func (e *env) replica() *env {
	e.t.Helper()
	return newEnvOn(e.t, e.path, e.clock, nil, nil)
}

// newEnvOn is newEnvWith on the database file at path, with clock clk.
func newEnvOn(t *testing.T, path string, clk *clock, wrap func(*store.Store) Store, mutate func(*Config)) *env {
	t.Helper()
	store, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	var s Store = store
	if wrap != nil {
		s = wrap(store)
	}
	cfg := Config{Store: s, Password: testPassword, Now: clk.Now, LoginRate: 2, Counters: func() Counters {
		return Counters{SignatureFailures: 3}
	}}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e := echo.New()
	e.HTTPErrorHandler = httperror.Handler(slog.New(slog.DiscardHandler))
	a.Register(e.Group("/admin"))
	a.RegisterAPI(e.Group("/api/v1"))
	return &env{t: t, path: path, store: store, admin: a, echo: e, clock: clk}
}

// submit stores messages in the store.
func (e *env) submit(msgs ...mapping.Message) []mapping.Receipt {
	e.t.Helper()
	r, err := e.store.Submit(context.Background(), msgs)
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	return r
}

// message builds a Segment identify (or track, when event is set) with a raw body.
func message(id string, at time.Duration, userID, anonymousID, event string, traits map[string]any, jobs ...mapping.Job) mapping.Message {
	typ := "identify"
	if event != "" {
		typ = "track"
	}
	raw, _ := json.Marshal(map[string]any{"type": typ, "messageId": id, "userId": userID, "anonymousId": anonymousID, "event": event, "traits": traits})
	return mapping.Message{Source: mapping.SourceSegmentAPI, ID: id, Type: typ, Event: event, UserID: userID, AnonymousID: anonymousID,
		Traits: traits, Timestamp: t0.Add(at), ReceivedAt: t0.Add(at), Raw: raw, Jobs: jobs}
}

func jimoJob(messageID, user string) mapping.Job {
	return mapping.Job{Destination: "jimo", OrderingKey: user, MessageID: messageID, Payload: json.RawMessage(`{"userId":"` + user + `","type":"identify"}`)}
}

// Fixture identities.
const (
	alice  = "user-alice-8c1f2e9a7b3d"
	bob    = "user-bob-5e6f7a8b9c0d"
	anonA1 = "anon-a1-3f9c"
	anonA2 = "anon-a2-77d0"
	anonB1 = "anon-b1-1234"
)

// seed stores alice (two anonymous IDs), bob (one), a conflict (bob's
// identify on alice's first browser) and two dead Jimo jobs.
func (e *env) seed() {
	e.t.Helper()
	e.submit(
		message("m1", 0, alice, anonA1, "", map[string]any{"name": "Ada", "plan": "pro"}, jimoJob("out-m1", alice)),
		message("m2", time.Minute, alice, anonA2, "Viewed Pricing", nil),
		message("m3", 2*time.Minute, bob, anonB1, "", map[string]any{"name": "Bob"}, jimoJob("out-m3", bob)),
		message("m4", 3*time.Minute, bob, anonA1, "", nil),
	)
	e.killJobs(2)
}

// permanentFailure is a sender whose destination refuses everything with this message.
type permanentFailure string

func (f permanentFailure) Send(context.Context, mapping.Job) error {
	return &outbox.DeliveryError{Permanent: true, Err: errors.New(string(f))}
}

// killJobs runs the outbox against a refusing destination until n jobs are dead.
func (e *env) killJobs(n int) {
	e.t.Helper()
	e.killJobsWith(n, "jimo answered 400: attribute plan is not allowed")
}

func (e *env) killJobsWith(n int, why string) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- outbox.New(e.store, outbox.Options{Senders: map[string]outbox.Sender{"jimo": permanentFailure(why)}, Poll: 10 * time.Millisecond}).Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		jobs, err := e.store.Jobs(context.Background(), store.JobDead, 100)
		if err != nil {
			e.t.Fatalf("list jobs: %v", err)
		}
		if len(jobs) >= n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("got %d dead jobs after 20s, want %d", len(jobs), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// profileOf returns the profile holding KIND:VALUE.
func (e *env) profileOf(identifier string) (store.Profile, error) {
	id, err := mapping.ParseIdentifier(identifier)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.store.ProfileOf(context.Background(), id)
}

func (e *env) mustProfile(identifier string) store.Profile {
	e.t.Helper()
	p, err := e.profileOf(identifier)
	if err != nil {
		e.t.Fatalf("profile of %s: %v", identifier, err)
	}
	return p
}

// link finds the link between two values in the history of a's profile.
func (e *env) link(a, b string) store.LinkInfo {
	e.t.Helper()
	for _, id := range []string{a, b} {
		p, err := e.profileOf(id)
		if err != nil {
			continue
		}
		h, err := e.store.History(context.Background(), p.ID)
		if err != nil {
			e.t.Fatalf("history: %v", err)
		}
		for _, l := range h.Links {
			if (l.A.String() == a && l.B.String() == b) || (l.A.String() == b && l.B.String() == a) {
				return l
			}
		}
	}
	e.t.Fatalf("no link between %s and %s", a, b)
	return store.LinkInfo{}
}

// browser sends requests to the Echo instance like a browser: it keeps cookies.
type browser struct {
	t       *testing.T
	e       *env
	ip      string
	cookies map[string]*http.Cookie
	header  http.Header
	csrf    string
}

func (e *env) browser(ip string) *browser {
	return &browser{t: e.t, e: e, ip: ip, cookies: map[string]*http.Cookie{}, header: http.Header{}}
}

func (b *browser) do(method, target string, form url.Values) *httptest.ResponseRecorder {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, target, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	req.RemoteAddr = b.ip + ":40000"
	for _, c := range b.cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	rec := httptest.NewRecorder()
	b.e.echo.ServeHTTP(rec, req)
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	return rec
}

func (b *browser) get(target string) *httptest.ResponseRecorder {
	b.t.Helper()
	return b.do(http.MethodGet, target, nil)
}

// post submits a form with the session's CSRF token unless the form sets its own.
func (b *browser) post(target string, form url.Values) *httptest.ResponseRecorder {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form[csrfField]; !ok {
		form.Set(csrfField, b.csrf)
	}
	return b.do(http.MethodPost, target, form)
}

// follow GETs the Location of a redirect.
func (b *browser) follow(rec *httptest.ResponseRecorder) *httptest.ResponseRecorder {
	b.t.Helper()
	if rec.Code != http.StatusSeeOther && rec.Code != http.StatusFound && rec.Code != http.StatusMovedPermanently {
		b.t.Fatalf("got status %d, want a redirect; body:\n%s", rec.Code, rec.Body)
	}
	return b.get(rec.Header().Get("Location"))
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// token returns the CSRF token of the first form in body.
func token(t *testing.T, body string) string {
	t.Helper()
	m := csrfInput.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF field in the page:\n%s", body)
	}
	return m[1]
}

// tryLogin opens the login form and submits password.
func (b *browser) tryLogin(password string) *httptest.ResponseRecorder {
	b.t.Helper()
	form := b.get("/admin/login")
	if form.Code != http.StatusOK {
		b.t.Fatalf("GET /admin/login: got status %d, want 200", form.Code)
	}
	return b.post("/admin/login", url.Values{csrfField: {token(b.t, form.Body.String())}, "password": {password}})
}

// login signs in and learns the session's CSRF token.
func (b *browser) login() *browser {
	b.t.Helper()
	rec := b.tryLogin(testPassword)
	if rec.Code != http.StatusSeeOther {
		b.t.Fatalf("login: got status %d, want 303; body:\n%s", rec.Code, rec.Body)
	}
	page := b.follow(rec)
	if page.Code != http.StatusOK {
		b.t.Fatalf("after login: got status %d, want 200; body:\n%s", page.Code, page.Body)
	}
	b.csrf = token(b.t, page.Body.String())
	return b
}

// mustContain fails unless body contains every want.
func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s: body lacks %q", what, w)
		}
	}
}

func mustNotContain(t *testing.T, what, body string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(body, w) {
			t.Errorf("%s: body contains %q, want it absent", what, w)
		}
	}
}

var nextHref = regexp.MustCompile(`href="([^"]+)" rel="next"`)
