package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

func TestPages(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	b := e.browser("192.0.2.60").login()
	pa := e.mustProfile("user_id:" + alice)
	pb := e.mustProfile("user_id:" + bob)
	conflict := e.link("user_id:"+bob, "anonymous_id:"+anonA1)
	applied := e.link("user_id:"+alice, "anonymous_id:"+anonA2)

	tests := []struct {
		name       string
		target     string
		wantStatus int
		want       []string
		unwanted   []string
	}{
		{"overview", "/admin/", 200, []string{
			`<span class="num">2</span><span class="lbl">profiles</span>`,
			`<span class="num">5</span><span class="lbl">identifiers</span>`,
			`<span class="num">4</span><span class="lbl">messages stored</span>`,
			`<span class="num">1</span><span class="lbl">open conflicts</span>`,
			`<span class="num">2</span><span class="lbl">dead deliveries</span>`,
			`href="/admin/conflicts">Open conflicts</a>`, `href="/admin/jobs">Dead deliveries</a>`,
			`href="/admin/warnings">Guessable user IDs</a>`, `href="/admin/warnings#counter-signature_failures">Signature failures</a>`,
			"<td>jimo</td>",
		}, nil},
		{"search form", "/admin/search", 200, []string{`name="q"`, `name="prefix"`}, []string{"No identifier matches"}},
		{"search exact KIND:VALUE", "/admin/search?q=anonymous_id:" + anonA2, 200,
			[]string{fmt.Sprintf(`<a href="/admin/profiles/%d">%s</a>`, pa.ID, anonA2), alice}, []string{anonB1}},
		{"search bare value", "/admin/search?q=" + anonB1, 200,
			[]string{fmt.Sprintf(`<a href="/admin/profiles/%d">%s</a>`, pb.ID, anonB1)}, nil},
		{"search prefix", "/admin/search?q=anon-a&prefix=1", 200, []string{anonA1, anonA2}, []string{anonB1}},
		{"search prefix with kind", "/admin/search?q=user-&kind=user_id&prefix=1", 200, []string{alice, bob}, []string{anonA1}},
		{"search exact without match", "/admin/search?q=anon-a", 200, []string{"No identifier matches"}, []string{anonA1}},
		{"search unknown identifier", "/admin/search?q=user_id:nobody", 200, []string{"No identifier matches"}, nil},
		{"search refused value", "/admin/search?q=user_id:%20%20", 400, []string{"search for a value: empty"}, nil},
		{"profile", fmt.Sprintf("/admin/profiles/%d", pa.ID), 200, []string{
			"<strong>" + alice + "</strong>",
			"no separate token; in shared mode Jimo uses the shared user ID",
			anonA1, anonA2, "linked to user_id:" + alice + " by segment.api message m2",
			`<td class="val key">name</td>`, "Ada", `<td class="val key">plan</td>`,
			fmt.Sprintf(`id="link-%d"`, applied.ID), fmt.Sprintf(`id="link-%d"`, conflict.ID),
			`badge-conflict">conflict</span>`, "Rule: would join user IDs", `action="/admin/links/` + itoa(applied.ID) + `/unmerge"`,
			`action="/admin/conflicts/` + itoa(conflict.ID) + `/resolve"`, `value="link">Link anyway</button>`,
			"<h3>jimo", `badge-dead">dead</span>`, "jimo answered 400: attribute plan is not allowed", `action="/admin/jobs/retry"`,
			"Viewed Pricing", "Raw JSON", "&#34;messageId&#34;: &#34;m2&#34;",
			`href="/admin/delete?identifier=user_id%3a` + alice + `"`,
		}, nil},
		{"profile of bob", fmt.Sprintf("/admin/profiles/%d", pb.ID), 200, []string{bob, anonB1, "Bob"}, []string{anonA2}},
		{"profile unknown", "/admin/profiles/999999", 404, []string{"profile 999999 does not exist"}, nil},
		{"profile not a number", "/admin/profiles/abc", 404, []string{"a profile ID is a positive number"}, nil},
		{"profile by identifier", "/admin/profile?identifier=anonymous_id:" + anonA2, 303, nil, nil},
		{"profile by unknown identifier", "/admin/profile?identifier=user_id:nobody", 404, []string{"no profile has user_id:nobody"}, nil},
		{"profile by malformed identifier", "/admin/profile?identifier=nobody", 400, []string{"must be KIND:VALUE"}, nil},
		{"conflicts", "/admin/conflicts", 200, []string{
			fmt.Sprintf(`id="link-%d"`, conflict.ID), "would join user IDs", `href="/admin/profile?identifier=user_id%3a` + bob + `"`,
			`value="dismiss"`,
			// Who holds each side of the conflict now.
			fmt.Sprintf(`<a href="/admin/profiles/%d">user_id:%s is in profile %d (%s)</a>`, pb.ID, bob, pb.ID, bob),
			fmt.Sprintf(`<a href="/admin/profiles/%d">anonymous_id:%s is in profile %d (%s)</a>`, pa.ID, anonA1, pa.ID, alice),
		}, []string{fmt.Sprintf(`id="link-%d"`, applied.ID)}},
		{"conflicts later page", fmt.Sprintf("/admin/conflicts?after=%d", conflict.ID), 200, []string{"No open conflicts on this page"}, nil},
		{"conflicts bad cursor", "/admin/conflicts?after=x", 400, []string{"want a link ID"}, nil},
		{"dead jobs", "/admin/jobs", 200, []string{"Dead deliveries", "Retry all dead jobs", "out-m1", "out-m3",
			// Each dead job links to its profile and to the message that caused it there.
			fmt.Sprintf(`<a href="/admin/profiles/%d" class="profile">%s</a>`, pa.ID, alice),
			fmt.Sprintf(`<a href="/admin/profiles/%d" class="profile">%s</a>`, pb.ID, bob),
			fmt.Sprintf(`<a href="/admin/profiles/%d#%s">segment.api:m1</a>`, pa.ID, messageAnchor(mapping.SourceSegmentAPI, "m1")),
			`<span class="badge badge-kind">identify</span>`}, nil},
		{"done jobs", "/admin/jobs?state=done", 200, []string{"No done jobs."}, []string{"Retry all dead jobs"}},
		{"jobs bad state", "/admin/jobs?state=lost", 400, []string{"want one of dead"}, nil},
		{"warnings", "/admin/warnings", 200, []string{"No identifier carries a warning", `id="counter-signature_failures"`, "<td class=\"n\">3</td>"}, nil},
		{"delete form", "/admin/delete", 200, []string{`method="get" action="/admin/delete"`}, nil},
		{"delete confirmation", "/admin/delete?identifier=anonymous_id:" + anonA2, 200,
			[]string{"This deletes profile", alice, anonA1, anonA2, `name="confirm"`, "Type <code class=\"val\">anonymous_id:" + anonA2 + "</code> to confirm"}, []string{bob}},
		{"delete unknown identifier", "/admin/delete?identifier=user_id:nobody", 404, []string{"no profile has user_id:nobody"}, nil},
		{"unknown page", "/admin/nowhere", 404, []string{"there is no admin page at /admin/nowhere"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := b.get(tt.target)
			if rec.Code != tt.wantStatus {
				t.Fatalf("got status %d, want %d; body:\n%s", rec.Code, tt.wantStatus, rec.Body)
			}
			mustContain(t, tt.target, rec.Body.String(), tt.want...)
			mustNotContain(t, tt.target, rec.Body.String(), tt.unwanted...)
		})
	}
	t.Run("profile by identifier redirects to the profile", func(t *testing.T) {
		rec := b.get("/admin/profile?identifier=anonymous_id:" + anonA2)
		if got, want := rec.Header().Get("Location"), fmt.Sprintf("/admin/profiles/%d", pa.ID); got != want {
			t.Errorf("got Location %q, want %q", got, want)
		}
	})
}

