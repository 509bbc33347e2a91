package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping/store"
)

// pageDir holds the browser test's page, its script and the stand-in for Jimo's SDK.
var pageDir = filepath.Join("..", "..", "testdata", "jimo", "page")

// pageData is what page.html is rendered with.
type pageData struct {
	Name string
	// IDs are the values the page gives Jimo: token (session:reset), userId
	// (set user:id, then identify) and email (set user:email).
	IDs map[string]string
	// BridgeOrigin, when set, is the bridge bridge.js reports to (window.JIMO_BRIDGE_ORIGIN).
	BridgeOrigin string
	// Steps are the page's scripts in order: URLs, and "start" where the page
	// pushes its first command.
	Steps []string
}

// testPages serves the test pages from an origin other than the bridge's: the
// page itself, with the Segment anonymous ID cookie analytics.js would have
// written, /assets/ (testdata/jimo/page) and a copy of bridge.js.
type testPages struct {
	*httptest.Server
	tmpl  *template.Template
	mu    sync.Mutex
	pages map[string]pageData
	anon  map[string]string
}

func newTestPages(t *testing.T) *testPages {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join(pageDir, "page.html"))
	if err != nil {
		t.Fatal(err)
	}
	p := &testPages{tmpl: tmpl, pages: map[string]pageData{}, anon: map[string]string{}}
	mux := http.NewServeMux()
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServer(http.Dir(pageDir))))
	mux.HandleFunc("GET /copy/jimo/bridge.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/javascript; charset=utf-8")
		w.Write(jimo.ScriptSource())
	})
	mux.HandleFunc("GET /page/{key}", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		data, ok := p.pages[r.PathValue("key")]
		anon := p.anon[r.PathValue("key")]
		p.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		// analytics.js stores the anonymous ID JSON-encoded, then URL-encoded.
		w.Header().Add("Set-Cookie", "ajs_anonymous_id="+strings.ReplaceAll(`"`+anon+`"`, `"`, "%22")+"; Path=/; SameSite=Lax")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := p.tmpl.Execute(w, data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

// add registers a page for a browser whose Segment anonymous ID is anon and returns its URL.
func (p *testPages) add(data pageData, anon string) string {
	key := strings.ReplaceAll(data.Name, " ", "-") + "-" + anon[:8]
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pages[key] = data
	p.anon[key] = anon
	return p.URL + "/page/" + key
}

// consoleRecord collects what the page reported to the console and the log,
// and its uncaught exceptions.
type consoleRecord struct {
	mu         sync.Mutex
	exceptions []string
	console    []consoleLine
	log        []cdplog.Entry
}

type consoleLine struct {
	kind runtime.ConsoleAPICalledType
	text string
	url  string // the script that called console.*, when known
}

// handle is a chromedp listener: it keeps what it needs of the event, fast.
func (c *consoleRecord) handle(ev any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + d.Exception.Description
		}
		c.exceptions = append(c.exceptions, fmt.Sprintf("%s (at %s:%d%s)", text, d.URL, d.LineNumber+1, stackURLs(d.StackTrace)))
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range ev.Args {
			if len(a.Value) > 0 {
				var s string
				if json.Unmarshal(a.Value, &s) == nil {
					parts = append(parts, s)
					continue
				}
				parts = append(parts, string(a.Value))
				continue
			}
			parts = append(parts, a.Description)
		}
		line := consoleLine{kind: ev.Type, text: strings.Join(parts, " ")}
		if ev.StackTrace != nil && len(ev.StackTrace.CallFrames) > 0 {
			line.url = ev.StackTrace.CallFrames[0].URL
		}
		c.console = append(c.console, line)
	case *cdplog.EventEntryAdded:
		if ev.Entry != nil {
			c.log = append(c.log, *ev.Entry)
		}
	}
}

func stackURLs(st *runtime.StackTrace) string {
	if st == nil {
		return ""
	}
	var urls []string
	for _, f := range st.CallFrames {
		urls = append(urls, f.URL)
	}
	return "; stack " + strings.Join(urls, " < ")
}

