package jimo

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bridgeworks/bridge/mapping/testenv"
)

// nodeOrSkip finds node, or skips (fails under BRIDGE_TEST_REQUIRE_ALL=1).
func nodeOrSkip(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node", "apt-get install -y nodejs")
	}
	return node
}

// TestScriptSyntax parses the embedded script as a classic script.
func TestScriptSyntax(t *testing.T) {
	node := nodeOrSkip(t)
	path := filepath.Join(t.TempDir(), "bridge.js")
	if err := os.WriteFile(path, ScriptSource(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(node, "--check", path).CombinedOutput(); err != nil {
		t.Fatalf("node --check bridge.js: %v\n%s", err, out)
	}
}

// TestScriptBehaviour runs the embedded script in a simulated page
// (testdata/jimo/bridge_harness.js): commands reach Jimo unchanged and in
// order, reports carry what the page set, window.jimo is re-wrapped when
// Jimo's SDK replaces it, and failures never break the page.
func TestScriptBehaviour(t *testing.T) {
	node := nodeOrSkip(t)
	path := filepath.Join(t.TempDir(), "bridge.js")
	if err := os.WriteFile(path, ScriptSource(), 0o644); err != nil {
		t.Fatal(err)
	}
	harness := filepath.Join("..", "testdata", "jimo", "bridge_harness.js")
	out, err := exec.Command(node, harness, path).CombinedOutput()
	if err != nil {
		t.Fatalf("bridge.js harness: %v\n%s", err, out)
	}
}
