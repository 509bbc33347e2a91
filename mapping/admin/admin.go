// Package admin is the operator's admin page for the identity mapping, and
// the same operations as JSON for scripts. Operators come here to find a
// person by any identifier, see how the bridge joined their identities and
// what it forwarded, and repair what is wrong: resolve conflicts, unmerge
// links, delete profiles for privacy requests and retry dead deliveries.
//
// The HTML pages have their own login (a password, a session kept in the
// database and named by a random ID in an HttpOnly, SameSite=Strict cookie,
// a lockout after repeated wrong passwords counted in the database), a CSRF
// token on every form and a strict Content-Security-Policy. Sessions and
// lockout are shared by every replica on the database.
// Every page works without JavaScript: forms post, redirect and show a flash
// message. Templates and static files are embedded and parsed once by New.
package admin

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/httperror"
	"github.com/bridgeworks/bridge/mapping/outbox"
	"github.com/bridgeworks/bridge/mapping/store"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Store is what the admin reads and repairs, and where it keeps its login
// sessions and lockout; *store.Store implements it.
type Store interface {
	Search(ctx context.Context, q store.SearchQuery) (store.SearchResult, error)
	ProfileByID(ctx context.Context, id int64) (store.Profile, error)
	ProfileOf(ctx context.Context, id mapping.Identifier) (store.Profile, error)
	History(ctx context.Context, profileID int64) (store.History, error)
	Conflicts(ctx context.Context, limit int, afterID int64) ([]store.LinkInfo, error)
	ResolveConflict(ctx context.Context, linkID int64, action, operator, reason string) error
	Unmerge(ctx context.Context, linkID int64, operator, reason string) error
	DeleteProfile(ctx context.Context, id mapping.Identifier, operator, reason string) ([]mapping.Identifier, error)
	RetryJobs(ctx context.Context, ids []int64) (int, error)
	Jobs(ctx context.Context, state string, limit int) ([]store.JobInfo, error)
	Warnings(ctx context.Context, limit int) ([]store.Warning, error)
	Overview(ctx context.Context) (store.Overview, error)
	ProfilesByKey(ctx context.Context, keys []string) (map[string]int64, error)
	SessionStore
}

// Config configures an Admin. Store and Password are required.
type Config struct {
	Store Store
	// Password is the admin password the login form asks for (BRIDGE_ADMIN_PASSWORD).
	Password string
	// Logger receives internal errors; default: discard.
	Logger *slog.Logger
	// Now is the clock (sessions, lockouts, ages); default time.Now.
	Now func() time.Time
	// Secure marks cookies Secure on every request. They are also Secure
	// when the request came over TLS or with X-Forwarded-Proto: https.
	Secure bool
	// Counters returns the process counters shown as warnings; nil means none.
	Counters func() Counters
	// LoginRate is how many wrong admin passwords a minute one client IP may
	// send once it has sent 5 (login form and API alike); 0 means no limit.
	// The client IP is echo.Context.RealIP when the Echo instance has an
	// IPExtractor (set it to trust exactly the proxies in front), else the
	// peer address. The count is kept in the store, so it holds across
	// every replica on the database.
	LoginRate float64
	// UnsignedSessions says that POST /jimo/session accepts reports without a
	// signature (a generated signing secret and no explicit choice, or
	// BRIDGE_JIMO_REQUIRE_SIGNATURE=false): the overview then shows a
	// standing warning that anyone who knows a user ID can join a browser to it.
	UnsignedSessions bool
	// Forwarding is the active forwarding configuration, shown on the
	// overview and used by the profile page's "Jimo's view"; nil: the pages
	// do not know it and say so.
	Forwarding *Forwarding
	// Destinations reports the outbox's destinations with whether each is
	// paused (mapping.Outbox.Destinations); nil: no paused state is shown.
	Destinations func() []outbox.DestinationStatus
	// SessionIdle and SessionMax bound a login session: it ends after
	// SessionIdle without a request or SessionMax after the login, whichever
	// comes first (its last request is recorded at most once a minute, so
	// it may end up to a minute early). Defaults: 2 hours and 12 hours.
	// Sessions are kept in the store: every replica on the database accepts
	// them, so all replicas must be given the same bounds.
	SessionIdle, SessionMax time.Duration
}