func TestSearchPagination(t *testing.T) {
	e := newEnv(t, nil)
	var msgs []mapping.Message
	for i := range 60 {
		msgs = append(msgs, message(fmt.Sprintf("p%02d", i), time.Duration(i)*time.Second, "", fmt.Sprintf("page-anon-%02d", i), "Viewed", nil))
	}
	e.submit(msgs...)
	b := e.browser("192.0.2.61").login()

	first := b.get("/admin/search?q=page-anon-&prefix=1")
	body := first.Body.String()
	if got := strings.Count(body, `<td class="val"><a href="/admin/profiles/`); got != searchPageSize {
		t.Errorf("first page: got %d hits, want %d", got, searchPageSize)
	}
	mustContain(t, "first page", body, "page-anon-00", "page-anon-49", `rel="next"`)
	mustNotContain(t, "first page", body, "page-anon-50", "First page")
	next := nextHref.FindStringSubmatch(body)
	if next == nil {
		t.Fatalf("first page has no next link")
	}
	second := b.get(strings.ReplaceAll(next[1], "&amp;", "&")).Body.String()
	if got := strings.Count(second, `<td class="val"><a href="/admin/profiles/`); got != 10 {
		t.Errorf("second page: got %d hits, want 10", got)
	}
	mustContain(t, "second page", second, "page-anon-50", "page-anon-59", "First page")
	mustNotContain(t, "second page", second, "page-anon-49", `rel="next"`)
}

