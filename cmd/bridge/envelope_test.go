package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/bridgeworks/bridge/mapping"
)

// TestLockedDatabaseAnswers503 holds the database's write lock from another
// connection past the bridge's commit timeout: identifies are answered 503
// with Retry-After, /readyz is not ready, the condition is logged once (not
// once per request), and the bridge recovers by itself once the lock is gone.
func TestLockedDatabaseAnswers503(t *testing.T) {
	b := startBridge(t, "", "-commit-timeout", "300ms")
	auth := map[string]string{"Authorization": basicAuth(testWriteKey), "Content-Type": "application/json"}
	identify := func(id string) []byte {
		return []byte(fmt.Sprintf(`{"messageId":%q,"userId":"user-%s","type":"identify"}`, id, id))
	}
	if r := b.do(t, http.MethodPost, "/v1/identify", identify("m0"), auth); r.status != http.StatusOK {
		t.Fatalf("identify before the lock: got %d, want 200: %s", r.status, r.body)
	}

	other, err := sqlx.Open("sqlite3", mapping.SQLiteDSN(b.DB, false))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := b.do(t, http.MethodPost, "/v1/identify", identify(fmt.Sprint("locked", i)), auth)
			if secs, err := strconv.Atoi(r.header.Get("Retry-After")); r.status != http.StatusServiceUnavailable || err != nil || secs < 1 {
				t.Errorf("identify while locked: got %d, Retry-After %q, want 503 with a Retry-After: %s", r.status, r.header.Get("Retry-After"), r.body)
			}
		}()
	}
	wg.Wait()
	if r := b.do(t, http.MethodGet, "/readyz", nil, nil); r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "locked") {
		t.Errorf("/readyz while locked: got %d %s, want 503 saying locked", r.status, r.body)
	}
	if _, err := conn.ExecContext(context.Background(), `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if r := b.do(t, http.MethodPost, "/v1/identify", identify("m1"), auth); r.status != http.StatusOK {
		t.Errorf("identify after the lock: got %d, want 200: %s", r.status, r.body)
	}
	if r := b.do(t, http.MethodGet, "/readyz", nil, nil); r.status != http.StatusOK {
		t.Errorf("/readyz after the lock: got %d %s, want 200", r.status, r.body)
	}
	log := b.stdout.String()
	if n := strings.Count(log, "cannot store"); n != 1 {
		t.Errorf("%d log lines about not storing for 20 refused requests, want 1:\n%s", n, log)
	}
	if strings.Contains(log, "request failed") {
		t.Errorf("a refused request was logged on its own:\n%s", log)
	}
}

// TestDatabaseRemovedUnderTheBridge renames the database away under the
// running bridge: /readyz says so until it is back.
func TestDatabaseRemovedUnderTheBridge(t *testing.T) {
	b := startBridge(t, "")
	if r := b.do(t, http.MethodGet, "/readyz", nil, nil); r.status != http.StatusOK {
		t.Fatalf("/readyz: got %d %s, want 200", r.status, r.body)
	}
	if err := os.Rename(b.DB, b.DB+".moved"); err != nil {
		t.Fatal(err)
	}
	if r := b.do(t, http.MethodGet, "/readyz", nil, nil); r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "removed") {
		t.Errorf("/readyz with the database renamed away: got %d %s, want 503 saying it was removed", r.status, r.body)
	}
	if err := os.Rename(b.DB+".moved", b.DB); err != nil {
		t.Fatal(err)
	}
	if r := b.do(t, http.MethodGet, "/readyz", nil, nil); r.status != http.StatusOK {
		t.Errorf("/readyz with the database back: got %d %s, want 200", r.status, r.body)
	}
	if !strings.Contains(b.stdout.String(), "removed or renamed") {
		t.Errorf("the log does not say the database was removed:\n%s", b.stdout)
	}
}