// Forwarding is where the bridge forwards and how, as plain values for the
// pages: never a key or a secret.
type Forwarding struct {
	// Segment and Jimo are the two destinations.
	Segment, Jimo Destination
	// Relay says Tracking API calls are relayed to Segment as received.
	Relay bool
	// JimoTrack says Segment track calls are forwarded to Jimo as well.
	JimoTrack bool
	// TokenMode is the Jimo token mode: "shared" or "derived".
	TokenMode string
}

// Destination is one place the bridge forwards to.
type Destination struct {
	// Name is the outbox destination of its jobs, e.g. "jimo".
	Name string
	// On says forwarding there is configured.
	On bool
	// Host is the endpoint's host (no scheme, path or credentials).
	Host string
	// Off says why forwarding is off, e.g. "BRIDGE_JIMO_API_KEY is not set"; shown when On is false.
	Off string
}

// Counters are process counters the overview and the warnings page show.
// They count since the process started.
type Counters struct {
	// SignatureFailures counts requests refused because a write key,
	// signature or webhook secret was missing or did not verify.
	SignatureFailures float64
	// BlockedValues counts identifier values refused by the blocklist.
	BlockedValues float64
}

// Operators recorded in the link log for repairs made here.
const (
	OperatorPage = "admin" // repairs made on the HTML pages
	OperatorAPI  = "api"   // repairs made through /api/v1
)

// Admin serves the admin pages and the admin API. Create it with New.
type Admin struct {
	store    Store
	password []byte
	log      *slog.Logger
	now      func() time.Time
	secure   bool
	counters func() Counters
	unsigned bool
	fwd      *Forwarding
	dests    func() []outbox.DestinationStatus

	pages   map[string]*template.Template
	static  fs.FS
	limits  store.SessionLimits
	lockout store.LoginLimit
	limited bool   // lockout applies (Config.LoginRate > 0)
	base    string // the path the page group is mounted at, e.g. "/admin"
}

// New parses the embedded templates and returns an Admin. It fails if the
// store or the password is missing, or a template does not parse.
func New(cfg Config) (*Admin, error) {
	if cfg.Store == nil {
		return nil, errors.New("admin: a store is required")
	}
	if cfg.Password == "" {
		return nil, errors.New("admin: a password is required (BRIDGE_ADMIN_PASSWORD)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 2 * time.Hour
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = 12 * time.Hour
	}
	a := &Admin{
		store:    cfg.Store,
		password: []byte(cfg.Password),
		log:      cfg.Logger,
		now:      cfg.Now,
		secure:   cfg.Secure,
		counters: cfg.Counters,
		unsigned: cfg.UnsignedSessions,
		fwd:      cfg.Forwarding,
		dests:    cfg.Destinations,
		limits:   store.SessionLimits{Idle: cfg.SessionIdle, Max: cfg.SessionMax},
		base:     "/admin",
	}
	a.lockout, a.limited = loginLimit(cfg.LoginRate)
	var err error
	if a.pages, err = parsePages(a.funcs()); err != nil {
		return nil, err
	}
	if a.static, err = fs.Sub(staticFiles, "static"); err != nil {
		return nil, err
	}
	return a, nil
}

// pageNames are the templates, one per page; each is parsed with the layout
// and the shared partials (templates/partials.html).
var pageNames = []string{"login", "overview", "search", "profile", "conflicts", "jobs", "warnings", "delete", "error"}

func parsePages(funcs template.FuncMap) (map[string]*template.Template, error) {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("admin: parse layout: %w", err)
	}
	pages := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.Must(layout.Clone()).ParseFS(templateFiles, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("admin: parse %s page: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// Register adds the admin pages to g, which the caller mounts where the
// pages live (for example "/admin"). g must not require other
// authentication: the pages have their own login.
func (a *Admin) Register(g *echo.Group) {
	h := a.headers
	root := g.GET("/", a.page(a.overview), h)
	a.base = strings.TrimSuffix(root.Path, "/")
	g.GET("", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, a.base+"/") }, h)
	g.GET("/login", a.loginForm, h)
	g.POST("/login", a.login, h)
	g.POST("/logout", a.page(a.logout), h)
	g.GET("/static/*", a.staticFile, h)
	g.GET("/favicon.ico", a.Favicon, h)

	g.GET("/search", a.page(a.search), h)
	g.GET("/profile", a.page(a.profileByIdentifier), h)
	g.GET("/profiles/:id", a.page(a.profile), h)
	g.GET("/conflicts", a.page(a.conflicts), h)
	g.POST("/conflicts/:id/resolve", a.page(a.resolve), h)
	g.POST("/links/:id/unmerge", a.page(a.unmerge), h)
	g.GET("/delete", a.page(a.deleteForm), h)
	g.POST("/delete", a.page(a.deleteProfile), h)
	g.GET("/jobs", a.page(a.jobs), h)
	g.POST("/jobs/retry", a.page(a.retry), h)
	g.GET("/warnings", a.page(a.warnings), h)
	g.RouteNotFound("/*", a.page(func(c echo.Context, s *session) error {
		return mapping.Errorf(mapping.CodeNotFound, "there is no admin page at %s", c.Request().URL.Path)
	}), h)
}

// headers sets the security headers of every admin response.
func (a *Admin) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		return next(c)
	}
}