func TestResolveConflict(t *testing.T) {
	tests := []struct {
		name         string
		action       string
		wantDecision mapping.Decision
		wantFlash    string
		// wantOpen is what the conflicts page lists afterwards.
		wantOpen string
	}{
		// Forced, the link wins: alice's own link to anon-a1 becomes the conflict.
		{"link anyway", store.ResolveLink, mapping.DecisionApplied, "linked anyway", "would join user IDs &#34;" + alice + "&#34; and &#34;" + bob},
		{"dismiss", store.ResolveDismiss, mapping.DecisionDismissed, "dismissed: the identifiers stay apart", "No open conflicts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.seed()
			b := e.browser("192.0.2.62").login()
			l := e.link("user_id:"+bob, "anonymous_id:"+anonA1)
			rec := b.post("/admin/conflicts/"+itoa(l.ID)+"/resolve", url.Values{
				"action": {tt.action}, "reason": {"support ticket 42"}, "back": {"/admin/conflicts"}, "a": {l.A.String()}, "b": {l.B.String()},
			})
			if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/admin/conflicts" {
				t.Fatalf("got %d to %q, want 303 to /admin/conflicts; body:\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
			}
			page := b.follow(rec).Body.String()
			mustContain(t, "conflicts after resolving", page, tt.wantFlash, tt.wantOpen)
			mustNotContain(t, "conflicts after resolving", page, fmt.Sprintf(`id="link-%d"`, l.ID))
			got := e.link("user_id:"+bob, "anonymous_id:"+anonA1)
			if got.Decision != tt.wantDecision {
				t.Errorf("got decision %s, want %s", got.Decision, tt.wantDecision)
			}
			last := got.Log[len(got.Log)-1]
			found := false
			for _, entry := range got.Log {
				found = found || (entry.Actor == OperatorPage && entry.Reason == "support ticket 42")
			}
			if !found {
				t.Errorf("got log %+v (last %+v), want an entry by %q with the reason", got.Log, last, OperatorPage)
			}
			if tt.action == store.ResolveLink {
				if p := e.mustProfile("anonymous_id:" + anonA1); p.UserID != bob {
					t.Errorf("after link anyway: got anon-a1 in user %q's profile, want %q", p.UserID, bob)
				}
			}
			// Resolving it again is refused with a message, not a crash.
			rec = b.post("/admin/conflicts/"+itoa(l.ID)+"/resolve", url.Values{"action": {tt.action}, "reason": {"again"}, "back": {"/admin/conflicts"}})
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("second resolve: got status %d, want 303", rec.Code)
			}
			mustContain(t, "second resolve", b.follow(rec).Body.String(), "flash-error", "is not an open conflict")
		})
	}
}

