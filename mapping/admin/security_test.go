package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

// deepArrays is JSON nested depth levels deep, 2 bytes a level.
func deepArrays(depth int) string {
	return `{"a":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
}

func TestProfilePageCapsRawPayloads(t *testing.T) {
	const user = "user-deep-7f3a9c1e5b2d"
	deepObjects := strings.Repeat(`{"a":`, 8000) + `1` + strings.Repeat(`}`, 8000) // 48 KB
	wide := `{"list":[` + strings.Repeat(`"abcdefgh",`, 3000) + `"z"]}`
	tests := []struct {
		name, raw string
		wantNote  string
	}{
		// 16 KB nested 8,000 levels deep indented to 131 MB before the cap.
		{"16 KB, 8,000 levels", deepArrays(8000), ""},
		{"48 KB, 8,000 levels", deepObjects, fmt.Sprintf("truncated, %d bytes in all", len(deepObjects))},
		{"not JSON", strings.Repeat("x", 40000), "truncated, 40000 bytes in all"},
		{"wide and shallow", wide, fmt.Sprintf("truncated, %d bytes in all", len(wide))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			msg := message("deep-1", 0, user, "anon-deep-1", "", nil)
			msg.Raw = json.RawMessage(tt.raw)
			job := jimoJob("out-deep-1", user)
			job.Payload = json.RawMessage(tt.raw)
			msg.Jobs = []mapping.Job{job}
			e.submit(msg)
			p := e.mustProfile("user_id:" + user)
			b := e.browser("192.0.2.90").login()
			for _, target := range []string{fmt.Sprintf("/admin/profiles/%d", p.ID), "/admin/jobs?state=all"} {
				rec := b.get(target)
				if rec.Code != http.StatusOK {
					t.Fatalf("%s: got status %d, want 200", target, rec.Code)
				}
				// At most two payloads a page (message and job), each at most
				// maxShownBytes, which HTML escaping can grow fivefold (" is &#34;).
				if n, most := rec.Body.Len(), 2*5*maxShownBytes+32<<10; n > most {
					t.Errorf("%s: got %d bytes, want at most %d", target, n, most)
				}
				if tt.wantNote != "" {
					mustContain(t, target, rec.Body.String(), tt.wantNote)
				} else if strings.Contains(rec.Body.String(), "truncated,") {
					t.Errorf("%s: got a truncation note for a payload that fits", target)
				}
			}
		})
	}
}

func TestShowRawIndentsOnlyShallowPayloads(t *testing.T) {
	if got := showRaw(`{"a":{"b":1}}`).Text; got != "{\n  \"a\": {\n    \"b\": 1\n  }\n}" {
		t.Errorf("shallow: got %q, want it indented", got)
	}
	deep := strings.Repeat("[", maxPrettyDepth+1) + strings.Repeat("]", maxPrettyDepth+1)
	if got := showRaw(deep).Text; got != deep {
		t.Errorf("deeper than %d: got %q, want it compact", maxPrettyDepth, got)
	}
	// A cut never splits a character.
	long := `"` + strings.Repeat("é", maxShownBytes) + `"`
	if got := showRaw(long).Text; !strings.HasSuffix(got, "é…") {
		t.Errorf("cut: got …%q, want it to end on a whole character", got[len(got)-8:])
	}
}

func TestCSRFTokenOnlyFromTheFormBody(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	b := e.browser("192.0.2.91").login()
	// The right token, in the query string only: refused, nothing retried.
	rec := b.do(http.MethodPost, "/admin/jobs/retry?csrf="+url.QueryEscape(b.csrf)+"&all=1", url.Values{"all": {"1"}})
	if rec.Code != http.StatusForbidden {
		t.Fatalf("token in the query: got status %d, want 403", rec.Code)
	}
	if dead, _ := e.store.Jobs(t.Context(), store.JobDead, 10); len(dead) != 2 {
		t.Errorf("dead jobs after a refused retry: got %d, want 2", len(dead))
	}
	// The same in the body: accepted.
	if rec := b.post("/admin/jobs/retry", url.Values{"all": {"1"}}); rec.Code != http.StatusSeeOther {
		t.Errorf("token in the body: got status %d, want 303", rec.Code)
	}
	// The login form's token, in the query string only: refused.
	l := e.browser("192.0.2.92")
	form := l.get("/admin/login")
	rec = l.do(http.MethodPost, "/admin/login?csrf="+url.QueryEscape(token(t, form.Body.String())), url.Values{"password": {testPassword}})
	if rec.Code != http.StatusForbidden {
		t.Errorf("login token in the query: got status %d, want 403", rec.Code)
	}
	// Nor is the password taken from the query string (it would reach logs).
	form = l.get("/admin/login")
	rec = l.do(http.MethodPost, "/admin/login?password="+url.QueryEscape(testPassword), url.Values{csrfField: {token(t, form.Body.String())}})
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("password in the query: got status %d, want 401", rec.Code)
	}
}

func TestHistoryAndJobsRedactSecrets(t *testing.T) {
	e := newEnv(t, nil)
	const user = "user-secret-4b8e2a6c9d1f"
	raw := `{"type":"identify","userId":"` + user + `","writeKey":"wk-raw","traits":{"api_key":"ak-raw","password":"pw-raw",` +
		`"nested":[{"clientSecret":"cs-raw","Authorization":"Bearer au-raw"}],"token":"tok-identity","identifyToken":"idt-identity","plan":"pro"}}`
	payload := `{"userId":"` + user + `","type":"identify","traits":{"write_key":"wk-job","apiKey":"ak-job","accessToken":"at-job","token":"tok-job","plan":"pro"}}`
	msg := message("secret-1", 0, user, "anon-secret-1", "", nil)
	msg.Raw = json.RawMessage(raw)
	job := jimoJob("out-secret-1", user)
	job.Payload = json.RawMessage(payload)
	msg.Jobs = []mapping.Job{job}
	e.submit(msg)
	p := e.mustProfile("user_id:" + user)

	secrets := []string{"wk-raw", "ak-raw", "pw-raw", "cs-raw", "au-raw", "wk-job", "ak-job", "at-job"}
	kept := []string{"tok-identity", "idt-identity", "tok-job", `"plan":"pro"`, Redacted}
	check := func(t *testing.T, what, body string, kept []string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("%s shows %q, want it redacted", what, s)
			}
		}
		for _, s := range kept {
			if !strings.Contains(body, s) {
				t.Errorf("%s lacks %q", what, s)
			}
		}
	}
	t.Run("history API", func(t *testing.T) {
		status, out := e.api(http.MethodGet, fmt.Sprintf("/api/v1/profiles/%d/history", p.ID), "", "")
		if status != 200 {
			t.Fatalf("got status %d, want 200", status)
		}
		h := out["history"].(map[string]any)
		var bodies []string
		for _, m := range h["messages"].([]any) {
			bodies = append(bodies, m.(map[string]any)["raw"].(string))
		}
		for _, j := range h["jobs"].([]any) {
			bodies = append(bodies, j.(map[string]any)["payload"].(string))
		}
		check(t, "history", strings.Join(bodies, "\n"), kept)
	})
	t.Run("jobs API", func(t *testing.T) {
		status, out := e.api(http.MethodGet, "/api/v1/jobs?state=all", "", "")
		if status != 200 {
			t.Fatalf("got status %d, want 200", status)
		}
		b, _ := json.Marshal(out)
		check(t, "jobs", string(b), []string{"tok-job", Redacted})
	})
	b := e.browser("192.0.2.93").login()
	for _, target := range []string{fmt.Sprintf("/admin/profiles/%d", p.ID), "/admin/jobs?state=all"} {
		t.Run(target, func(t *testing.T) {
			rec := b.get(target)
			if rec.Code != http.StatusOK {
				t.Fatalf("got status %d, want 200", rec.Code)
			}
			check(t, target, rec.Body.String(), []string{"tok-job", Redacted})
		})
	}
}

func TestRedactJSONKeepsPayloadsWithoutSecrets(t *testing.T) {
	for _, raw := range []string{`{"b":1,"a":{"token":"t","identifyToken":"i"}}`, `not json`, `[1,2]`} {
		if got := RedactJSON(raw); got != raw {
			t.Errorf("RedactJSON(%q): got %q, want it unchanged", raw, got)
		}
	}
}

func TestLoginRateZeroMeansNoLimit(t *testing.T) {
	e := newEnvWith(t, nil, func(c *Config) { c.LoginRate = 0 })
	b := e.browser("192.0.2.94")
	for i := 0; i < 3*freeFailures; i++ {
		if rec := b.tryLogin("guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: got status %d, want 401", i+1, rec.Code)
		}
	}
	if rec := b.tryLogin(testPassword); rec.Code != http.StatusSeeOther {
		t.Errorf("right password: got status %d, want 303", rec.Code)
	}
}
