package main

import (
	"os"
	"testing"

	"github.com/bridgeworks/bridge/mapping/testenv"
)

// TestMain says, after the tests, which were skipped because this machine
// lacks Chromium, and how to run them.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