// warningsContaining counts console warnings that contain text.
func (c *consoleRecord) warningsContaining(text string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.console {
		if l.kind == runtime.ConsoleAPICalledTypeWarning && strings.Contains(l.text, text) {
			n++
		}
	}
	return n
}

// check fails the test for any uncaught exception or console error, for a
// warning of bridge.js unless bridgeWarnings, and for an error log entry
// (such as a failed request) that is not about allowedURL.
func (c *consoleRecord) check(t *testing.T, bridgeWarnings bool, allowedURL string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.exceptions {
		t.Errorf("uncaught exception on the page: %s", e)
	}
	for _, l := range c.console {
		switch {
		case l.kind == runtime.ConsoleAPICalledTypeError || l.kind == runtime.ConsoleAPICalledTypeAssert:
			t.Errorf("console.%s from %s: %s", l.kind, l.url, l.text)
		case l.kind == runtime.ConsoleAPICalledTypeWarning && (strings.Contains(l.url, "/jimo/bridge.js") || strings.HasPrefix(l.text, "[jimo-bridge]")):
			if !bridgeWarnings {
				t.Errorf("bridge.js warned: %s", l.text)
			}
		case l.kind == runtime.ConsoleAPICalledTypeWarning:
			t.Errorf("console.warn from %s: %s", l.url, l.text)
		}
	}
	for _, e := range c.log {
		if e.Level != cdplog.EntryLevelError {
			continue
		}
		if allowedURL != "" && strings.HasPrefix(e.URL, allowedURL) {
			continue // the stopped bridge cannot be reached: expected
		}
		t.Errorf("page error (%s) %s: %s", e.Source, e.URL, e.Text)
	}
}

// pageResult is what the stand-in and the page recorded.
type pageResult struct {
	JimoReceived  []any          `json:"jimoReceived"`
	JimoCallbacks []string       `json:"jimoCallbacks"`
	PageLog       []pageCallback `json:"pageLog"`
	BridgeLoaded  bool           `json:"bridgeLoaded"`
	Cookie        string         `json:"cookie"`
}

type pageCallback struct {
	Callback   string         `json:"callback"`
	Result     map[string]any `json:"result"`
	ThisIsJimo bool           `json:"thisIsJimo"`
}

const pageResultJS = `JSON.stringify({
	jimoReceived: window.__jimoReceived || null,
	jimoCallbacks: window.__jimoCallbacks || null,
	pageLog: window.__pageLog || null,
	bridgeLoaded: !!(window.jimoBridge && window.jimoBridge.loaded),
	cookie: document.cookie
})`