// Favicon serves the admin's icon (an SVG) without a login; the caller may
// also mount it at /favicon.ico. Browsers may keep it for a day.
func (a *Admin) Favicon(c echo.Context) error {
	b, err := fs.ReadFile(a.static, "favicon.svg")
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=86400")
	return c.Blob(http.StatusOK, "image/svg+xml", b)
}

func (a *Admin) staticFile(c echo.Context) error {
	name := c.Param("*")
	b, err := fs.ReadFile(a.static, name)
	if err != nil || strings.Contains(name, "..") {
		return a.fail(c, nil, mapping.Errorf(mapping.CodeNotFound, "no static file %q", name))
	}
	ctype := "application/octet-stream"
	switch {
	case strings.HasSuffix(name, ".css"):
		ctype = "text/css; charset=utf-8"
	case strings.HasSuffix(name, ".js"):
		ctype = "text/javascript; charset=utf-8"
	case strings.HasSuffix(name, ".svg"):
		ctype = "image/svg+xml"
	}
	return c.Blob(http.StatusOK, ctype, b)
}

// pageHandler is an admin page or action behind the login.
type pageHandler func(c echo.Context, s *session) error

// page wraps h: without a session it redirects to the login form; a POST
// must carry the session's CSRF token (403 otherwise); an error from h is
// rendered as an HTML error page.
func (a *Admin) page(h pageHandler) echo.HandlerFunc {
	return func(c echo.Context) error {
		s, err := a.session(c)
		if err != nil {
			return a.fail(c, nil, err)
		}
		if s == nil {
			to := a.base + "/login"
			if c.Request().Method == http.MethodGet && c.Request().URL.Path != a.base+"/" {
				to += "?next=" + url.QueryEscape(c.Request().URL.RequestURI())
			}
			return c.Redirect(http.StatusSeeOther, to)
		}
		if c.Request().Method == http.MethodPost && !validToken(formToken(c), s.csrf) {
			status := httperror.Status(mapping.CodeForbidden)
			return a.render(c, status, "error", errorView{
				frame:   a.frame(c, s, "Forbidden", ""),
				Status:  status,
				Heading: "This form has expired",
				Message: "The form was missing its security token or carried a wrong one, so nothing was changed. Go back, reload the page and submit the form again.",
			})
		}
		if err := h(c, s); err != nil {
			return a.fail(c, s, err)
		}
		return nil
	}
}

// formToken is the CSRF token a form posted: from the request body only,
// never from the query string (a token in a URL leaks through logs, history
// and Referer).
func formToken(c echo.Context) string {
	return c.Request().PostFormValue(csrfField)
}