func TestRepairRefusals(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	b := e.browser("192.0.2.63").login()
	conflict := e.link("user_id:"+bob, "anonymous_id:"+anonA1)
	applied := e.link("user_id:"+alice, "anonymous_id:"+anonA2)
	tests := []struct {
		name       string
		target     string
		form       url.Values
		wantStatus int
		wantText   string
	}{
		{"resolve without reason", "/admin/conflicts/" + itoa(conflict.ID) + "/resolve", url.Values{"action": {"link"}, "reason": {"  "}}, 303, "give a reason"},
		{"resolve with a bad action", "/admin/conflicts/" + itoa(conflict.ID) + "/resolve", url.Values{"action": {"merge"}, "reason": {"x"}}, 303, `action &#34;merge&#34;`},
		{"resolve an applied link", "/admin/conflicts/" + itoa(applied.ID) + "/resolve", url.Values{"action": {"dismiss"}, "reason": {"x"}}, 303, "is not an open conflict"},
		{"resolve an unknown link", "/admin/conflicts/999999/resolve", url.Values{"action": {"dismiss"}, "reason": {"x"}}, 303, "link 999999 does not exist"},
		{"resolve a malformed link ID", "/admin/conflicts/abc/resolve", url.Values{"action": {"dismiss"}, "reason": {"x"}}, 404, "a link ID is a positive number"},
		{"unmerge without reason", "/admin/links/" + itoa(applied.ID) + "/unmerge", url.Values{}, 303, "give a reason"},
		{"unmerge with a long reason", "/admin/links/" + itoa(applied.ID) + "/unmerge", url.Values{"reason": {strings.Repeat("r", 501)}}, 303, "longer than 500 characters"},
		{"unmerge a conflict", "/admin/links/" + itoa(conflict.ID) + "/unmerge", url.Values{"reason": {"x"}}, 303, "is not applied"},
		{"retry nothing", "/admin/jobs/retry", url.Values{}, 303, "choose a job to retry"},
		{"retry a job that is not dead", "/admin/jobs/retry", url.Values{"id": {"999999"}}, 303, "job 999999 is not a dead job"},
		{"retry a malformed job ID", "/admin/jobs/retry", url.Values{"id": {"x"}}, 303, "is not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.form.Set("back", "/admin/conflicts")
			rec := b.post(tt.target, tt.form)
			if rec.Code != tt.wantStatus {
				t.Fatalf("got status %d, want %d; body:\n%s", rec.Code, tt.wantStatus, rec.Body)
			}
			body := rec.Body.String()
			if rec.Code == http.StatusSeeOther {
				if got := rec.Header().Get("Location"); got != "/admin/conflicts" {
					t.Errorf("got Location %q, want /admin/conflicts", got)
				}
				body = b.follow(rec).Body.String()
				mustContain(t, "page after refusal", body, "flash-error")
			}
			mustContain(t, "page after refusal", body, tt.wantText)
		})
	}
	if got := e.link("user_id:"+alice, "anonymous_id:"+anonA2); got.Decision != mapping.DecisionApplied {
		t.Errorf("after refusals: got the applied link %s, want it applied", got.Decision)
	}
	if got := e.link("user_id:"+bob, "anonymous_id:"+anonA1); got.Decision != mapping.DecisionConflict {
		t.Errorf("after refusals: got the conflict %s, want conflict", got.Decision)
	}
	t.Run("back is never another site", func(t *testing.T) {
		for _, back := range []string{"https://evil.example/admin/", "//evil.example/admin/x", "/other", "/admin/../x"} {
			rec := b.post("/admin/jobs/retry", url.Values{"back": {back}})
			if got := rec.Header().Get("Location"); got != "/admin/jobs" {
				t.Errorf("back=%q: got Location %q, want /admin/jobs", back, got)
			}
			b.follow(rec)
		}
	})
}