// TestJimoBrowser loads bridge.js next to a stand-in for Jimo's SDK in
// headless Chromium. The page does a legacy session:reset (token T, then set
// user:id U in the callback) and the current identify (U, then set
// user:email in the callback). Jimo must get every command unchanged and in
// order, callbacks included, whether bridge.js loads before the SDK (the
// reset is buffered in the snippet's array and replayed), after it, or not at
// all; and while the bridge runs, one profile must hold the browser's Segment
// anonymous ID, T, U and the email.
func TestJimoBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	start := time.Now()
	pages := newTestPages(t)
	live := startBridge(t, "", "-allowed-origins", pages.URL, acceptUnsigned)
	stopped := startBridge(t, "", "-allowed-origins", pages.URL, acceptUnsigned)
	stopped.stop(t)

	browserCtx := newBrowser(t, chromium, 1000, 900)
	t.Logf("bridges and chromium started in %v", time.Since(start).Round(time.Millisecond))

	standIn := "/assets/jimo-standin.js"
	tests := []struct {
		name   string
		bridge *testBridge // nil: the stopped one
		steps  func(bridgeJS string) []string
		// copyScript serves bridge.js from the page's origin, reporting to the
		// stopped bridge: the script loads, the bridge cannot be reached.
		copyScript bool
	}{
		{name: "bridge.js before the SDK", bridge: live, steps: func(s string) []string { return []string{s, "start", standIn} }},
		{name: "bridge.js after the SDK", bridge: live, steps: func(s string) []string { return []string{standIn, s, "start"} }},
		{name: "bridge stopped", steps: func(s string) []string { return []string{s, "start", standIn} }},
		{name: "bridge stopped after bridge.js loaded", copyScript: true, steps: func(s string) []string { return []string{s, "start", standIn} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			began := time.Now()
			token, userID, anon := newUUID(t), newUUID(t), newUUID(t)
			email := "ada-" + newUUID(t)[:8] + "@example.com"
			data := pageData{Name: tt.name, IDs: map[string]string{"token": token, "userId": userID, "email": email}}
			bridgeJS := live.URL + "/jimo/bridge.js"
			switch {
			case tt.copyScript:
				bridgeJS = pages.URL + "/copy/jimo/bridge.js"
				data.BridgeOrigin = stopped.URL
			case tt.bridge == nil:
				bridgeJS = stopped.URL + "/jimo/bridge.js"
			}
			data.Steps = tt.steps(bridgeJS)
			url := pages.add(data, anon)

			storedSeries := `bridge_messages_stored_total{source="jimo.session"}`
			var storedBefore float64
			if tt.bridge != nil {
				storedBefore = tt.bridge.metric(t, storedSeries)
			}
			var rec consoleRecord
			tabCtx, cancelTab := chromedp.NewContext(browserCtx, chromedp.WithListener(rec.handle))
			defer cancelTab()
			if err := chromedp.Do(tabCtx); err != nil { // the tab lives as long as tabCtx
				t.Fatalf("open a tab: %v", err)
			}
			ctx, cancel := context.WithTimeout(tabCtx, 15*time.Second)
			defer cancel()

			err := chromedp.Do(ctx,
				chromedp.Navigate(url),
				chromedp.Poll[chromedp.Void](`window.__pageLog && window.__pageLog.length >= 2 && window.__jimoReceived && window.__jimoReceived.length >= 4`,
					chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(20*time.Millisecond)),
			)
			raw, evalErr := chromedp.Run(ctx, chromedp.Evaluate[string](pageResultJS))
			if err != nil || evalErr != nil {
				t.Fatalf("page did not complete: %v %v\npage state: %s", err, evalErr, raw)
			}
			var got pageResult
			if err := json.Unmarshal([]byte(raw), &got); err != nil {
				t.Fatalf("page result: %v: %s", err, raw)
			}

			// Jimo got every command as the page pushed it, in order, once.
			want := []any{
				[]any{"do", "session:reset", []any{token, "[callback]"}},
				[]any{"set", "user:id", []any{userID}},
				[]any{"do", "identify", []any{userID, "[callback]"}},
				[]any{"set", "user:email", []any{email}},
			}
			if !reflect.DeepEqual(got.JimoReceived, want) {
				t.Errorf("commands Jimo received:\n got %v\nwant %v", got.JimoReceived, want)
			}
			if !reflect.DeepEqual(got.JimoCallbacks, []string{"session:reset", "identify"}) {
				t.Errorf("callbacks Jimo ran: got %v, want [session:reset identify]", got.JimoCallbacks)
			}
			for i, name := range []string{"session:reset", "identify"} {
				if i >= len(got.PageLog) {
					t.Errorf("the page's %s callback did not run", name)
					continue
				}
				cb := got.PageLog[i]
				if cb.Callback != name || !cb.ThisIsJimo || cb.Result["ok"] != true || cb.Result["command"] != name {
					t.Errorf("page callback %d: got %+v, want %s called by Jimo with its result", i, cb, name)
				}
			}
			if !strings.Contains(got.Cookie, "ajs_anonymous_id=%22"+anon+"%22") {
				t.Errorf("document.cookie = %q, want the Segment anonymous ID cookie", got.Cookie)
			}
			if wantLoaded := tt.bridge != nil || tt.copyScript; got.BridgeLoaded != wantLoaded {
				t.Errorf("window.jimoBridge loaded: got %v, want %v", got.BridgeLoaded, wantLoaded)
			}

			switch {
			case tt.bridge != nil:
				p := waitForProfile(t, tt.bridge, "user_id:"+userID, 5*time.Second, func(p store.Profile) bool {
					ids := identifierSet(p)
					return ids["anonymous_id:"+anon] && ids["jimo_token:"+token] && p.Traits["email"] == email
				})
				if p.UserID != userID {
					t.Errorf("profile user ID: got %q, want %q", p.UserID, userID)
				}
				for _, id := range []string{"anonymous_id:" + anon, "jimo_token:" + token, "email:" + email} {
					if other := mustProfile(t, tt.bridge, id); other.ID != p.ID {
						t.Errorf("lookup %s: got profile %d, want %d", id, other.ID, p.ID)
					}
				}
				// One report per reset: Jimo's replay of the buffer is not reported
				// again. Once both reports are stored, a logout the page reports
				// comes after any such replay: once it is stored, exactly three
				// reports must be.
				stored := func() float64 { return tt.bridge.metric(t, storedSeries) - storedBefore }
				for deadline := time.Now().Add(5 * time.Second); stored() < 2 && time.Now().Before(deadline); {
					time.Sleep(20 * time.Millisecond)
				}
				if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.jimoBridge.reset(), true`)); err != nil {
					t.Fatalf("jimoBridge.reset(): %v", err)
				}
				if !waitForLogout(t, tt.bridge, p.ID, 5*time.Second) {
					t.Fatalf("the page's logout was not stored")
				}
				// The counter moves once the commit is acknowledged, a moment after
				// the history shows it.
				for deadline := time.Now().Add(5 * time.Second); stored() < 3 && time.Now().Before(deadline); {
					time.Sleep(20 * time.Millisecond)
				}
				if got := stored(); got != 3 {
					t.Errorf("session reports stored: got %v, want 3 (the reset, the identify and the logout)", got)
				}
				rec.check(t, false, "")
			case tt.copyScript:
				// Both reports were tried and failed without breaking the page.
				deadline := time.Now().Add(5 * time.Second)
				for rec.warningsContaining("could not be reached") < 2 && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if n := rec.warningsContaining("could not be reached"); n < 2 {
					t.Errorf("bridge.js warnings that the bridge is unreachable: got %d, want 2 (one per report)", n)
				}
				rec.check(t, true, stopped.URL)
			default:
				rec.check(t, false, stopped.URL)
			}
			screenshot(t, ctx)
			t.Logf("%s: %v", tt.name, time.Since(began).Round(time.Millisecond))
		})
	}
}

// waitForProfile polls the lookup API until identifier's profile satisfies ok.
func waitForProfile(t *testing.T, b *testBridge, identifier string, timeout time.Duration, ok func(store.Profile) bool) store.Profile {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, found := b.profile(t, identifier)
		if found && ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup %s: after %v got %+v (found %v), want the page's reports joined on it", identifier, timeout, p, found)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// screenshot saves the page to the test's artifact directory (kept with -artifacts).
func screenshot(t *testing.T, ctx context.Context) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	path := filepath.Join(t.ArtifactDir(), "page.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Logf("screenshot: %v", err)
	}
}

// waitForLogout waits until the history of profile id holds a logout
// reported by the page, and says whether it does.
func waitForLogout(t *testing.T, b *testBridge, id int64, within time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r := b.do(t, http.MethodGet, fmt.Sprintf("/api/v1/profiles/%d/history", id), nil, map[string]string{"Authorization": "Bearer " + testAdminPassword})
		var out struct {
			History struct {
				Messages []struct {
					Type string `json:"type"`
				} `json:"messages"`
			} `json:"history"`
		}
		if r.status == http.StatusOK && json.Unmarshal(r.body, &out) == nil {
			for _, m := range out.History.Messages {
				if m.Type == "logout" {
					return true
				}
			}
		}
	}
	return false
}
