package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/admin"
	"github.com/bridgeworks/bridge/mapping/store"
)

// scrape reads GET /metrics and parses it with the Prometheus text parser.
func (b *testBridge) scrape(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(b.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: got status %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: got Content-Type %q, want text/plain", ct)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// series parses a series written as in the exposition format,
// name{label="value",...}, into its name and labels.
func series(t testing.TB, s string) (string, map[string]string) {
	t.Helper()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(s + " 0\n"))
	if err != nil || len(families) != 1 {
		t.Fatalf("series %s: %v", s, err)
	}
	for name, f := range families {
		labels := map[string]string{}
		for _, l := range f.Metric[0].Label {
			labels[l.GetName()] = l.GetValue()
		}
		return name, labels
	}
	panic("unreachable")
}

// find returns the metric of families with exactly the labels of s (a
// series as series parses it), or nil.
func find(t testing.TB, families map[string]*dto.MetricFamily, s string) *dto.Metric {
	t.Helper()
	name, want := series(t, s)
	f := families[name]
	if f == nil {
		return nil
	}
	for _, m := range f.Metric {
		if len(m.Label) != len(want) {
			continue
		}
		match := true
		for _, l := range m.Label {
			match = match && want[l.GetName()] == l.GetValue()
		}
		if match {
			return m
		}
	}
	return nil
}

// value is the value of a counter, gauge or untyped metric, or a
// histogram's sample count; 0 for nil.
func value(m *dto.Metric) float64 {
	switch {
	case m == nil:
		return 0
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

func TestMetricsScrape(t *testing.T) {
	// Jimo at an address that refuses connections: the identify's job stays in the outbox.
	b := startBridge(t, "", "-jimo-api-key", "k", "-jimo-endpoint", "http://127.0.0.1:1")
	before := b.scrape(t)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "process_open_fds"} {
		if v := value(find(t, before, name)); v <= 0 {
			t.Errorf("%s: got %v, want > 0", name, v)
		}
	}
	for _, reason := range refusalReasons {
		s := `bridge_refusals_total{reason="` + reason + `"}`
		if m := find(t, before, s); m == nil || value(m) != 0 {
			t.Errorf("%s: got %v, want present and 0", s, m)
		}
	}

	status, body := b.post(t, "/v1/identify", []byte(`{"userId":"user-metrics-7c4e1a9b2d","anonymousId":"anon-metrics-1","traits":{"name":"Ada"}}`),
		map[string]string{"Authorization": basicAuth(testWriteKey), "Content-Type": "application/json"})
	if status != http.StatusOK {
		t.Fatalf("identify: got %d, want 200: %s", status, body)
	}
	after := b.scrape(t)
	for _, tt := range []struct {
		series string
		delta  float64
	}{
		{`bridge_messages_stored_total{source="segment.api"}`, 1},
		{`bridge_events_received_total{source="segment.api"}`, 1},
		{`bridge_messages_duplicate_total{source="segment.api"}`, 0},
		{`bridge_http_requests_total{route="/v1/:call",status="200"}`, 1},
		{`bridge_http_request_seconds{route="/v1/:call"}`, 1},
		{`bridge_http_requests_total{route="/metrics",status="200"}`, 1}, // the first scrape
	} {
		if got := value(find(t, after, tt.series)) - value(find(t, before, tt.series)); got != tt.delta {
			t.Errorf("%s: got an increase of %v, want %v", tt.series, got, tt.delta)
		}
	}
	commits, seconds := find(t, after, "bridge_commit_messages"), find(t, after, "bridge_commit_seconds")
	if commits == nil || seconds == nil {
		t.Fatalf("commit histograms missing")
	}
	// Both histograms see every commit, one after the other: a commit the
	// store makes by itself (housekeeping, the outbox) between the two
	// reads of one scrape may be in one and not yet in the other.
	if n, m := int64(commits.Histogram.GetSampleCount()), int64(seconds.Histogram.GetSampleCount()); n < 1 || m < 1 || n-m > 1 || m-n > 1 {
		t.Errorf("commits: got %d in bridge_commit_messages and %d in bridge_commit_seconds, want the same (give or take a commit under way), at least 1", n, m)
	}
	if sum := commits.Histogram.GetSampleSum(); sum < 1 {
		t.Errorf("bridge_commit_messages sum: got %v, want at least 1 message", sum)
	}
	if got := value(find(t, after, `bridge_outbox_backlog{destination="jimo"}`)); got != 1 {
		t.Errorf(`bridge_outbox_backlog{destination="jimo"}: got %v, want 1`, got)
	}
	if m := find(t, after, `bridge_outbox_oldest_job_seconds{destination="jimo"}`); m == nil || value(m) < 0 {
		t.Errorf(`bridge_outbox_oldest_job_seconds{destination="jimo"}: got %v, want present and >= 0`, m)
	}
	if m := find(t, after, `bridge_outbox_dead_jobs{destination="jimo"}`); m == nil || value(m) != 0 {
		t.Errorf(`bridge_outbox_dead_jobs{destination="jimo"}: got %v, want present and 0`, m)
	}
}

// TestOutboxCollectorReadsOnce: the three outbox gauges come from one read
// of the store per scrape.
func TestOutboxCollectorReadsOnce(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	reads := 0
	m := newMetrics()
	m.registerOutbox(func(context.Context) ([]store.Backlog, error) {
		reads++
		return []store.Backlog{
			{Destination: "jimo", Pending: 3, Dead: 1, Oldest: now.Add(-90 * time.Second)},
			{Destination: "segment", Dead: 2},
		}, nil
	}, func() time.Time { return now }, slog.New(slog.DiscardHandler))
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if reads != 1 {
		t.Errorf("got %d reads of the backlog in one scrape, want 1", reads)
	}
	for s, want := range map[string]float64{
		`bridge_outbox_backlog{destination="jimo"}`:               3,
		`bridge_outbox_dead_jobs{destination="jimo"}`:             1,
		`bridge_outbox_oldest_job_seconds{destination="jimo"}`:    90,
		`bridge_outbox_backlog{destination="segment"}`:            0,
		`bridge_outbox_dead_jobs{destination="segment"}`:          2,
		`bridge_outbox_oldest_job_seconds{destination="segment"}`: 0,
	} {
		byName := map[string]*dto.MetricFamily{}
		for _, f := range families {
			byName[f.GetName()] = f
		}
		if m := find(t, byName, s); m == nil || value(m) != want {
			t.Errorf("%s: got %v, want %v", s, m, want)
		}
	}

	// A failed read leaves the gauges out and the rest of the scrape intact.
	failing := newMetrics()
	failing.registerOutbox(func(context.Context) ([]store.Backlog, error) { return nil, errors.New("disk on fire") },
		time.Now, slog.New(slog.DiscardHandler))
	families, err = failing.registry.Gather()
	if err != nil {
		t.Fatalf("gather with a failing backlog read: %v", err)
	}
	if len(families) == 0 {
		t.Errorf("gather with a failing backlog read: no families")
	}
}

func TestRefusalReason(t *testing.T) {
	for _, tt := range []struct {
		route        string
		status       int
		sharedSecret bool
		want         string
	}{
		{"/v1/:call", 401, false, refusedWriteKey},
		{"/v1/:call", 429, false, refusedRateLimit},
		{"/v1/:call", 400, false, ""},
		{"/v1/:call", 200, false, ""},
		{"/segment/webhook", 401, false, refusedWriteKey},
		{"/segment/webhook", 401, true, refusedSignature},
		{"/jimo/session", 401, false, refusedSignature},
		{"/jimo/session", 403, false, refusedCORS},
		{"/jimo/session", 429, false, refusedRateLimit},
		{"/jimo/webhook", 401, false, refusedSignature},
		{"/admin/login", 401, false, refusedAdminLogin},
		{"/admin/login", 403, false, refusedCSRF},
		{"/admin/login", 429, false, refusedRateLimit},
		{"/admin/jobs/retry", 403, false, refusedCSRF},
		{"/api/v1/warnings", 401, false, refusedAPIPassword},
		{"/api/v1/warnings", 429, false, refusedRateLimit},
		{"unmatched", 404, false, ""},
		{"/healthz", 401, false, refusedUnauthorized},
		{"/healthz", 403, false, refusedForbidden},
	} {
		t.Run(fmt.Sprintf("%s %d %v", tt.route, tt.status, tt.sharedSecret), func(t *testing.T) {
			if got := refusalReason(tt.route, tt.status, tt.sharedSecret); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// refusalLine is one "request refused" log line.
type refusalLine struct {
	reason, route, line string
	suppressed          int
}

var (
	refusalKey = regexp.MustCompile(`\b(reason|route|suppressed)=("[^"]*"|\S+)`)
	anyRefusal = regexp.MustCompile(`msg="[^"\n]*refused`)
)

// refusalLines finds the refusal lines in the text log out.
func refusalLines(t testing.TB, out string) []refusalLine {
	t.Helper()
	var lines []refusalLine
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, `msg="request refused"`) {
			continue
		}
		l := refusalLine{line: line, suppressed: -1}
		for _, kv := range refusalKey.FindAllStringSubmatch(line, -1) {
			v := strings.Trim(kv[2], `"`)
			switch kv[1] {
			case "reason":
				l.reason = v
			case "route":
				l.route = v
			case "suppressed":
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("suppressed in %q: %v", line, err)
				}
				l.suppressed = n
			}
		}
		if l.reason == "" || l.route == "" || l.suppressed < 0 {
			t.Fatalf("refusal line lacks reason, route or suppressed: %q", line)
		}
		lines = append(lines, l)
	}
	return lines
}

// TestRefusalsCountedAndLogged: each kind of refused request increments
// bridge_refusals_total for its reason and logs one line saying so, without
// the credential it carried or the query string.
func TestRefusalsCountedAndLogged(t *testing.T) {
	const leaked = "leaked-credential-4f2a"
	b := startBridge(t, "", "-allowed-origins", "https://app.example.com", "-jimo-session-rate", "1")
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(t *testing.T, method, path, body string, headers map[string]string) int {
		req, err := http.NewRequest(method, b.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		name, reason, route string
		wantStatus          int
		refuse              func(t *testing.T) int // makes refused requests; returns how many
	}{
		{"wrong write key", refusedWriteKey, "/v1/:call", 401, func(t *testing.T) int {
			send(t, http.MethodPost, "/v1/identify?writeKey="+leaked, `{"userId":"user-refused-1"}`,
				map[string]string{"Authorization": basicAuth(leaked), "Content-Type": "application/json"})
			return 1
		}},
		{"wrong webhook secret", refusedSignature, "/jimo/webhook", 401, func(t *testing.T) int {
			send(t, http.MethodPost, "/jimo/webhook?secret="+leaked, `{}`, map[string]string{"Content-Type": "application/json"})
			return 1
		}},
		{"origin not allowed", refusedCORS, "/jimo/session", 403, func(t *testing.T) int {
			send(t, http.MethodPost, "/jimo/session", `{}`, map[string]string{"Origin": "https://evil.example.com"})
			return 1
		}},
		{"wrong API password", refusedAPIPassword, "/api/v1/warnings", 401, func(t *testing.T) int {
			send(t, http.MethodGet, "/api/v1/warnings", "", map[string]string{"Authorization": "Bearer " + leaked})
			return 1
		}},
		{"wrong login password", refusedAdminLogin, "/admin/login", 401, func(t *testing.T) int {
			resp, err := browser.Get(b.URL + "/admin/login")
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
			if m == nil {
				t.Fatalf("login form without its csrf field:\n%s", page)
			}
			form := url.Values{"csrf": {string(m[1])}, "password": {leaked}}
			if got := send(t, http.MethodPost, "/admin/login", form.Encode(),
				map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); got != http.StatusUnauthorized {
				t.Fatalf("wrong login password: got %d, want 401", got)
			}
			return 1
		}},
		{"expired form", refusedCSRF, "/admin/login", 403, func(t *testing.T) int {
			send(t, http.MethodPost, "/admin/login", "password="+leaked, map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
			return 1
		}},
		{"session rate", refusedRateLimit, "/jimo/session", 429, func(t *testing.T) int {
			limited := 0
			for i := 0; i < 100 && limited == 0; i++ {
				if send(t, http.MethodPost, "/jimo/session", `{}`, nil) == http.StatusTooManyRequests {
					limited++
				}
			}
			return limited
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			series := `bridge_refusals_total{reason="` + tt.reason + `"}`
			before := value(find(t, b.scrape(t), series))
			linesBefore := len(refusalLines(t, b.stdout.String()))
			anyBefore := len(anyRefusal.FindAllString(b.stdout.String(), -1))
			n := tt.refuse(t)
			if n == 0 {
				t.Fatalf("no request was refused")
			}
			if got := value(find(t, b.scrape(t), series)) - before; got != float64(n) {
				t.Errorf("%s: got an increase of %v, want %d", series, got, n)
			}
			// Each case has a reason of its own, so its limiter has a token.
			lines := refusalLines(t, b.stdout.String())[linesBefore:]
			if len(lines) != 1 || lines[0].reason != tt.reason || lines[0].route != tt.route ||
				!strings.Contains(lines[0].line, "status="+strconv.Itoa(tt.wantStatus)) {
				t.Errorf("got log lines %+v, want one with reason=%s route=%s status=%d", lines, tt.reason, tt.route, tt.wantStatus)
			}
			// No handler logs the refusal a second time, unlimited.
			if got := anyRefusal.FindAllString(b.stdout.String(), -1); len(got) != anyBefore+1 {
				t.Errorf("got %d log lines about refusals, want 1:\n%s", len(got)-anyBefore, b.stdout)
			}
		})
	}
	if out := b.stdout.String(); strings.Contains(out, leaked) {
		t.Errorf("the log holds a credential a refused request carried:\n%s", out)
	}
}

// TestRefusalFloodLogsBoundedLines: a flood of bad requests is counted
// exactly but logged at most once a second, each line saying how many it
// stands for.
func TestRefusalFloodLogsBoundedLines(t *testing.T) {
	const flood = 300
	b := startBridge(t, "")
	headers := map[string]string{"Authorization": basicAuth("not-a-write-key"), "Content-Type": "application/json"}
	start := time.Now()
	for i := 0; i < flood; i++ {
		if status, body := b.post(t, "/v1/identify", []byte(`{"userId":"user-flood"}`), headers); status != http.StatusUnauthorized {
			t.Fatalf("request %d: got %d, want 401: %s", i, status, body)
		}
	}
	elapsed := time.Since(start)
	const series = `bridge_refusals_total{reason="write_key"}`
	if got := b.metric(t, series); got != flood {
		t.Errorf("%s: got %v, want %d", series, got, flood)
	}
	lines := refusalLines(t, b.stdout.String())
	if max := 1 + int(elapsed/time.Second) + 1; len(lines) < 1 || len(lines) > max {
		t.Errorf("got %d refusal lines for %d refusals in %v, want 1 to %d", len(lines), flood, elapsed, max)
	}

	// Once the limiter has a token again, the next refusal is logged with
	// the number left unlogged: together the lines account for every refusal.
	time.Sleep(1100 * time.Millisecond)
	if status, _ := b.post(t, "/v1/identify", []byte(`{"userId":"user-flood"}`), headers); status != http.StatusUnauthorized {
		t.Fatalf("last request: got %d, want 401", status)
	}
	lines = refusalLines(t, b.stdout.String())
	total := 0
	for _, l := range lines {
		if l.reason != refusedWriteKey || l.route != "/v1/:call" {
			t.Errorf("unexpected refusal line %q", l.line)
		}
		total += 1 + l.suppressed
	}
	t.Logf("%d refusals (%d in a flood of %v) logged in %d lines", flood+1, flood, elapsed, len(lines))
	if total != flood+1 {
		t.Errorf("lines plus their suppressed counts: got %d, want %d (%d lines)", total, flood+1, len(lines))
	}
}

// TestRefusalLogInterval: one line per reason per interval, each carrying
// the refusals it left unlogged; reasons do not share a budget.
func TestRefusalLogInterval(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var out strings.Builder
	m := newMetrics()
	r := newRefusals(m, slog.New(slog.NewTextHandler(&out, nil)), func() time.Time { return now }, time.Second, false)
	e := echo.New()
	refuse := func(route string, status int, n int) {
		for i := 0; i < n; i++ {
			c := e.NewContext(httptest.NewRequest(http.MethodPost, "/x?secret=s3cr3t", nil), httptest.NewRecorder())
			r.observe(c, route, status, mapping.Errorf(mapping.CodeUnauthorized, "no write key"))
		}
	}
	refuse("/v1/:call", 401, 50)
	refuse("/jimo/session", 403, 2)
	now = now.Add(999 * time.Millisecond)
	refuse("/v1/:call", 401, 1)
	now = now.Add(time.Millisecond)
	refuse("/v1/:call", 401, 1)

	lines := refusalLines(t, out.String())
	want := []refusalLine{
		{reason: refusedWriteKey, route: "/v1/:call", suppressed: 0},
		{reason: refusedCORS, route: "/jimo/session", suppressed: 0},
		{reason: refusedWriteKey, route: "/v1/:call", suppressed: 50},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		if l := lines[i]; l.reason != w.reason || l.route != w.route || l.suppressed != w.suppressed {
			t.Errorf("line %d: got %q, want reason=%s route=%s suppressed=%d", i, l.line, w.reason, w.route, w.suppressed)
		}
	}
	if !strings.Contains(lines[0].line, `detail="no write key"`) {
		t.Errorf("line 0 lacks the error's message: %q", lines[0].line)
	}
	if strings.Contains(out.String(), "s3cr3t") {
		t.Errorf("a query string reached the log:\n%s", out.String())
	}
	for reason, want := range map[string]float64{refusedWriteKey: 52, refusedCORS: 2, refusedSignature: 0} {
		if got, _ := current(m.refusals.WithLabelValues(reason)); got != want {
			t.Errorf("refusals{reason=%q}: got %v, want %v", reason, got, want)
		}
	}
}

// TestAdminCounters: the admin's counters are read from the metrics they
// summarise: write key and signature refusals, and values the blocklist refused.
func TestAdminCounters(t *testing.T) {
	m := newMetrics()
	m.refusals.WithLabelValues(refusedWriteKey).Add(2)
	m.refusals.WithLabelValues(refusedSignature).Inc()
	m.refusals.WithLabelValues(refusedCORS).Add(7)
	m.rulesFired.WithLabelValues(ruleOf("user_id refused: " + mapping.ReasonBlocked)).Add(4)
	m.rulesFired.WithLabelValues(ruleOf("anonymous_id refused: " + mapping.ReasonTooLong)).Add(5)
	want := admin.Counters{SignatureFailures: 3, BlockedValues: 4}
	if got := m.adminCounters(); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestStoreMetrics: the store's figures are on /metrics: the log's bound as
// configured, and no reason to be unable to store.
func TestStoreMetrics(t *testing.T) {
	b := startBridge(t, "", "-wal-limit", "8MiB")
	if got := b.metric(t, `bridge_wal_bytes{state="limit"}`); got != 8<<20 {
		t.Errorf("bridge_wal_bytes{state=limit}: got %v, want %d", got, 8<<20)
	}
	if got := b.metric(t, `bridge_wal_bytes{state="peak"}`); got < b.metric(t, `bridge_wal_bytes{state="current"}`) {
		t.Errorf("bridge_wal_bytes: peak %v below current", got)
	}
	if got := b.metric(t, `bridge_store_unavailable_seconds{reason="disk_full"}`); got != 0 {
		t.Errorf("bridge_store_unavailable_seconds{reason=disk_full}: got %v, want 0", got)
	}
}
