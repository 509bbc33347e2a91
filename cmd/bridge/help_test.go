package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-help"}, {"-h"}, {"help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), args, func(string) string { return "" }, &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("got %v, want flag.ErrHelp", err)
			}
			if code := exitCode(err, &bytes.Buffer{}); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			help := out.String()
			for _, want := range []string{"bridge outbox list", "bridge outbox retry", "bridge bench", "bridge soak", "bridge help",
				// DESIGN.md §5's variables that this bridge has.
				"BRIDGE_ADDR", "BRIDGE_DB", "BRIDGE_SEGMENT_WRITE_KEYS", "BRIDGE_SEGMENT_SHARED_SECRET", "BRIDGE_SEGMENT_FORWARD_WRITE_KEY",
				"BRIDGE_SEGMENT_ENDPOINT", "BRIDGE_JIMO_API_KEY", "BRIDGE_JIMO_ENDPOINT", "BRIDGE_JIMO_TOKEN_MODE", "BRIDGE_JIMO_SIGNING_SECRET",
				"BRIDGE_JIMO_WEBHOOK_SECRET", "BRIDGE_ALLOWED_ORIGINS", "BRIDGE_SEGMENT_RELAY", "BRIDGE_JIMO_FORWARD_TRACK", "BRIDGE_ADMIN_PASSWORD"} {
				if !strings.Contains(help, want) {
					t.Errorf("help lacks %s", want)
				}
			}
			// Every flag is listed with its variable right under it.
			flags := regexp.MustCompile(`(?m)^  -([a-z-]+)[^\n]*\n      (BRIDGE_[A-Z_]+): `).FindAllStringSubmatch(help, -1)
			if len(flags) < 25 {
				t.Errorf("got %d flags with their variables, want every flag:\n%s", len(flags), help)
			}
			for _, f := range flags {
				if envName(f[1]) != f[2] {
					t.Errorf("flag -%s is listed with %s, want %s", f[1], f[2], envName(f[1]))
				}
			}
			if n := strings.Count(help, "\n  -"); n != len(flags) {
				t.Errorf("%d flags listed, %d of them with a variable", n, len(flags))
			}
		})
	}
	if code := exitCode(errors.New("boom"), &bytes.Buffer{}); code != 1 {
		t.Errorf("exit code for an error: %d, want 1", code)
	}
}

func TestOutboxCommandLine(t *testing.T) {
	noEnv := func(string) string { return "" }
	outbox := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"outbox"}, args...), noEnv, &out)
		return out.String(), err
	}
	for _, args := range [][]string{{"-help"}, {"help"}, {"retry", "-help"}, {"list", "-h"}} {
		out, err := outbox(args...)
		if !errors.Is(err, flag.ErrHelp) || exitCode(err, &bytes.Buffer{}) != 0 {
			t.Errorf("outbox %v: got %v, want help (exit 0)", args, err)
		}
		if !strings.Contains(out, "bridge outbox retry") || !strings.Contains(out, "-db") {
			t.Errorf("outbox %v: got %q, want the usage with its flags", args, out)
		}
	}

	db := filepath.Join(t.TempDir(), "bridge.db")
	store, err := store.Open(context.Background(), db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	// Flags after the job IDs, before them, and mixed: the IDs are read and
	// looked up in the -db given (where there are no such jobs).
	for _, args := range [][]string{{"retry", "42", "43", "-db", db}, {"retry", "-db", db, "42", "43"}, {"retry", "42", "-db", db, "43"}} {
		if _, err := outbox(args...); mapping.ErrorCode(err) != mapping.CodeNotFound || !strings.Contains(err.Error(), "job 42") {
			t.Errorf("outbox %v: got %v, want job 42 not found in %s", args, err, db)
		}
	}
	if out, err := outbox("retry", "-all", "-db", db); err != nil || !strings.Contains(out, "0 job(s) due again") {
		t.Errorf("retry -all: got %q, %v", out, err)
	}
	if _, err := outbox("retry", "42", "-db", db, "x43"); err == nil || !strings.Contains(err.Error(), `"x43"`) {
		t.Errorf("a bad job ID after the flags: got %v, want it named", err)
	}
	if _, err := outbox("list", "-db", db, "extra"); err == nil {
		t.Error("list with an argument: got no error")
	}
	if out, err := outbox("list", "-state", "all", "-db", db); err != nil || !strings.Contains(out, "DESTINATION") {
		t.Errorf("list: got %q, %v", out, err)
	}
}
