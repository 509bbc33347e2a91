package admin

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// TestUserTextIsEscaped puts HTML, scripts, quotes and very long strings in
// every place a payload or an operator can reach, and checks that every page
// shows them as text.
func TestUserTextIsEscaped(t *testing.T) {
	e := newEnv(t, nil)
	const (
		evilUser  = `<script>alert("uid")</script>`
		evilUser2 = `<script>alert('uid2')</script>`
		evilAnon  = `"><img src=x onerror=alert(1)>`
		evilEvent = `<script>alert('event')</script>`
	)
	long := strings.Repeat("L", 10000)
	traits := map[string]any{
		`<script>alert('key')</script>`: `<script>alert('value')</script>`,
		"quote":                         `" onmouseover="alert(1)`,
		"nested":                        map[string]any{"html": "<b>bold</b>", "list": []any{"<i>x</i>"}},
		"long":                          long,
	}
	m := message(`<script>alert('msgid')</script>`, 0, evilUser, evilAnon, "", traits, jimoJob("out-evil", evilUser))
	m.UserIDWarning = `<script>alert('warn')</script> too guessable`
	e.submit(m,
		message("evil-2", time.Minute, evilUser, "anon-evil-2", evilEvent, map[string]any{"long_key_" + long[:300]: "v"}),
		message("evil-3", 2*time.Minute, evilUser2, evilAnon, "", nil), // a conflict between two HTML user IDs
	)
	e.killJobsWith(1, `<script>alert('lasterror')</script> jimo said no`)
	b := e.browser("192.0.2.70").login()
	p := e.mustProfile("user_id:" + evilUser)
	l := e.link("user_id:"+evilUser, "anonymous_id:anon-evil-2")
	rec := b.post("/admin/links/"+itoa(l.ID)+"/unmerge", url.Values{"reason": {`<script>alert('reason')</script>`}, "back": {fmt.Sprintf("/admin/profiles/%d", p.ID)},
		"a": {l.A.String()}, "b": {l.B.String()}})
	flashPage := b.follow(rec).Body.String()

	pages := map[string]string{"profile after unmerge (with flash)": flashPage}
	for name, target := range map[string]string{
		"profile":             fmt.Sprintf("/admin/profiles/%d", p.ID),
		"search":              "/admin/search?q=" + url.QueryEscape(evilUser),
		"search prefix":       "/admin/search?prefix=1&q=" + url.QueryEscape("user_id:<"),
		"search echo":         "/admin/search?q=" + url.QueryEscape(`<script>alert("q")</script>`),
		"conflicts":           "/admin/conflicts",
		"jobs":                "/admin/jobs",
		"warnings":            "/admin/warnings",
		"delete confirmation": "/admin/delete?identifier=" + url.QueryEscape("user_id:"+evilUser),
		"not found":           "/admin/profile?identifier=" + url.QueryEscape(`user_id:<script>alert("404")</script>`),
	} {
		pages[name] = b.get(target).Body.String()
	}
	anon := e.browser("192.0.2.71")
	pages["login with a hostile next"] = anon.get("/admin/login?next=" + url.QueryEscape(`/admin/"><script>alert(1)</script>`)).Body.String()
	pages["login error with a hostile next"] = anon.post("/admin/login", url.Values{csrfField: {token(t, pages["login with a hostile next"])},
		"password": {`<script>alert("pw")</script>`}, "next": {`/admin/"><script>alert(1)</script>`}}).Body.String()
	for name, body := range pages {
		t.Run(name, func(t *testing.T) {
			mustNotContain(t, name, body, "<script>", "<img src=x", `" onmouseover="`, "<b>bold</b>", "<i>x</i>", "onerror=alert(1)>")
			if strings.HasPrefix(name, "login") {
				mustContain(t, name, body, `name="next" value="/admin/"`)
				return
			}
			if !strings.Contains(body, "&lt;script&gt;alert(") {
				t.Errorf("%s: got no escaped <script>, want the payload shown as text", name)
			}
		})
	}
	profile := pages["profile"]
	mustContain(t, "profile", profile,
		`&lt;script&gt;alert(&#34;uid&#34;)&lt;/script&gt;`,
		`&#34;&gt;&lt;img src=x onerror=alert(1)&gt;`,
		`&lt;script&gt;alert(&#39;value&#39;)&lt;/script&gt;`,
		`&#34; onmouseover=&#34;alert(1)`,
		`&lt;b&gt;bold&lt;/b&gt;`,
		`&lt;script&gt;alert(&#39;event&#39;)&lt;/script&gt;`,
		`&lt;script&gt;alert(&#39;lasterror&#39;)&lt;/script&gt;`,
		`&lt;script&gt;alert(&#39;reason&#39;)&lt;/script&gt;`,
		`&lt;script&gt;alert(&#39;warn&#39;)&lt;/script&gt; too guessable`,
		// A long value is inside a scrolling, wrapping block.
		`<div class="clip">`+long+`</div>`,
	)
	mustContain(t, "search echo", pages["search echo"], `value="&lt;script&gt;alert(&#34;q&#34;)&lt;/script&gt;"`)
	mustContain(t, "warnings", pages["warnings"], `&lt;script&gt;alert(&#39;warn&#39;)&lt;/script&gt;`)
	mustContain(t, "conflicts", pages["conflicts"], `&lt;script&gt;alert(&#39;uid2&#39;)&lt;/script&gt;`)
	if got := e.link("user_id:"+evilUser, "anonymous_id:anon-evil-2"); got.Decision != mapping.DecisionRetracted {
		t.Errorf("got decision %s after the unmerge, want retracted", got.Decision)
	}
}

func TestRawMessagesHideSecrets(t *testing.T) {
	tests := []struct {
		name, raw string
		want      string
		unwanted  string
	}{
		{"write key", `{"writeKey":"wk_live_123","type":"identify"}`, `"writeKey": "[redacted]"`, "wk_live_123"},
		{"nested signature", `{"context":{"Signature":"abc123"}}`, `"Signature": "[redacted]"`, "abc123"},
		{"in an array", `[{"password":"hunter2"}]`, `"password": "[redacted]"`, "hunter2"},
		{"not JSON", `not json <b>`, `not json <b>`, ""},
		{"numbers keep their form", `{"n":12345678901234567890}`, `"n": 12345678901234567890`, "e+"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := showRaw(tt.raw).Text
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
			if tt.unwanted != "" && strings.Contains(got, tt.unwanted) {
				t.Errorf("got %q, want no %q", got, tt.unwanted)
			}
		})
	}
}
