package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

// api calls the JSON API and decodes the answer.
func (e *env) api(method, target, contentType, body string) (int, map[string]any) {
	e.t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	e.echo.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		e.t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, target, err, rec.Body)
	}
	return rec.Code, out
}

const jsonType = "application/json"

func TestAPIReads(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	warned := message("m5", 4*time.Minute, "1234567", "anon-w-0b1e", "", nil)
	warned.UserIDWarning = "guessable user ID"
	e.submit(warned)
	pa := e.mustProfile("user_id:" + alice)
	tests := []struct {
		name       string
		target     string
		wantStatus int
		check      func(t *testing.T, body map[string]any)
	}{
		{"search prefix", "/api/v1/search?q=anon-a&prefix=1", 200, func(t *testing.T, body map[string]any) {
			hits := body["hits"].([]any)
			if len(hits) != 2 || hits[0].(map[string]any)["value"] != anonA1 || hits[0].(map[string]any)["userId"] != alice {
				t.Errorf("got hits %v, want anon-a1 and anon-a2 of alice", hits)
			}
		}},
		{"search exact", "/api/v1/search?q=user_id:" + bob, 200, func(t *testing.T, body map[string]any) {
			if hits := body["hits"].([]any); len(hits) != 1 {
				t.Errorf("got %d hits, want 1", len(hits))
			}
		}},
		{"search page size", "/api/v1/search?q=anon&prefix=1&limit=1", 200, func(t *testing.T, body map[string]any) {
			if hits := body["hits"].([]any); len(hits) != 1 || body["next"] != "anonymous_id:"+anonA1 {
				t.Errorf("got %d hits and next %v, want 1 and a cursor", len(hits), body["next"])
			}
		}},
		{"search nothing found", "/api/v1/search?q=user_id:nobody", 200, func(t *testing.T, body map[string]any) {
			if hits := body["hits"].([]any); len(hits) != 0 {
				t.Errorf("got %d hits, want 0", len(hits))
			}
		}},
		{"lookup", "/api/v1/profiles?identifier=" + url.QueryEscape("anonymous_id:"+anonA2), 200, func(t *testing.T, body map[string]any) {
			p := body["profile"].(map[string]any)
			if p["userId"] != alice || p["id"] != float64(pa.ID) {
				t.Errorf("got profile %v, want alice's (ID %d)", p, pa.ID)
			}
		}},
		{"lookup unknown", "/api/v1/profiles?identifier=user_id:nobody-4a1c", 404, wantCode("not_found")},
		{"lookup without identifier", "/api/v1/profiles", 400, wantCode("invalid")},
		{"lookup malformed identifier", "/api/v1/profiles?identifier=" + alice, 400, wantCode("invalid")},
		{"warnings", "/api/v1/warnings", 200, func(t *testing.T, body map[string]any) {
			ws := body["warnings"].([]any)
			if len(ws) != 1 {
				t.Fatalf("got warnings %v, want the one guessable user ID", ws)
			}
			w := ws[0].(map[string]any)
			if w["kind"] != "user_id" || w["value"] != "1234567" || w["reason"] != "guessable user ID" {
				t.Errorf("got warning %v, want user_id:1234567 with its reason", w)
			}
		}},
		{"search without q", "/api/v1/search", 400, wantCode("invalid")},
		{"search bad limit", "/api/v1/search?q=x&limit=0", 400, wantCode("invalid")},
		{"profile", fmt.Sprintf("/api/v1/profiles/%d", pa.ID), 200, func(t *testing.T, body map[string]any) {
			if got := body["profile"].(map[string]any)["userId"]; got != alice {
				t.Errorf("got user ID %v, want %s", got, alice)
			}
		}},
		{"profile unknown", "/api/v1/profiles/999999", 404, wantCode("not_found")},
		{"profile malformed", "/api/v1/profiles/abc", 400, wantCode("invalid")},
		{"history", fmt.Sprintf("/api/v1/profiles/%d/history", pa.ID), 200, func(t *testing.T, body map[string]any) {
			h := body["history"].(map[string]any)
			if len(h["links"].([]any)) != 3 || len(h["messages"].([]any)) != 3 || len(h["jobs"].([]any)) != 1 || len(h["traits"].([]any)) != 2 {
				t.Errorf("got history %v, want 3 links, 3 messages, 1 job, 2 traits", h)
			}
		}},
		{"history unknown", "/api/v1/profiles/999999/history", 404, wantCode("not_found")},
		{"conflicts", "/api/v1/conflicts", 200, func(t *testing.T, body map[string]any) {
			cs := body["conflicts"].([]any)
			if len(cs) != 1 || cs[0].(map[string]any)["decision"] != "conflict" || body["next"] != "" {
				t.Errorf("got conflicts %v next %v, want one conflict and no next page", cs, body["next"])
			}
		}},
		{"conflicts bad cursor", "/api/v1/conflicts?after=x", 400, wantCode("invalid")},
		{"dead jobs", "/api/v1/jobs", 200, func(t *testing.T, body map[string]any) {
			if jobs := body["jobs"].([]any); len(jobs) != 2 {
				t.Errorf("got %d dead jobs, want 2", len(jobs))
			}
		}},
		{"jobs bad state", "/api/v1/jobs?state=lost", 400, wantCode("invalid")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.api(http.MethodGet, tt.target, "", "")
			if status != tt.wantStatus {
				t.Fatalf("got status %d, want %d: %v", status, tt.wantStatus, body)
			}
			tt.check(t, body)
		})
	}
}

