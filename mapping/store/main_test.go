package store

import (
	"os"
	"testing"

	"github.com/bridgeworks/bridge/mapping/testenv"
)

// TestMain says, after the tests, which were skipped because this run lacks
// what they need (root, to mount a small file system), and how to run them.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
