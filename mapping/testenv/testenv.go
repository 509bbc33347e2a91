// Package testenv lets a test skip when this machine lacks a tool it needs
// (a browser, Node) without the skip going unnoticed: go test ./... shows
// no skips unless -v is given, so Main prints which tests were skipped and
// how to run them. Under BRIDGE_TEST_REQUIRE_ALL=1 (CI) such a test fails
// instead of skipping.
package testenv

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// RequireAll names the environment variable that, set to 1, turns every
// Missing skip into a failure.
const RequireAll = "BRIDGE_TEST_REQUIRE_ALL"

// skip is one test skipped for a missing tool.
type skip struct {
	test string // the top-level test's name
	why  string // what is missing and how to get it
}

var (
	mu      sync.Mutex
	skipped []skip
)

// Missing ends test t, which needs what this machine lacks: what names it
// ("node"), how says how to get it ("apt-get install -y nodejs"). Under
// BRIDGE_TEST_REQUIRE_ALL=1 it fails t; otherwise it records the skip for
// Main's summary and skips t. A package whose test run skipped this way
// also keeps go test from caching that run (see markUncacheable), so the
// summary comes back on every run, and installing the tool takes effect
// without -count=1.
func Missing(t testing.TB, what, how string) {
	t.Helper()
	end(t, fmt.Sprintf("%s is not installed (install it with %s)", what, how))
}

// Lacks is Missing for something other than a tool that this machine or
// run lacks: a privilege ("root, to mount a small file system"), a system
// ("Linux's /proc"), a full run (not -short); how says how to get it.
func Lacks(t testing.TB, what, how string) {
	t.Helper()
	end(t, fmt.Sprintf("they need %s (%s)", what, how))
}

// end fails t under RequireAll, else records the skip (why: what is
// missing and how to get it) and skips t.
func end(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(RequireAll) == "1" {
		t.Fatalf("%s; %s=1: nothing may skip", why, RequireAll)
		return
	}
	name, _, _ := strings.Cut(t.Name(), "/")
	mu.Lock()
	skipped = append(skipped, skip{test: name, why: why})
	mu.Unlock()
	markUncacheable()
	t.Skip(why)
}

// Main runs the package's tests and returns the exit code; call it from the
// package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// When tests were skipped through Missing, it then writes summary to the
// terminal: to stderr when that is one (go test run in a package's
// directory streams it), else to /dev/tty, since in package list mode
// (go test ./...) go test shows a passing package's output only with -v.
// Without a terminal (CI, where BRIDGE_TEST_REQUIRE_ALL=1 means nothing
// skips) it goes to stderr.
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	s := summary(packageDir(), skipped)
	mu.Unlock()
	if s != "" {
		w, closeTTY := terminal()
		fmt.Fprint(w, s)
		closeTTY()
	}
	return code
}

// summary says which tests were skipped for want of what, and the command
// that runs them once it is there; "" when none were. dir is
// the package's directory relative to the module root ("./jimo").
func summary(dir string, skips []skip) string {
	byWhy := map[string][]string{}
	for _, s := range skips {
		if !contains(byWhy[s.why], s.test) {
			byWhy[s.why] = append(byWhy[s.why], s.test)
		}
	}
	whys := make([]string, 0, len(byWhy))
	for w := range byWhy {
		whys = append(whys, w)
	}
	sort.Strings(whys)
	var b strings.Builder
	for _, why := range whys {
		tests := byWhy[why]
		sort.Strings(tests)
		plural := "s were"
		if len(tests) == 1 {
			plural = " was"
		}
		fmt.Fprintf(&b, "%s: %d test%s skipped: %s: %s\n", dir, len(tests), plural, why, strings.Join(tests, ", "))
		fmt.Fprintf(&b, "    run them once it is: %s=1 go test %s -run '^(%s)$'\n", RequireAll, dir, strings.Join(tests, "|"))
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// terminal returns where Main's summary is seen, and how to close it.
func terminal() (io.Writer, func()) {
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return os.Stderr, func() {}
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		return tty, func() { tty.Close() }
	}
	return os.Stderr, func() {}
}

// moduleRoot returns the directory of the go.mod above the working
// directory (go test runs a package's tests in its directory), or "".
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// packageDir returns the working directory relative to the module root, as
// go test takes it: "./jimo", or "." for the root.
func packageDir() string {
	wd, err := os.Getwd()
	root := moduleRoot()
	if err != nil || root == "" {
		return "."
	}
	rel, err := filepath.Rel(root, wd)
	if err != nil || rel == "." {
		return "."
	}
	return "./" + filepath.ToSlash(rel)
}

// markUncacheable keeps go test from caching this run: go test does not
// cache a run that opened a file inside the module modified less than two
// seconds before the run ended. The file is testdata/artifacts/skipped/<package>,
// which git ignores.
func markUncacheable() {
	root := moduleRoot()
	if root == "" {
		return
	}
	dir := filepath.Join(root, "testdata", "artifacts", "skipped")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	name := filepath.Join(dir, strings.NewReplacer("/", "_", ".", "_").Replace(packageDir()))
	if err := os.WriteFile(name, []byte("a test of this package skipped for a missing tool\n"), 0o644); err != nil {
		return
	}
	if f, err := os.Open(name); err == nil { // the open is what go test records
		f.Close()
	}
}
