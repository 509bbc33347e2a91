// Command bridge makes Segment and Jimo agree on who a user is. It receives
// Segment's identify traffic (Tracking API and webhook destination) and the
// Jimo snippet's session resets, unifies them on one shared user ID in SQLite,
// and forwards identities both ways.
//
// Usage:
//
//	bridge [flags]          serve (flags and BRIDGE_* variables: bridge -help)
//	bridge bench [flags]    measure ingest against baselines
//	bridge soak [flags]     run under steady load; report the files, memory and backlog
//	bridge outbox list      list dead (or other) outbox jobs
//	bridge outbox retry     make dead jobs due again
//	bridge help             list the subcommands, flags and BRIDGE_* variables
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

func main() {
	// One processor more than the machine has, unless GOMAXPROCS is set or
	// a CPU quota (a container's) already sets it lower: there the runtime's
	// own choice, which follows the quota, stands. The store's committer,
	// which every acknowledgement waits for, spends most of its time inside
	// SQLite (C) and gives up its processor to the request handlers
	// meanwhile; with no spare one, each return from C queues behind them.
	// Measured with bridge bench on 2 cores: 15–20% more single-event ingest.
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) == runtime.NumCPU() {
		runtime.GOMAXPROCS(runtime.NumCPU() + 1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Getenv, os.Stdout), os.Stderr))
}

// exitCode is the exit status for run's result, which it reports on stderr:
// 0 for success and for help that was asked for (-help, -h, bridge help), 1
// for any error.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintln(stderr, "bridge:", err)
	return 1
}

// run is the whole program: it dispatches subcommands and otherwise serves
// until ctx ends. Everything it needs comes in as arguments, so tests run it
// in-process on port 0.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "bench":
			return runBench(ctx, args[1:], stdout)
		case "soak":
			return runSoak(ctx, args[1:], stdout)
		case "outbox":
			return runOutbox(ctx, args[1:], getenv, stdout)
		case "help":
			_, err := parseConfig("bridge", []string{"-help"}, getenv, stdout)
			return err
		}
	}
	cfg, err := parseConfig("bridge", args, getenv, stdout)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg, stdout)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, logger, stdout)
}

func newLogger(cfg config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", cfg.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.LogFormat) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", cfg.LogFormat)
}
