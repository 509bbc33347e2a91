package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/jimo/jimotest"
	"github.com/bridgeworks/bridge/mapping/store"
)

// TestDeliveryAfterFaults: a transient failure is retried until delivered
// once; a permanent one leaves a dead job with its error, which the
// operator's `bridge outbox` commands list and retry.
func TestDeliveryAfterFaults(t *testing.T) {
	fakeJimo := jimotest.NewServer(t, jimoKey)
	b := startBridge(t, "", "-jimo-api-key", jimoKey, "-jimo-endpoint", fakeJimo.URL)
	identify := func(user string) {
		client := newClient(t, b, nil)
		must(t, client.Enqueue(analytics.Identify{UserId: user, AnonymousId: "anon-" + user}))
		must(t, client.Close())
	}

	fakeJimo.FailWith(500, 2)
	identify("user-flaky-3e8a1c5d7f92")
	if _, err := fakeJimo.WaitFor(1, deliveryDeadline); err != nil {
		t.Fatal(err)
	}
	if got := fakeJimo.Attempts(); got != 3 {
		t.Errorf("got %d attempts, want 3 (two 500s, then delivered)", got)
	}

	fakeJimo.FailWith(400, 1)
	identify("user-refused-9d2b4f6a8c13")
	outbox := func(args ...string) string {
		var out bytes.Buffer
		if err := run(context.Background(), append([]string{"outbox"}, append(args, "-db", b.DB)...), func(string) string { return "" }, &out); err != nil {
			t.Fatalf("bridge outbox %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	var listing string
	deadline := time.Now().Add(deliveryDeadline)
	for !strings.Contains(listing, "dead") {
		if time.Now().After(deadline) {
			t.Fatalf("no dead job after a 400:\n%s", listing)
		}
		time.Sleep(100 * time.Millisecond)
		listing = outbox("list")
	}
	if !strings.Contains(listing, "permanent") || !strings.Contains(listing, "400") {
		t.Errorf("dead job listing lacks the error:\n%s", listing)
	}
	if got := outbox("retry", "-all"); !strings.Contains(got, "1 job(s)") {
		t.Errorf("retry: got %q, want 1 job", got)
	}
	reqs, err := fakeJimo.WaitFor(2, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range reqs {
		seen[r.Event.UserID]++
	}
	if fmt.Sprint(seen) != "map[user-flaky-3e8a1c5d7f92:1 user-refused-9d2b4f6a8c13:1]" {
		t.Errorf("deliveries: got %v, want each user exactly once", seen)
	}
	if got := outbox("list"); strings.Contains(got, "dead") {
		t.Errorf("dead jobs left after the retry:\n%s", got)
	}
}

// apiGet reads an admin API path as JSON into out.
func (b *testBridge) apiGet(t *testing.T, path string, out any) {
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

// Delivered and dead jobs have no runAt in /api/v1/jobs (they used to
// report 1754-08-30T22:43:41Z, a zero time overflowed).
func TestJobsAPIRunAt(t *testing.T) {
	fakeJimo := jimotest.NewServer(t, jimoKey)
	b := startBridge(t, "", "-jimo-api-key", jimoKey, "-jimo-endpoint", fakeJimo.URL)
	fakeJimo.FailWith(400, 1)
	client := newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Identify{UserId: "user-refused-5b1d7e3a9c24", AnonymousId: "anon-refused"}))
	must(t, client.Close())
	if _, err := fakeJimo.WaitFor(0, time.Second); err != nil {
		t.Fatal(err)
	}
	client = newClient(t, b, nil)
	must(t, client.Enqueue(analytics.Identify{UserId: "user-taken-8e2c4a6f1b37", AnonymousId: "anon-taken"}))
	must(t, client.Close())
	if _, err := fakeJimo.WaitFor(1, deliveryDeadline); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Jobs []map[string]any `json:"jobs"`
	}
	for deadline := time.Now().Add(deliveryDeadline); ; time.Sleep(50 * time.Millisecond) {
		out.Jobs = nil // a reused map would keep the keys of an earlier answer
		b.apiGet(t, "/api/v1/jobs?state=all", &out)
		states := map[string]int{}
		for _, j := range out.Jobs {
			states[fmt.Sprint(j["state"])]++
		}
		if states["done"] == 1 && states["dead"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs: got %v, want one done and one dead", out.Jobs)
		}
	}
	for _, j := range out.Jobs {
		if runAt, ok := j["runAt"]; ok {
			t.Errorf("%v job: got runAt %v, want none", j["state"], runAt)
		}
	}
}

// A payload older than BRIDGE_KEEP_MESSAGES is expired when the bridge
// starts (and every hour); the history API and the profile page say so,
// and the profile stays.
func TestPayloadExpiryShown(t *testing.T) {
	first := startBridge(t, "")
	client := newClient(t, first, nil)
	must(t, client.Enqueue(analytics.Identify{UserId: "user-expiring-4f2a8c6e1d93", AnonymousId: "anon-expiring",
		Traits: analytics.NewTraits().Set("plan", "pro-secret-plan")}))
	must(t, client.Close())
	if _, ok := first.profile(t, "user_id:user-expiring-4f2a8c6e1d93"); !ok {
		t.Fatal("profile not stored")
	}
	first.stop(t)

	b := startBridge(t, first.DB, "-keep-messages", "1ms")
	p, ok := b.profile(t, "user_id:user-expiring-4f2a8c6e1d93")
	if !ok {
		t.Fatal("profile gone after its payload expired")
	}
	var out struct {
		History store.History `json:"history"`
	}
	h := &out.History
	for deadline := time.Now().Add(deliveryDeadline); ; time.Sleep(50 * time.Millisecond) {
		b.apiGet(t, fmt.Sprintf("/api/v1/profiles/%d/history", p.ID), &out)
		if len(h.Messages) == 1 && h.Messages[0].RawExpiredAt != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history: got %+v, want the message's payload expired", h.Messages)
		}
	}
	if m := h.Messages[0]; m.Raw != "" || m.Type != "identify" {
		t.Errorf("expired message: got type %q raw %q, want the row without its payload", m.Type, m.Raw)
	}

	status, admin := adminLogin(t, b, testAdminPassword, nil)
	if status != http.StatusSeeOther && status != http.StatusFound {
		t.Fatalf("admin login: got %d, want a redirect", status)
	}
	page := adminPage(t, admin, b, fmt.Sprintf("/admin/profiles/%d", p.ID))
	if !strings.Contains(page, "Payload expired") {
		t.Errorf("profile page does not say the payload expired:\n%s", page)
	}
}

func TestKeepMessagesConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  string
		want time.Duration
		err  bool
	}{
		{"default", nil, "", 90 * 24 * time.Hour, false},
		{"days from the environment", nil, "30d", 30 * 24 * time.Hour, false},
		{"duration flag", []string{"-keep-messages", "36h"}, "", 36 * time.Hour, false},
		{"forever", []string{"-keep-messages", "0"}, "30d", 0, false},
		{"negative", []string{"-keep-messages", "-1h"}, "", 0, true},
		{"not a number of days", []string{"-keep-messages", "ninetyd"}, "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "BRIDGE_KEEP_MESSAGES" {
					return tt.env
				}
				return ""
			}
			c, err := parseConfig("bridge", tt.args, getenv, io.Discard)
			if (err != nil) != tt.err {
				t.Fatalf("got error %v, want error %v", err, tt.err)
			}
			if err == nil && c.KeepMessages != tt.want {
				t.Errorf("got %v, want %v", c.KeepMessages, tt.want)
			}
		})
	}
}

