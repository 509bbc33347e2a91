package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

// BenchmarkPages measures the server time of the admin's pages, rendered
// through Echo from a real SQLite store holding many identifiers: the
// default is 20,000; set BRIDGE_ADMIN_BENCH_IDENTIFIERS=1000000 for the
// figure the issue asks about (generating it takes a minute or two).
// The profile measured is a large one: a user with 100 anonymous IDs (the
// default cap), their messages and deliveries.
func BenchmarkPages(b *testing.B) {
	n := 20000
	if v := os.Getenv("BRIDGE_ADMIN_BENCH_IDENTIFIERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("BRIDGE_ADMIN_BENCH_IDENTIFIERS=%q: %v", v, err)
		}
	}
	store, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	start := time.Now()
	// Background: n identifiers, two per person.
	const batch = 2000
	for i := 0; i < n/2; i += batch {
		msgs := make([]mapping.Message, 0, batch)
		for j := i; j < min(i+batch, n/2); j++ {
			msgs = append(msgs, message(fmt.Sprintf("bg-%d", j), time.Duration(j)*time.Millisecond,
				fmt.Sprintf("user-%08d-%x", j, j*7919), fmt.Sprintf("anon-%08d-%x", j, j*104729), "", map[string]any{"plan": "free", "n": j}))
		}
		if _, err := store.Submit(context.Background(), msgs); err != nil {
			b.Fatal(err)
		}
	}
	// The profile to look at: 100 browsers, 300 messages, 100 deliveries.
	const big = "user-big-0f1e2d3c4b5a"
	var msgs []mapping.Message
	for i := range 100 {
		anon := fmt.Sprintf("anon-big-%03d", i)
		msgs = append(msgs,
			message(fmt.Sprintf("big-id-%d", i), time.Duration(i)*time.Second, big, anon, "", map[string]any{"name": "Big", "seen": i}, jimoJob(fmt.Sprintf("out-big-%d", i), big)),
			message(fmt.Sprintf("big-t1-%d", i), time.Duration(i)*time.Second+time.Millisecond, big, anon, "Viewed Pricing", nil),
			message(fmt.Sprintf("big-t2-%d", i), time.Duration(i)*time.Second+2*time.Millisecond, "", anon, "Viewed Docs", nil))
	}
	if _, err := store.Submit(context.Background(), msgs); err != nil {
		b.Fatal(err)
	}
	p, err := store.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: big})
	if err != nil {
		b.Fatal(err)
	}
	small, err := store.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: fmt.Sprintf("user-%08d-%x", n/6, n/6*7919)})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d identifiers in %v", n+101, time.Since(start).Round(time.Second))

	a, err := New(Config{Store: store, Password: testPassword})
	if err != nil {
		b.Fatal(err)
	}
	e := echo.New()
	a.Register(e.Group("/admin"))
	id := randomToken()
	if err := store.CreateAdminSession(context.Background(), id, randomToken(), time.Now(), a.limits); err != nil {
		b.Fatal(err)
	}

	pages := []struct{ name, target string }{
		{"search exact", "/admin/search?q=" + url.QueryEscape(fmt.Sprintf("anonymous_id:anon-%08d-%x", n/4, n/4*104729))},
		{"search bare value", "/admin/search?q=" + url.QueryEscape(fmt.Sprintf("user-%08d-%x", n/3, n/3*7919))},
		{"search prefix", "/admin/search?prefix=1&q=" + url.QueryEscape(fmt.Sprintf("user-%05d", n/2/1000))},
		{"search prefix next page", "/admin/search?prefix=1&q=user-&after=" + url.QueryEscape(fmt.Sprintf("user_id:user-%08d", n/5))},
		{"profile of 100 browsers", fmt.Sprintf("/admin/profiles/%d", p.ID)},
		{"profile of 2", fmt.Sprintf("/admin/profiles/%d", small.ID)},
		{"overview", "/admin/"},
	}
	for _, pg := range pages {
		b.Run(pg.name, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, pg.target, nil)
				req.AddCookie(&http.Cookie{Name: sessionCookie, Value: id})
				rec := httptest.NewRecorder()
				e.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: got status %d, want 200", pg.target, rec.Code)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
		})
	}
}
