package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/jimo/jimotest"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/admin"
	"github.com/bridgeworks/bridge/mapping/store"
)

// adminGet reads an admin API answer as the admin (Basic auth) into out.
func adminGet(t *testing.T, b *testBridge, path string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.URL+path, nil)
	req.SetBasicAuth("admin", testAdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got status %d, want 200: %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

// waitDeadJob waits until the outbox holds a dead job for user and returns it.
func waitDeadJob(t *testing.T, b *testBridge, user string) store.JobInfo {
	t.Helper()
	deadline := time.Now().Add(deliveryDeadline)
	for {
		var out struct{ Jobs []store.JobInfo }
		adminGet(t, b, "/api/v1/jobs?state=dead", &out)
		for _, j := range out.Jobs {
			if j.OrderingKey == user {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead job for %s after %v: %+v", user, deliveryDeadline, out.Jobs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pageText waits until the text of the first element matching css contains
// want (the page may be navigating meanwhile) and returns it.
func pageText(t *testing.T, ctx context.Context, css, want string) string {
	t.Helper()
	expr := fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent`, css)
	deadline := time.Now().Add(15 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err == nil {
			got = text
			if strings.Contains(text, want) {
				return text
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	t.Fatalf("at %s: %s: got text %q, want it to contain %q", loc, css, strings.Join(strings.Fields(got), " "), want)
	return ""
}

// TestAdminBrowser drives the admin page in headless Chromium the way an
// operator would: log in, find a browser by its anonymous ID, open the
// profile, dismiss a conflict, unmerge a link and retry a dead delivery,
// checking what the page shows after each step.
func TestAdminBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	fakeJimo := jimotest.NewServer(t, jimoKey)
	b := startBridge(t, "", "-jimo-api-key", jimoKey, "-jimo-endpoint", fakeJimo.URL)

	// Seed through the real Tracking API: Ada's first browser (its Jimo
	// delivery is refused once, so it is dead), her second browser, and Bob
	// logging in on her first browser (a conflict: two user IDs).
	ada, bob := "user-ada-"+uuid.NewString(), "user-bob-"+uuid.NewString()
	anon1, anon2 := "anon-"+uuid.NewString(), "anon-"+uuid.NewString()
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	fakeJimo.FailWith(400, 1)
	client := newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Identify{UserId: ada, AnonymousId: anon1, Timestamp: base, Traits: analytics.NewTraits().SetName("Ada Lovelace").Set("plan", "pro")}))
	must(t, client.Close())
	dead := waitDeadJob(t, b, ada)
	client = newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Track{UserId: ada, AnonymousId: anon2, Event: "Viewed Pricing", Timestamp: base.Add(time.Minute)}))
	must(t, client.Enqueue(analytics.Identify{UserId: bob, AnonymousId: anon1, Timestamp: base.Add(2 * time.Minute)}))
	must(t, client.Close())

	p, ok := b.profile(t, "anonymous_id:"+anon1)
	if !ok || p.UserID != ada {
		t.Fatalf("seed: got profile %+v, want %s's", p, ada)
	}
	var history struct{ History store.History }
	adminGet(t, b, fmt.Sprintf("/api/v1/profiles/%d/history", p.ID), &history)
	var conflict, second store.LinkInfo
	for _, l := range history.History.Links {
		switch {
		case l.Decision == mapping.DecisionConflict:
			conflict = l
		case l.A.Value == anon2 || l.B.Value == anon2:
			second = l
		}
	}
	if conflict.ID == 0 || second.ID == 0 || second.Decision != mapping.DecisionApplied {
		t.Fatalf("seed: got links %+v, want a conflict and an applied link to %s", history.History.Links, anon2)
	}

	ctx := newBrowser(t, chromium, 1366, 900)
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			t.Fatalf("%s (at %s): %v", step, loc, err)
		}
	}

	// Log in: the admin sends an anonymous visitor to the login form.
	do("open the admin", chromedp.Navigate(b.URL+"/admin/"))
	pageText(t, ctx, "h1", "Sign in")
	do("log in",
		chromedp.SendKeys(chromedp.CSS("#password"), testAdminPassword),
		chromedp.Click(chromedp.CSS("form button.primary")),
	)
	pageText(t, ctx, "h1", "Overview")
	pageText(t, ctx, "a.card[href$='/admin/conflicts']", "1open conflicts")
	pageText(t, ctx, "a.card[href$='/admin/jobs']", "1dead deliveries")
	// The CSP lets the stylesheet and the script from /admin/static/ load.
	bg, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("header.top")).backgroundColor`))
	if err != nil || bg != "rgb(29, 35, 48)" {
		t.Errorf("header background: got %q (%v), want rgb(29, 35, 48) from admin.css", bg, err)
	}

	// Search for the anonymous ID from the header's search box.
	do("search",
		chromedp.SendKeys(chromedp.CSS("header input[name=q]"), "anonymous_id:"+anon1),
		chromedp.Click(chromedp.CSS("header form.quick button")),
	)
	hit := pageText(t, ctx, "table.hits tbody", anon1)
	if !strings.Contains(hit, ada) {
		t.Errorf("search hit: got %q, want it to show the shared user ID %s", hit, ada)
	}

	// Open the profile.
	do("open the profile", chromedp.Click(chromedp.CSS("table.hits tbody a")))
	pageText(t, ctx, "h1", fmt.Sprintf("Profile %d", p.ID))
	summary := pageText(t, ctx, "dl.summary", ada)
	mustContainAll(t, "profile summary", summary, "Shared user ID", "Jimo token")
	mustContainAll(t, "identifiers", pageText(t, ctx, "#identifiers", anon1), anon2, ada)
	mustContainAll(t, "traits", pageText(t, ctx, "#traits", "Ada Lovelace"), "plan", "pro")
	mustContainAll(t, "link history", pageText(t, ctx, "#links", "conflict"), "would join user IDs", "applied")
	mustContainAll(t, "deliveries", pageText(t, ctx, "#deliveries", "dead"), "permanent", "400")
	mustContainAll(t, "messages", pageText(t, ctx, "#messages", "Viewed Pricing"), "identify", "Raw JSON")
	if title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("time[datetime]").title`)); err != nil || title == "" {
		t.Errorf("admin.js: got no local-time title on <time> (%q, %v), want one", title, err)
	}
	saveScreenshot(t, ctx, "admin-profile.png")

	// Resolve the conflict: dismiss it, with a reason.
	li := fmt.Sprintf("#link-%d", conflict.ID)
	do("dismiss the conflict",
		chromedp.SendKeys(chromedp.CSS(li+" form.resolve input[name=reason]"), "Bob used Ada's laptop once"),
		chromedp.Click(chromedp.CSS(li+" form.resolve button[value=dismiss]")),
	)
	pageText(t, ctx, ".flash", fmt.Sprintf("Link %d dismissed", conflict.ID))
	mustContainAll(t, "dismissed link", pageText(t, ctx, li, "dismissed"), "admin", "Bob used Ada's laptop once")
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, li+" form.resolve"))); n != 0 {
		t.Errorf("dismissed link: got %d resolve forms, want none", n)
	}

	// Unmerge Ada's second browser.
	li = fmt.Sprintf("#link-%d", second.ID)
	do("unmerge",
		chromedp.SendKeys(chromedp.CSS(li+" form.unmerge input[name=reason]"), "shared library computer"),
		chromedp.Click(chromedp.CSS(li+" form.unmerge button")),
	)
	flash := pageText(t, ctx, ".flash", fmt.Sprintf("Link %d unmerged", second.ID))
	mustContainAll(t, "unmerge flash", flash, "anonymous_id:"+anon2+" is in profile")
	mustContainAll(t, "unmerged link", pageText(t, ctx, li, "retracted"), "shared library computer")
	if ids := pageText(t, ctx, "#identifiers", anon1); strings.Contains(ids, anon2) {
		t.Errorf("identifiers after unmerge: got %q, want %s gone", ids, anon2)
	}
	if split, ok := b.profile(t, "anonymous_id:"+anon2); !ok || split.ID == p.ID || split.UserID != "" {
		t.Errorf("after unmerge: got %s in %+v, want a profile of its own", anon2, split)
	}

	// Retry the dead delivery: the fake Jimo accepts it this time.
	row := fmt.Sprintf("#job-%d", dead.ID)
	pageText(t, ctx, row, "dead")
	do("retry", chromedp.Click(chromedp.CSS(row+" form.retry button")))
	pageText(t, ctx, ".flash", "1 dead job(s) are due again")
	delivered := false
	for _, r := range mustRequests(t, fakeJimo, ada) {
		delivered = delivered || r == ada
	}
	if !delivered {
		t.Errorf("fake Jimo got no delivery for %s after the retry", ada)
	}
	deadline := time.Now().Add(deliveryDeadline)
	for {
		do("reload", chromedp.Reload())
		text := pageText(t, ctx, row, fmt.Sprint(dead.ID))
		if strings.Contains(text, "done") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d after retry: got %q, want done", dead.ID, strings.Join(strings.Fields(text), " "))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, row+" form.retry"))); n != 0 {
		t.Errorf("delivered job: got %d retry forms, want none", n)
	}
}

// mustRequests waits until fake Jimo received a delivery for user and returns the users of all deliveries.
func mustRequests(t *testing.T, fake *jimotest.Server, user string) []string {
	t.Helper()
	deadline := time.Now().Add(deliveryDeadline)
	for {
		var users []string
		for _, r := range fake.Requests() {
			users = append(users, r.Event.UserID)
		}
		for _, u := range users {
			if u == user {
				return users
			}
		}
		if time.Now().After(deadline) {
			return users
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustContainAll(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s: got %q, want it to contain %q", what, strings.Join(strings.Fields(got), " "), w)
		}
	}
}

// saveScreenshot writes a full-page PNG of what the browser shows to
// testdata/artifacts/name (git-ignored) and to the test's artifact directory.
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	// Chromium may report a zero-sized page while it finishes laying out a
	// page it just loaded: wait for the load, and try again a few times.
	var png []byte
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		ready, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.readyState === "complete" && document.documentElement.scrollWidth > 0`))
		if ready {
			if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("screenshot %s: page ready %v: %v", name, ready, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	dir := filepath.Join("..", "..", "testdata", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	for _, path := range []string{filepath.Join(dir, name), filepath.Join(t.ArtifactDir(), name)} {
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Errorf("save screenshot: %v", err)
		} else {
			t.Logf("screenshot: %s", path)
		}
	}
}

// waitHistory polls the profile's history until done accepts its jobs.
func waitHistory(t *testing.T, b *testBridge, profileID int64, what string, done func([]store.JobInfo) bool) []store.JobInfo {
	t.Helper()
	deadline := time.Now().Add(deliveryDeadline)
	for {
		var out struct{ History store.History }
		adminGet(t, b, fmt.Sprintf("/api/v1/profiles/%d/history", profileID), &out)
		if done(out.History.Jobs) {
			return out.History.Jobs
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, want %s; got jobs %+v", deliveryDeadline, what, out.History.Jobs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// findJob returns the job to destination whose payload has type kind.
func findJob(jobs []store.JobInfo, destination, kind string) (store.JobInfo, bool) {
	for _, j := range jobs {
		var p struct{ Type string }
		_ = json.Unmarshal([]byte(j.Payload), &p)
		if j.Destination == destination && p.Type == kind {
			return j, true
		}
	}
	return store.JobInfo{}, false
}

// TestAdminJimoViewBrowser: a person whose identify Jimo got, whose track
// Jimo refused (a dead job), and who completed a tour that Jimo's webhook
// reported (forwarded to Segment as a track). The profile page answers "what
// does Jimo know?" at the top, lists each delivery with what was sent and the
// message that caused it, and names the tour in the timeline; the overview
// shows the configuration and both destinations. Screenshots of both go to
// testdata/artifacts/.
func TestAdminJimoViewBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	b, fakeJimo, fakeSegment := forwardingBridge(t, "-jimo-forward-track")
	ada, anon := "user-ada-"+uuid.NewString(), "anon-"+uuid.NewString()
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)

	client := newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Identify{UserId: ada, AnonymousId: anon, Timestamp: base,
		Traits: analytics.NewTraits().SetName("Ada Lovelace").Set("plan", "pro").SetEmail("ada@example.com")}))
	must(t, client.Close())
	mustRequests(t, fakeJimo, ada)
	fakeJimo.FailWith(400, 1) // Jimo refuses the track: dead
	client = newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Track{UserId: ada, AnonymousId: anon, Event: "Viewed Pricing", Timestamp: base.Add(time.Minute)}))
	must(t, client.Close())
	waitDeadJob(t, b, ada)
	if r := b.do(t, http.MethodPost, "/jimo/webhook?secret="+testWebhookSecret, webhookBody(t, ada, "ada@example.com"),
		map[string]string{"Content-Type": "application/json"}); r.status != http.StatusOK {
		t.Fatalf("jimo webhook: got status %d, want 200: %s", r.status, r.body)
	}
	p, ok := b.profile(t, "user_id:"+ada)
	if !ok {
		t.Fatalf("no profile for %s", ada)
	}
	jobs := waitHistory(t, b, p.ID, "a Jimo identify done, a Jimo track dead and a Segment track done", func(jobs []store.JobInfo) bool {
		identify, ok1 := findJob(jobs, "jimo", "identify")
		track, ok2 := findJob(jobs, "jimo", "track")
		seg, ok3 := findJob(jobs, "segment", "track")
		return ok1 && ok2 && ok3 && identify.State == store.JobDone && track.State == store.JobDead && seg.State == store.JobDone
	})
	identify, _ := findJob(jobs, "jimo", "identify")
	dead, _ := findJob(jobs, "jimo", "track")
	if _, err := fakeSegment.WaitFor(1, deliveryDeadline); err != nil {
		t.Fatal(err)
	}

	// The favicon is served at the root and under /admin, without a login.
	for _, path := range []string{"/favicon.ico", "/admin/favicon.ico"} {
		r := b.do(t, http.MethodGet, path, nil, nil)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "image/svg+xml" || !strings.HasPrefix(string(r.body), "<svg") {
			t.Errorf("GET %s: got %d %q, want 200 image/svg+xml", path, r.status, r.header.Get("Content-Type"))
		}
	}

	ctx := newBrowser(t, chromium, 1366, 900)
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			t.Fatalf("%s (at %s): %v", step, loc, err)
		}
	}
	do("open the admin", chromedp.Navigate(b.URL+"/admin/"))
	do("log in",
		chromedp.SendKeys(chromedp.CSS("#password"), testAdminPassword),
		chromedp.Click(chromedp.CSS("form button.primary")),
	)
	pageText(t, ctx, "h1", "Overview")
	jimoHost := strings.TrimPrefix(fakeJimo.URL, "http://")
	mustContainAll(t, "configuration", pageText(t, ctx, "table.settings", "Forwarding to Jimo"),
		"Forwarding to Segment", strings.TrimPrefix(fakeSegment.URL, "http://"), jimoHost, "Jimo token mode", "shared", "Session signatures", "required")
	mustContainAll(t, "jimo destination", pageText(t, ctx, "#dest-jimo", "jimo"), "delivering", "1")
	mustContainAll(t, "segment destination", pageText(t, ctx, "#dest-segment", "segment"), "delivering")
	saveScreenshot(t, ctx, "admin-overview.png")

	// The dead job links to its profile.
	do("open dead jobs", chromedp.Navigate(b.URL+"/admin/jobs"))
	mustContainAll(t, "dead job", pageText(t, ctx, fmt.Sprintf("#job-%d", dead.ID), ada), "track", "segment.api:", fmt.Sprintf("profile %d", p.ID))
	saveScreenshot(t, ctx, "admin-jobs.png")
	do("follow the dead job to its profile", chromedp.Click(chromedp.CSS(fmt.Sprintf("#job-%d a.profile", dead.ID))))
	pageText(t, ctx, "h1", fmt.Sprintf("Profile %d", p.ID))

	view := pageText(t, ctx, "#jimo-view", "known to Jimo")
	mustContainAll(t, "Jimo's view", view, "Jimo was given this person as "+ada, "1 delivered, the latest an identify at", fmt.Sprintf("job %d", identify.ID),
		"1 delivery to Jimo is dead", "400", "Jimo reported this person in 1 webhook(s)", "Welcome tour")
	mustContainAll(t, "identify delivery", pageText(t, ctx, fmt.Sprintf("#job-%d", identify.ID), "identify"),
		"done", ada, "userId", "plan", "pro", "Ada Lovelace", "segment.api:", "created", "updated")
	mustContainAll(t, "dead delivery", pageText(t, ctx, fmt.Sprintf("#job-%d", dead.ID), "dead"), "track", "Viewed Pricing", "400", "Retry")
	mustContainAll(t, "segment delivery", pageText(t, ctx, "#deliveries", "Jimo Tour Completed"), "segment", "jimo.webhook:", "experience_name")
	mustContainAll(t, "timeline", pageText(t, ctx, "#messages", "tour “Welcome tour”"), "tour.completed", "Viewed Pricing")
	// The cause of a delivery links to its message in the timeline.
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector("#job-%d td:nth-child(5) a").getAttribute("href")`, dead.ID)))
	if err != nil || !strings.HasPrefix(href, "#msg-") {
		t.Fatalf("dead job's cause: got href %q (%v), want a #msg- anchor", href, err)
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, "#messages li"+href))); n != 1 {
		t.Errorf("dead job's cause %s: got %d messages with that anchor, want 1", href, n)
	}
	saveScreenshot(t, ctx, "admin-profile-jimo.png")
}

// TestAdminForwardingHasNoSecrets: what the overview is given of the
// configuration names hosts and switches only: no key, and no credentials
// written into an endpoint URL.
func TestAdminForwardingHasNoSecrets(t *testing.T) {
	tests := []struct {
		name                  string
		cfg                   config
		wantSegment, wantJimo admin.Destination
	}{
		{"both on", config{SegmentForwardWriteKey: "seg-secret-key", SegmentEndpoint: "https://ops:pw-in-url@api.segment.io/v1",
			JimoAPIKey: "jimo-secret-key", JimoEndpoint: "https://jimo.example:8443/path?token=q", JimoTokenMode: "derived"},
			admin.Destination{Name: "segment", On: true, Host: "api.segment.io"},
			admin.Destination{Name: "jimo", On: true, Host: "jimo.example:8443"}},
		{"no keys", config{SegmentEndpoint: "https://api.segment.io", JimoEndpoint: "https://jimo.example", JimoTokenMode: "shared"},
			admin.Destination{Name: "segment", Host: "api.segment.io", Off: "BRIDGE_SEGMENT_FORWARD_WRITE_KEY is not set"},
			admin.Destination{Name: "jimo", Host: "jimo.example", Off: "BRIDGE_JIMO_API_KEY is not set"}},
		{"jimo key without endpoint", config{JimoAPIKey: "jimo-secret-key", JimoTokenMode: "shared"},
			admin.Destination{Name: "segment", Off: "BRIDGE_SEGMENT_FORWARD_WRITE_KEY is not set"},
			admin.Destination{Name: "jimo", Off: "BRIDGE_JIMO_ENDPOINT is not set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := adminForwarding(tt.cfg)
			if f.Segment != tt.wantSegment || f.Jimo != tt.wantJimo || f.TokenMode != tt.cfg.JimoTokenMode {
				t.Errorf("got %+v, want segment %+v, jimo %+v, token mode %s", *f, tt.wantSegment, tt.wantJimo, tt.cfg.JimoTokenMode)
			}
			b, _ := json.Marshal(f)
			for _, secret := range []string{"seg-secret-key", "jimo-secret-key", "pw-in-url", "token=q"} {
				if strings.Contains(string(b), secret) {
					t.Errorf("the admin is given %q: %s", secret, b)
				}
			}
		})
	}
}