var headingOf = map[int]string{
	http.StatusBadRequest:          "That request cannot be understood",
	http.StatusNotFound:            "Not found",
	http.StatusConflict:            "That no longer applies",
	http.StatusTooManyRequests:     "Too many attempts",
	http.StatusServiceUnavailable:  "The bridge is busy or shutting down",
	http.StatusInternalServerError: "Something went wrong",
}

// fail renders err as an error page. A *mapping.Error shows its message;
// anything else is logged here and shown without its details.
func (a *Admin) fail(c echo.Context, s *session, err error) error {
	var me *mapping.Error
	status, msg := http.StatusInternalServerError, "The bridge logged the details. Try again; if it keeps failing, look at the log."
	switch {
	case errors.As(err, &me):
		status, msg = httperror.Status(me.Code), me.Message
		if status == http.StatusInternalServerError { // internal, or a code the table does not know
			a.log.Error("admin page failed", "method", c.Request().Method, "path", c.Path(), "err", err)
			msg = "The bridge logged the details. Try again; if it keeps failing, look at the log."
		}
	case errors.Is(err, context.Canceled):
		return nil // the operator went away
	default:
		a.log.Error("admin page failed", "method", c.Request().Method, "path", c.Path(), "err", err)
	}
	heading := headingOf[status]
	if heading == "" {
		heading = http.StatusText(status)
	}
	return a.render(c, status, "error", errorView{frame: a.frame(c, s, heading, ""), Status: status, Heading: heading, Message: msg})
}

// render executes the page's template into a buffer and writes it with status.
func (a *Admin) render(c echo.Context, status int, name string, data any) error {
	var buf bytes.Buffer
	if err := a.pages[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		a.log.Error("render admin page", "page", name, "err", err)
		return c.String(http.StatusInternalServerError, "internal error rendering the page; the bridge logged the details\n")
	}
	return c.HTMLBlob(status, buf.Bytes())
}

// frame is what the layout needs on every page.
type frame struct {
	Title string
	Base  string
	// Nav names the active menu item.
	Nav string
	// LoggedIn shows the menu and the logout form.
	LoggedIn bool
	// CSRF is the session's token for the hidden field of every form.
	CSRF  string
	Flash *flash
	// Self is the current page's path and query, for "back" fields.
	Self string
}

// row is what a shared template that posts a form is given: the page's
// frame (for Base, CSRF and Self) and the item it shows.
type row struct {
	frame
	Row any
}

// With pairs the page's frame with an item for a shared template:
// {{template "job-cells" $.With .}}.
func (f frame) With(item any) row { return row{frame: f, Row: item} }

func (a *Admin) frame(c echo.Context, s *session, title, nav string) frame {
	f := frame{Title: title, Base: a.base, Nav: nav, Self: c.Request().URL.RequestURI()}
	if s != nil {
		f.LoggedIn = true
		f.CSRF = s.csrf
		f.Flash = a.popFlash(c, s)
	}
	return f
}

// redirect answers a form with 303 See Other to a page of the admin, after
// leaving a flash message for it.
func (a *Admin) redirect(c echo.Context, s *session, to string, f flash) error {
	a.setFlash(c, s, f)
	return c.Redirect(http.StatusSeeOther, to)
}

// back returns the form's "back" field if it is a path inside the admin
// (never another site), else fallback.
func (a *Admin) back(c echo.Context, fallback string) string {
	if b := c.FormValue("back"); a.local(b) {
		return b
	}
	return fallback
}

// local reports whether p is a path of the admin pages, safe to redirect to.
func (a *Admin) local(p string) bool {
	if !strings.HasPrefix(p, a.base+"/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n\t \"'<>") || strings.Contains(p, "/../") {
		return false
	}
	u, err := url.Parse(p)
	return err == nil && u.Scheme == "" && u.Host == ""
}

// messageOf returns the client message of a *mapping.Error, or a generic one.
func messageOf(err error) string {
	var me *mapping.Error
	if errors.As(err, &me) && me.Code != mapping.CodeInternal {
		return me.Message
	}
	return "internal error; the bridge logged the details"
}