func wantCode(code string) func(t *testing.T, body map[string]any) {
	return func(t *testing.T, body map[string]any) {
		t.Helper()
		if body["code"] != code || body["message"] == "" {
			t.Errorf("got %v, want code %q with a message", body, code)
		}
	}
}

func TestAPIRepairs(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	conflict := e.link("user_id:"+bob, "anonymous_id:"+anonA1)
	applied := e.link("user_id:"+alice, "anonymous_id:"+anonA2)
	dead, _ := e.store.Jobs(context.Background(), store.JobDead, 10)
	resolve := fmt.Sprintf("/api/v1/conflicts/%d/resolve", conflict.ID)
	unmerge := fmt.Sprintf("/api/v1/links/%d/unmerge", applied.ID)

	// In order: refusals first, then each repair, then what the repair leaves behind.
	steps := []struct {
		name, method, target, ctype, body string
		wantStatus                        int
		check                             func(t *testing.T, body map[string]any)
	}{
		{"resolve as a form", "POST", resolve, "application/x-www-form-urlencoded", "action=dismiss&reason=x", 400, wantCode("invalid")},
		{"resolve without a body", "POST", resolve, jsonType, "", 400, wantCode("invalid")},
		{"resolve with broken JSON", "POST", resolve, jsonType, `{"action":`, 400, wantCode("invalid")},
		{"resolve with an unknown field", "POST", resolve, jsonType, `{"action":"dismiss","reason":"x","operator":"me"}`, 400, wantCode("invalid")},
		{"resolve with a bad action", "POST", resolve, jsonType, `{"action":"merge","reason":"x"}`, 400, wantCode("invalid")},
		{"resolve without a reason", "POST", resolve, jsonType, `{"action":"dismiss"}`, 400, wantCode("invalid")},
		{"resolve an unknown link", "POST", "/api/v1/conflicts/999999/resolve", jsonType, `{"action":"dismiss","reason":"x"}`, 404, wantCode("not_found")},
		{"resolve", "POST", resolve, jsonType, `{"action":"dismiss","reason":"not the same person"}`, 200, func(t *testing.T, body map[string]any) {
			if body["action"] != "dismiss" {
				t.Errorf("got %v, want action dismiss", body)
			}
			l := e.link("user_id:"+bob, "anonymous_id:"+anonA1)
			last := l.Log[len(l.Log)-1]
			if l.Decision != mapping.DecisionDismissed || last.Actor != OperatorAPI || last.Reason != "not the same person" {
				t.Errorf("got decision %s and last log %+v, want dismissed by %q with the reason", l.Decision, last, OperatorAPI)
			}
		}},
		{"resolve again", "POST", resolve, jsonType, `{"action":"dismiss","reason":"x"}`, 409, wantCode("conflict")},
		{"unmerge without a reason", "POST", unmerge, jsonType, `{}`, 400, wantCode("invalid")},
		{"unmerge", "POST", unmerge, "application/json; charset=utf-8", `{"reason":"shared computer"}`, 200, func(t *testing.T, body map[string]any) {
			if p := e.mustProfile("anonymous_id:" + anonA2); p.UserID != "" {
				t.Errorf("after unmerge: got anon-a2 with user %q, want it alone", p.UserID)
			}
		}},
		{"unmerge again", "POST", unmerge, jsonType, `{"reason":"x"}`, 409, wantCode("conflict")},
		{"retry nothing", "POST", "/api/v1/jobs/retry", jsonType, `{}`, 400, wantCode("invalid")},
		{"retry both ways", "POST", "/api/v1/jobs/retry", jsonType, `{"ids":[1],"all":true}`, 400, wantCode("invalid")},
		{"retry an unknown job", "POST", "/api/v1/jobs/retry", jsonType, `{"ids":[999999]}`, 404, wantCode("not_found")},
		{"retry one", "POST", "/api/v1/jobs/retry", jsonType, fmt.Sprintf(`{"ids":[%d]}`, dead[0].ID), 200, wantRetried(1)},
		{"retry all", "POST", "/api/v1/jobs/retry", jsonType, `{"all":true}`, 200, wantRetried(1)},
		{"retry all again", "POST", "/api/v1/jobs/retry", jsonType, `{"all":true}`, 200, wantRetried(0)},
		{"delete without identifier", "POST", "/api/v1/profiles/delete", jsonType, `{"reason":"x"}`, 400, wantCode("invalid")},
		{"delete a malformed identifier", "POST", "/api/v1/profiles/delete", jsonType, `{"identifier":"bob","reason":"x"}`, 400, wantCode("invalid")},
		{"delete without a reason", "POST", "/api/v1/profiles/delete", jsonType, `{"identifier":"user_id:` + bob + `"}`, 400, wantCode("invalid")},
		{"delete", "POST", "/api/v1/profiles/delete", jsonType, `{"identifier":"anonymous_id:` + anonB1 + `","reason":"privacy request 9"}`, 200, func(t *testing.T, body map[string]any) {
			if body["deleted"] != float64(2) || len(body["identifiers"].([]any)) != 2 {
				t.Errorf("got %v, want 2 identifiers deleted", body)
			}
			if _, err := e.profileOf("user_id:" + bob); mapping.ErrorCode(err) != mapping.CodeNotFound {
				t.Errorf("bob after delete: got %v, want not found", err)
			}
		}},
		{"delete again", "POST", "/api/v1/profiles/delete", jsonType, `{"identifier":"user_id:` + bob + `","reason":"x"}`, 404, wantCode("not_found")},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			status, body := e.api(st.method, st.target, st.ctype, st.body)
			if status != st.wantStatus {
				t.Fatalf("got status %d, want %d: %v", status, st.wantStatus, body)
			}
			st.check(t, body)
		})
	}
}

