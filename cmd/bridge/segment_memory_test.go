package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping/testenv"
)

// TestUnauthenticatedFloodMemory runs the bridge as its own process and floods
// /segment/webhook for a few seconds from 60 concurrent clients with wrong
// signatures and 16 KB gzip bodies that inflate to 16 MB. The bridge's peak
// resident memory (VmHWM) must stay within a few hundred MB: bodies are read
// under a memory budget, and what does not fit is answered 503 with
// Retry-After. Then it sends the same bodies to /v1/batch, with no
// credentials until the body is read. It logs the peaks.
func TestUnauthenticatedFloodMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		testenv.Lacks(t, "Linux's /proc/PID/status", "run it on Linux")
	}
	const (
		clients  = 60
		duration = 4 * time.Second
		ceiling  = 400 << 20 // bytes of peak RSS allowed
	)
	bin := filepath.Join(t.TempDir(), "bridge")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "bridge.db"),
		"-segment-shared-secret", "flood-secret", "-log-level", "error")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := ""
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if addr, ok := strings.CutPrefix(lines.Text(), "bridge listening on "); ok {
			url = strings.TrimSpace(addr)
			break
		}
	}
	if url == "" {
		t.Fatal("the bridge did not report its address")
	}
	go io.Copy(io.Discard, stdout)

	// 16 MB of JSON whitespace inside an object, under the 16 MB limit, in about 16 KB of gzip.
	var zipped bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zipped, gzip.BestCompression)
	zw.Write([]byte(`{"type":"identify","userId":"u",`))
	spaces := bytes.Repeat([]byte{' '}, 1<<20)
	for range 15 {
		zw.Write(spaces)
	}
	zw.Write(spaces[:1<<20-4096])
	zw.Write([]byte(`"x":1}`))
	zw.Close()
	bomb := zipped.Bytes()
	wrong := make([]byte, 20)
	rand.Read(wrong)

	before := vmHWM(t, cmd.Process.Pid)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 30 * time.Second}
	var unauthorized, unavailable, other atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(duration)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequest(http.MethodPost, url+"/segment/webhook", bytes.NewReader(bomb))
				req.Header.Set("Content-Encoding", "gzip")
				req.Header.Set("X-Signature", hex.EncodeToString(wrong))
				resp, err := client.Do(req)
				if err != nil {
					other.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusUnauthorized:
					unauthorized.Add(1)
				case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
					unavailable.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	peak := vmHWM(t, cmd.Process.Pid)
	t.Logf("/segment/webhook: %d clients for %v, %d KB gzip bodies inflating to 16 MB: %d answered 401, %d 503 with Retry-After, %d other; peak RSS (VmHWM) %d MB before, %d MB after",
		clients, duration, len(bomb)>>10, unauthorized.Load(), unavailable.Load(), other.Load(), before>>20, peak>>20)

	// The same bombs on the Tracking API, with no credentials until the body
	// is read (analytics.js puts the write key in the body): refused at 500 KB.
	var tooLarge, v1other atomic.Int64
	stop = time.Now().Add(duration / 2)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequest(http.MethodPost, url+"/v1/batch", bytes.NewReader(bomb))
				req.Header.Set("Content-Encoding", "gzip")
				resp, err := client.Do(req)
				if err != nil {
					v1other.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusServiceUnavailable {
					tooLarge.Add(1)
				} else {
					v1other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	peak = vmHWM(t, cmd.Process.Pid)
	t.Logf("/v1/batch: %d clients for %v, the same bodies: %d answered 400 or 503, %d other; peak RSS %d MB",
		clients, duration/2, tooLarge.Load(), v1other.Load(), peak>>20)
	other.Add(v1other.Load())
	if other.Load() > 0 {
		t.Errorf("got %d answers other than 401 or 503 with Retry-After", other.Load())
	}
	if unauthorized.Load() == 0 {
		t.Errorf("no delivery was read to the end and refused for its signature")
	}
	if peak > ceiling {
		t.Errorf("peak RSS %d MB, want at most %d MB", peak>>20, ceiling>>20)
	}
	if t.Failed() {
		cmd.Process.Kill()
		cmd.Wait() // the log is complete once Wait returns
		t.Logf("the bridge's log:\n%.4000s", stderr.String())
	}
}

// vmHWM returns the peak resident set size of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb); err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}
