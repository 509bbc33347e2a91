package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeT records what Missing does to a test.
type fakeT struct {
	testing.TB
	name            string
	skipped, failed string
}

func (f *fakeT) Helper()                        {}
func (f *fakeT) Name() string                   { return f.name }
func (f *fakeT) Skip(args ...any)               { f.skipped = fmt.Sprint(args...) }
func (f *fakeT) Fatalf(format string, a ...any) { f.failed = fmt.Sprintf(format, a...) }

func resetSkipped(t *testing.T) {
	mu.Lock()
	saved := skipped
	skipped = nil
	mu.Unlock()
	t.Cleanup(func() { mu.Lock(); skipped = saved; mu.Unlock() })
}

func TestMissingSkipsAndRecords(t *testing.T) {
	resetSkipped(t)
	t.Setenv(RequireAll, "")
	ft := &fakeT{name: "TestBrowser/subtest"}
	Missing(ft, "chromium", "apt-get install -y chromium")
	if ft.failed != "" || !strings.Contains(ft.skipped, "chromium is not installed") {
		t.Errorf("got skipped %q failed %q, want a skip naming chromium", ft.skipped, ft.failed)
	}
	mu.Lock()
	got := skipped
	mu.Unlock()
	if len(got) != 1 || got[0] != (skip{test: "TestBrowser", why: "chromium is not installed (install it with apt-get install -y chromium)"}) {
		t.Errorf("recorded %+v, want the top-level test with the tool", got)
	}
	// The run is kept out of go test's cache: a file in the module, just written.
	marker := filepath.Join(moduleRoot(), "testdata", "artifacts", "skipped", "__mapping_testenv")
	if fi, err := os.Stat(marker); err != nil || time.Since(fi.ModTime()) > time.Minute {
		t.Errorf("marker %s: %v, want it just written", marker, err)
	}
}

func TestMissingFailsWhenAllAreRequired(t *testing.T) {
	resetSkipped(t)
	t.Setenv(RequireAll, "1")
	ft := &fakeT{name: "TestScript"}
	Missing(ft, "node", "apt-get install -y nodejs")
	if ft.skipped != "" || !strings.Contains(ft.failed, "node is not installed") || !strings.Contains(ft.failed, RequireAll) {
		t.Errorf("got skipped %q failed %q, want a failure naming node and %s", ft.skipped, ft.failed, RequireAll)
	}
	if len(skipped) != 0 {
		t.Errorf("recorded %v, want nothing (the test failed)", skipped)
	}
}

func TestSummary(t *testing.T) {
	if got := summary("./jimo", nil); got != "" {
		t.Errorf("no skips: got %q, want nothing", got)
	}
	got := summary("./cmd/bridge", []skip{
		{"TestJimoBrowser", "chromium is not installed (install it with apt-get install -y chromium)"},
		{"TestAdminBrowser", "chromium is not installed (install it with apt-get install -y chromium)"},
		{"TestAdminBrowser", "chromium is not installed (install it with apt-get install -y chromium)"},
		{"TestScript", "node is not installed (install it with apt-get install -y nodejs)"},
	})
	want := "./cmd/bridge: 2 tests were skipped: chromium is not installed (install it with apt-get install -y chromium): TestAdminBrowser, TestJimoBrowser\n" +
		"    run them once it is: BRIDGE_TEST_REQUIRE_ALL=1 go test ./cmd/bridge -run '^(TestAdminBrowser|TestJimoBrowser)$'\n" +
		"./cmd/bridge: 1 test was skipped: node is not installed (install it with apt-get install -y nodejs): TestScript\n" +
		"    run them once it is: BRIDGE_TEST_REQUIRE_ALL=1 go test ./cmd/bridge -run '^(TestScript)$'\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestPackageDir(t *testing.T) {
	if got := packageDir(); got != "./mapping/testenv" {
		t.Errorf("got %q, want ./mapping/testenv", got)
	}
}