// ingestPhase posts single-event identifies from 16 clients for d and
// returns how many were acknowledged and their median latency.
func ingestPhase(t *testing.T, b *testBridge, phase string, d time.Duration) (int, time.Duration) {
	t.Helper()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(testWriteKey+":"))
	var mu sync.Mutex
	var lat []time.Duration
	var failed error
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			for i := 0; time.Now().Before(stop); i++ {
				body := fmt.Sprintf(`{"userId":"user-%s-%02d-%06d-5e8b2c","anonymousId":"anon-%s-%d-%d","traits":{"plan":"pro"}}`, phase, c, i, phase, c, i)
				req, _ := http.NewRequest(http.MethodPost, b.URL+"/v1/identify", strings.NewReader(body))
				req.Header.Set("Authorization", auth)
				req.Header.Set("Content-Type", "application/json")
				start := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				mu.Lock()
				if err != nil {
					failed = err
					mu.Unlock()
					return
				}
				lat = append(lat, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		t.Fatalf("%s: identify failed: %v", phase, failed)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return len(lat), lat[len(lat)/2]
}

// pausedMetric reads bridge_outbox_paused for Jimo from /metrics ("" if absent).
func pausedMetric(t *testing.T, b *testBridge) string {
	t.Helper()
	_, body := b.get(t, "/metrics")
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, `bridge_outbox_paused{destination="jimo"} `); ok {
			return v
		}
	}
	return ""
}