func wantRetried(n int) func(t *testing.T, body map[string]any) {
	return func(t *testing.T, body map[string]any) {
		t.Helper()
		if body["retried"] != float64(n) {
			t.Errorf("got %v, want retried %d", body, n)
		}
	}
}

// TestAPIPasswordLockout: behind RequireAPI, wrong passwords lock the client
// out with 429 rate_limited and a Retry-After in whole seconds, the header
// set by the server's error handler from the error's RetryAfter.
func TestAPIPasswordLockout(t *testing.T) {
	e := newEnv(t, nil)
	e.admin.RegisterAPI(e.echo.Group("/locked/api/v1", e.admin.RequireAPI()))
	call := func(password string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/locked/api/v1/warnings", nil)
		req.RemoteAddr = "198.51.100.9:40000"
		req.Header.Set("Authorization", "Bearer "+password)
		rec := httptest.NewRecorder()
		e.echo.ServeHTTP(rec, req)
		return rec
	}
	if rec := call(testPassword); rec.Code != http.StatusOK {
		t.Fatalf("right password: got %d, want 200: %s", rec.Code, rec.Body)
	}
	for i := 1; i < freeFailures; i++ {
		if rec := call("guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: got %d, want 401: %s", i, rec.Code, rec.Body)
		}
	}
	rec := call("guess")
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answer %s: %v", rec.Body, err)
	}
	if rec.Code != http.StatusTooManyRequests || body["code"] != "rate_limited" || rec.Header().Get("Retry-After") != "30" ||
		!strings.Contains(body["message"], "retry after 30 s") {
		t.Errorf("wrong password %d: got %d %v with Retry-After %q, want 429 rate_limited with Retry-After 30",
			freeFailures, rec.Code, body, rec.Header().Get("Retry-After"))
	}
	if rec := call(testPassword); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "30" {
		t.Errorf("right password while locked: got %d with Retry-After %q, want 429 with 30", rec.Code, rec.Header().Get("Retry-After"))
	}
}
