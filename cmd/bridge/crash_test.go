package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/jimo/jimotest"
	"github.com/bridgeworks/bridge/mapping/testenv"
)

// process is the real bridge binary running as a child process.
type process struct {
	cmd *exec.Cmd
	URL string
}

func buildBridge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bridge")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "bridge listening on "); ok {
				addr <- a
			}
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	select {
	case a := <-addr:
		return &process{cmd: cmd, URL: a}
	case <-time.After(30 * time.Second):
		t.Fatal("bridge binary did not start within 30s")
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestCrashLosesNothingAcknowledged drives concurrent identifies at the real
// binary, kills it with SIGKILL mid-stream, restarts it on the same database
// and checks that every acknowledged message is stored and forwarded to Jimo,
// and that no unacknowledged message is half-applied.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		testenv.Lacks(t, "a full run: it builds and runs the binary", "run go test without -short")
	}
	bin := buildBridge(t)
	fakeJimo := jimotest.NewServer(t, "jimo-key")
	db := filepath.Join(t.TempDir(), "bridge.db")
	args := []string{"-addr", "127.0.0.1:0", "-db", db, "-admin-password", testAdminPassword, "-segment-write-keys", testWriteKey,
		"-jimo-api-key", "jimo-key", "-jimo-endpoint", fakeJimo.URL, "-log-level", "error"}
	p := startProcess(t, bin, args...)

	const total = 3000
	type sent struct {
		userID, anonymousID string
		acked               bool
	}
	msgs := make([]sent, total)
	for i := range msgs {
		msgs[i] = sent{userID: "u-" + randomHex(12), anonymousID: "a-" + randomHex(12)}
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(testWriteKey+":"))
	client := &http.Client{Timeout: 10 * time.Second}
	var next, acked atomic.Int64
	var wg sync.WaitGroup
	killed := make(chan struct{})
	var killOnce sync.Once
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				body := fmt.Sprintf(`{"userId":%q,"anonymousId":%q,"messageId":"crash-%d","traits":{"plan":"pro"}}`, msgs[i].userID, msgs[i].anonymousID, i)
				req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/identify", strings.NewReader(body))
				req.Header.Set("Authorization", auth)
				resp, err := client.Do(req)
				if err != nil {
					continue // the bridge is gone: not acknowledged
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					msgs[i].acked = true
					if acked.Add(1) == total/3 {
						killOnce.Do(func() {
							p.cmd.Process.Signal(syscall.SIGKILL)
							close(killed)
						})
					}
				}
			}
		}()
	}
	wg.Wait()
	<-killed
	p.cmd.Wait()
	n := acked.Load()
	if n < total/3 || n == total {
		t.Fatalf("got %d acknowledged of %d, want the kill to land mid-stream", n, total)
	}
	t.Logf("%d of %d acknowledged before SIGKILL", n, total)

	b := startProcess(t, bin, args...)
	tb := &testBridge{URL: b.URL}
	var ackedUsers []string
	for i, m := range msgs {
		prof, found := tb.profile(t, "user_id:"+m.userID)
		ids := identifierSet(prof)
		switch {
		case m.acked && !found:
			t.Fatalf("message %d was acknowledged but is not stored", i)
		case found && !ids["anonymous_id:"+m.anonymousID]:
			t.Fatalf("message %d is half-applied: profile %v lacks its anonymous ID", i, ids)
		case !found:
			if _, anonFound := tb.profile(t, "anonymous_id:"+m.anonymousID); anonFound {
				t.Fatalf("message %d is half-applied: its anonymous ID is stored without its user", i)
			}
		}
		if m.acked {
			ackedUsers = append(ackedUsers, m.userID)
		}
	}

	// Every acknowledged identify reaches Jimo, at least once, always with the same message ID.
	deadline := time.Now().Add(60 * time.Second)
	for {
		keys := map[string]map[string]bool{}
		for _, r := range fakeJimo.Requests() {
			user := r.Event.UserID
			if keys[user] == nil {
				keys[user] = map[string]bool{}
			}
			keys[user][r.IdempotencyKey] = true
		}
		missing := 0
		for _, u := range ackedUsers {
			if len(keys[u]) == 0 {
				missing++
			} else if len(keys[u]) != 1 {
				t.Fatalf("user %s reached Jimo under %d message IDs, want 1", u, len(keys[u]))
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged identifies never reached Jimo", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	if err := b.cmd.Wait(); err != nil {
		t.Errorf("graceful shutdown after SIGTERM: %v", err)
	}
}