// TestOutboxOutageAndRecovery: while Jimo answers 503, ingestion goes on,
// the outbox pauses Jimo (shown in /metrics) and stops sending it all but
// probes; when Jimo answers again, everything is delivered once. It logs
// ingest rates and drain time; BRIDGE_OUTAGE_SECONDS lengthens each phase.
func TestOutboxOutageAndRecovery(t *testing.T) {
	phase := 2 * time.Second
	if v, err := strconv.Atoi(os.Getenv("BRIDGE_OUTAGE_SECONDS")); err == nil && v > 0 {
		phase = time.Duration(v) * time.Second
	}
	fakeJimo := jimotest.NewServer(t, jimoKey)
	b := startBridge(t, "", "-jimo-api-key", jimoKey, "-jimo-endpoint", fakeJimo.URL)

	upN, upP50 := ingestPhase(t, b, "up", phase)
	if _, err := fakeJimo.WaitFor(upN, deliveryDeadline); err != nil {
		t.Fatal(err)
	}
	fakeJimo.FailWith(503, -1)
	before := fakeJimo.Attempts()
	downN, downP50 := ingestPhase(t, b, "down", phase)
	for deadline := time.Now().Add(deliveryDeadline); pausedMetric(t, b) != "1"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("bridge_outbox_paused{destination=\"jimo\"}: got %q, want 1 during the outage", pausedMetric(t, b))
		}
	}
	duringOutage := fakeJimo.Attempts() - before
	if duringOutage >= downN {
		t.Errorf("got %d attempts to Jimo during the outage for %d jobs, want fewer (a paused destination is only probed)", duringOutage, downN)
	}

	fakeJimo.Recover()
	recovered := time.Now()
	reqs, err := fakeJimo.WaitFor(upN+downN, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	drain := time.Since(recovered)
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[r.IdempotencyKey] = true
	}
	if len(seen) != upN+downN {
		t.Errorf("got %d distinct deliveries, want %d", len(seen), upN+downN)
	}
	for deadline := time.Now().Add(deliveryDeadline); pausedMetric(t, b) != "0"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("bridge_outbox_paused{destination=\"jimo\"}: got %q, want 0 after recovery", pausedMetric(t, b))
		}
	}
	t.Logf("Jimo up: %d identifies in %v (%.0f/s, p50 %v); Jimo 503: %d (%.0f/s, p50 %v), %d attempts reached Jimo; backlog of %d delivered %v after recovery",
		upN, phase, float64(upN)/phase.Seconds(), upP50, downN, float64(downN)/phase.Seconds(), downP50, duringOutage, downN, drain.Round(time.Millisecond))
}