func TestUnmerge(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	b := e.browser("192.0.2.64").login()
	p := e.mustProfile("user_id:" + alice)
	l := e.link("user_id:"+alice, "anonymous_id:"+anonA2)
	self := fmt.Sprintf("/admin/profiles/%d", p.ID)
	rec := b.post("/admin/links/"+itoa(l.ID)+"/unmerge", url.Values{"reason": {"shared library computer"}, "back": {self}, "a": {l.A.String()}, "b": {l.B.String()}})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("got status %d, want 303; body:\n%s", rec.Code, rec.Body)
	}
	page := b.follow(rec)
	if page.Code != http.StatusOK {
		t.Fatalf("page after unmerge: got status %d, want 200; body:\n%s", page.Code, page.Body)
	}
	split := e.mustProfile("anonymous_id:" + anonA2)
	if split.ID == p.ID || split.UserID != "" {
		t.Errorf("after unmerge: got anon-a2 in profile %d (user %q), want a profile of its own", split.ID, split.UserID)
	}
	body := page.Body.String()
	mustContain(t, "profile after unmerge", body,
		fmt.Sprintf("Link %d unmerged", l.ID),
		fmt.Sprintf(`<a href="/admin/profiles/%d">anonymous_id:%s is in profile %d</a>`, split.ID, anonA2, split.ID),
		`badge-retracted">retracted</span>`, `<span class="actor">admin</span>: <span class="val">shared library computer</span>`)
	if strings.Contains(body, `action="/admin/links/`+itoa(l.ID)+`/unmerge"`) {
		t.Errorf("profile after unmerge still offers to unmerge link %d", l.ID)
	}
	// The flash is shown once.
	mustNotContain(t, "reloaded profile", b.get(self).Body.String(), "unmerged: the rules")
}

func TestRetryDeadJobs(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	b := e.browser("192.0.2.65").login()
	dead, err := e.store.Jobs(context.Background(), store.JobDead, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("got %d dead jobs (%v), want 2", len(dead), err)
	}
	p := e.mustProfile("user_id:" + alice)
	self := fmt.Sprintf("/admin/profiles/%d", p.ID)

	var one store.JobInfo
	for _, j := range dead {
		if j.OrderingKey == alice {
			one = j
		}
	}
	rec := b.post("/admin/jobs/retry", url.Values{"id": {itoa(one.ID)}, "back": {self}})
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != self {
		t.Fatalf("retry one: got %d to %q, want 303 to %s", rec.Code, rec.Header().Get("Location"), self)
	}
	body := b.follow(rec).Body.String()
	mustContain(t, "profile after retry", body, "1 dead job(s) are due again", `badge-pending">pending</span>`)
	if left, _ := e.store.Jobs(context.Background(), store.JobDead, 10); len(left) != 1 {
		t.Errorf("after retrying one: got %d dead jobs, want 1", len(left))
	}

	rec = b.post("/admin/jobs/retry", url.Values{"all": {"1"}, "back": {"/admin/jobs"}})
	mustContain(t, "jobs after retry all", b.follow(rec).Body.String(), "1 dead job(s) are due again", "No dead jobs.")
	rec = b.post("/admin/jobs/retry", url.Values{"all": {"1"}})
	mustContain(t, "jobs after a second retry all", b.follow(rec).Body.String(), "There were no dead jobs to retry.")
}

