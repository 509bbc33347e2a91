package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/bridgeworks/bridge/mapping/store"
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

	other, err := sqlx.Open("sqlite3", store.SQLiteDSN(b.DB, false))
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
	} else if strings.Contains(string(r.body), filepath.Base(b.DB)) {
		t.Errorf("/readyz shows the database's path to anyone: %s", r.body)
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

// TestFailedSyncStopsTheBridge injects a failure of the write-ahead log's
// sync under the running bridge: the request whose commit it covered is not
// acknowledged, and serve returns an error (main exits 1) with a log line
// saying why.
func TestFailedSyncStopsTheBridge(t *testing.T) {
	out := &syncBuffer{addr: make(chan string, 1)}
	cfg, err := parseConfig("bridge", []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "bridge.db"),
		"-admin-password", testAdminPassword, "-segment-write-keys", testWriteKey,
		"-jimo-signing-secret", testSigningSecret, "-jimo-webhook-secret", testWebhookSecret}, func(string) string { return "" }, out)
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	cfg.syncFile = func(f *os.File) error {
		if failing.Load() {
			return &os.PathError{Op: "fsync", Path: f.Name(), Err: syscall.EIO}
		}
		return f.Sync()
	}
	logger, err := newLogger(cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, logger, out) }()
	var b testBridge
	select {
	case b.URL = <-out.addr:
	case err := <-served:
		t.Fatalf("bridge did not start: %v\n%s", err, out)
	}
	auth := map[string]string{"Authorization": basicAuth(testWriteKey), "Content-Type": "application/json"}
	if r := b.do(t, http.MethodPost, "/v1/identify", []byte(`{"messageId":"m0","userId":"user-0","type":"identify"}`), auth); r.status != http.StatusOK {
		t.Fatalf("identify: got %d, want 200: %s", r.status, r.body)
	}
	failing.Store(true)
	if r := b.do(t, http.MethodPost, "/v1/identify", []byte(`{"messageId":"m1","userId":"user-1","type":"identify"}`), auth); r.status == http.StatusOK {
		t.Errorf("identify whose sync failed: got 200, want it refused")
	}
	select {
	case err := <-served:
		if err == nil || !errors.Is(err, syscall.EIO) {
			t.Errorf("serve: got %v, want the sync failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the bridge went on serving after a failed sync")
	}
	if !strings.Contains(out.String(), "stopping: the database can no longer be written safely") {
		t.Errorf("no log line says why the bridge stopped:\n%s", out)
	}
}
