package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bridgeworks/bridge/mapping/store"
	"github.com/bridgeworks/bridge/mapping/testenv"
)

// Credentials every test bridge is started with.
const (
	testAdminPassword = "test-admin-password"
	testWriteKey      = "test-write-key"
	testSigningSecret = "test-signing-secret"
	testWebhookSecret = "test-webhook-secret"
)

// testBridge is a bridge started in-process by run, on port 0, with a fresh SQLite file.
type testBridge struct {
	URL    string
	DB     string
	stdout *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// syncBuffer collects what run prints and reports the listening address.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
	sent bool
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if !b.sent {
		for _, line := range strings.Split(b.buf.String(), "\n") {
			if addr, ok := strings.CutPrefix(line, "bridge listening on "); ok {
				b.addr <- strings.TrimSpace(addr)
				b.sent = true
				break
			}
		}
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startBridge runs the bridge with test credentials plus args (later flags
// win) and stops it when the test ends. db, if not empty, reuses a database.
func startBridge(t testing.TB, db string, args ...string) *testBridge {
	t.Helper()
	if db == "" {
		db = filepath.Join(t.TempDir(), "bridge.db")
	}
	all := append([]string{
		"-addr", "127.0.0.1:0", "-db", db,
		"-admin-password", testAdminPassword,
		"-segment-write-keys", testWriteKey,
		"-jimo-signing-secret", testSigningSecret,
		"-jimo-webhook-secret", testWebhookSecret,
		"-log-level", "warn",
	}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	b := &testBridge{DB: db, stdout: &syncBuffer{addr: make(chan string, 1)}, cancel: cancel, done: make(chan error, 1)}
	go func() { b.done <- run(ctx, all, func(string) string { return "" }, b.stdout) }()
	select {
	case b.URL = <-b.stdout.addr:
	case err := <-b.done:
		cancel()
		t.Fatalf("bridge did not start: %v\n%s", err, b.stdout)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("bridge did not start within 30s:\n%s", b.stdout)
	}
	t.Cleanup(func() { b.stop(t) })
	return b
}

// stop shuts the bridge down gracefully and fails the test if that fails.
func (b *testBridge) stop(t testing.TB) {
	if b.cancel == nil {
		return
	}
	b.cancel()
	b.cancel = nil
	select {
	case err := <-b.done:
		if err != nil {
			t.Errorf("bridge shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("bridge did not shut down within 30s")
	}
}

// profile reads a profile through the lookup API; ok is false on 404.
func (b *testBridge) profile(t testing.TB, identifier string) (store.Profile, bool) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.URL+"/api/v1/profiles?identifier="+url.QueryEscape(identifier), nil)
	req.SetBasicAuth("admin", testAdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("lookup %s: %v", identifier, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return store.Profile{}, false
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("lookup %s: got status %d, want 200: %s", identifier, resp.StatusCode, body)
	}
	var out struct {
		Profile store.Profile `json:"profile"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("lookup %s: %v: %s", identifier, err, body)
	}
	return out.Profile, true
}

// post sends body to path with the given headers and returns the status and body.
func (b *testBridge) post(t testing.TB, path string, body []byte, headers map[string]string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.URL+path, bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// identifierSet renders a profile's identifiers as a set of KIND:VALUE strings.
func identifierSet(p store.Profile) map[string]bool {
	set := map[string]bool{}
	for _, id := range p.Identifiers {
		set[id.Identifier.String()] = true
	}
	return set
}

// chromiumPath finds Chromium, or skips (fails under BRIDGE_TEST_REQUIRE_ALL=1).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Missing(t, "chromium", "apt-get install -y chromium")
	return ""
}

// newBrowser starts headless Chromium at path with a fresh profile and a
// window of the given size; it is stopped when the test ends.
func newBrowser(t *testing.T, path string, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	return ctx
}