func TestDeleteProfile(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	b := e.browser("192.0.2.66").login()
	p := e.mustProfile("user_id:" + alice)
	confirmPage := "/admin/delete?identifier=" + url.QueryEscape("anonymous_id:"+anonA2)

	t.Run("wrong confirmation", func(t *testing.T) {
		rec := b.post("/admin/delete", url.Values{"identifier": {"anonymous_id:" + anonA2}, "reason": {"privacy request 7"}, "confirm": {"anonymous_id:" + anonA1}})
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != confirmPage {
			t.Fatalf("got %d to %q, want 303 to %s", rec.Code, rec.Header().Get("Location"), confirmPage)
		}
		mustContain(t, "confirmation page", b.follow(rec).Body.String(), "Nothing was deleted: type the identifier exactly")
		if _, err := e.profileOf("user_id:" + alice); err != nil {
			t.Errorf("after a wrong confirmation: got %v, want the profile kept", err)
		}
	})
	t.Run("no reason", func(t *testing.T) {
		rec := b.post("/admin/delete", url.Values{"identifier": {"anonymous_id:" + anonA2}, "confirm": {"anonymous_id:" + anonA2}})
		mustContain(t, "confirmation page", b.follow(rec).Body.String(), "give a reason")
		if _, err := e.profileOf("user_id:" + alice); err != nil {
			t.Errorf("without a reason: got %v, want the profile kept", err)
		}
	})
	t.Run("confirmed", func(t *testing.T) {
		rec := b.post("/admin/delete", url.Values{"identifier": {"anonymous_id:" + anonA2}, "reason": {"privacy request 7"}, "confirm": {" anonymous_id:" + anonA2 + " "}})
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/admin/" {
			t.Fatalf("got %d to %q, want 303 to /admin/", rec.Code, rec.Header().Get("Location"))
		}
		mustContain(t, "overview after delete", b.follow(rec).Body.String(), fmt.Sprintf("Profile %d deleted with its 3 identifier(s)", p.ID))
		for _, id := range []string{"user_id:" + alice, "anonymous_id:" + anonA1, "anonymous_id:" + anonA2} {
			if _, err := e.profileOf(id); mapping.ErrorCode(err) != mapping.CodeNotFound {
				t.Errorf("%s after delete: got %v, want not found", id, err)
			}
		}
		if _, err := e.profileOf("user_id:" + bob); err != nil {
			t.Errorf("bob after deleting alice: got %v, want kept", err)
		}
	})
	t.Run("deleted profile", func(t *testing.T) {
		for _, target := range []string{fmt.Sprintf("/admin/profiles/%d", p.ID), confirmPage, "/admin/profile?identifier=user_id:" + alice} {
			rec := b.get(target)
			if rec.Code != http.StatusNotFound {
				t.Errorf("GET %s: got status %d, want 404", target, rec.Code)
			}
			mustContain(t, target, rec.Body.String(), "Not found")
		}
		rec := b.post("/admin/delete", url.Values{"identifier": {"anonymous_id:" + anonA2}, "reason": {"again"}, "confirm": {"anonymous_id:" + anonA2}})
		if rec.Code != http.StatusNotFound {
			t.Errorf("deleting again: got status %d, want 404", rec.Code)
		}
		search := b.get("/admin/search?q=" + alice).Body.String()
		mustContain(t, "search after delete", search, "No identifier matches")
	})
}

// failingStore fails every overview with an internal error.
type failingStore struct{ *store.Store }

func (failingStore) Overview(context.Context) (store.Overview, error) {
	return store.Overview{}, errors.New("disk I/O error at /var/lib/bridge/secret-path.db")
}

func TestInternalErrorsHideDetails(t *testing.T) {
	e := newEnv(t, func(s *store.Store) Store { return failingStore{s} })
	b := e.browser("192.0.2.67").login2()
	rec := b.get("/admin/")
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("got status %d, want 500", rec.Code)
	}
	mustContain(t, "500 page", rec.Body.String(), "Something went wrong", "logged the details")
	mustNotContain(t, "500 page", rec.Body.String(), "disk I/O", "secret-path")
}

// login2 signs in when the overview cannot render: it reads the token from the search page.
func (b *browser) login2() *browser {
	b.t.Helper()
	if rec := b.tryLogin(testPassword); rec.Code != http.StatusSeeOther {
		b.t.Fatalf("login: got status %d, want 303", rec.Code)
	}
	b.csrf = token(b.t, b.get("/admin/search").Body.String())
	return b
}
