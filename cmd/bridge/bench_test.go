package main

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchRunsEveryMeasurement runs bridge bench briefly: every run must
// acknowledge events without a failure, and the ratios must be printed.
func TestBenchRunsEveryMeasurement(t *testing.T) {
	var out bytes.Buffer
	args := []string{"bench", "-duration", "300ms", "-rounds", "2", "-concurrency", "8", "-batch", "10", "-known", "50", "-dir", t.TempDir()}
	if err := run(context.Background(), args, func(string) string { return "" }, &out); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	text := out.String()
	checkBenchRows(t, text, "bare Echo", "floor", "bridge /v1/identify ", "bridge /v1/identify, returning", "raw SQLite inserts", "bridge /v1/batch")
	for _, want := range []string{"identifies of returning people:", "batched ingest / raw SQLite inserts:", "jobs left for delivery at the end of the run:", "outbox delivery to Jimo"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "PostgreSQL") {
		t.Errorf("without -db, the output speaks of PostgreSQL:\n%s", text)
	}
}

// TestBenchPostgres runs bridge bench briefly with -db: the runs on
// PostgreSQL, with one replica and with two, acknowledge events without a
// failure beside the SQLite runs, and their ratios are printed.
func TestBenchPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, drop, err := createPostgresDB(ctx, postgresServer(), "bridge_bench_probe_")
	cancel()
	if errors.Is(err, errPostgresUnreachable) {
		noPostgres(t, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := drop(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	args := []string{"bench", "-duration", "300ms", "-rounds", "2", "-concurrency", "8", "-batch", "10", "-known", "50", "-dir", t.TempDir(), "-db", postgresServer()}
	if err := run(context.Background(), args, func(string) string { return "" }, &out); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	text := out.String()
	checkBenchRows(t, text, "bridge /v1/identify ", "bridge /v1/batch",
		"PostgreSQL, 1 replica, /v1/identify", "PostgreSQL, 1 replica, /v1/batch", "PostgreSQL, 2 replicas, /v1/identify", "PostgreSQL, 2 replicas, /v1/batch")
	for _, want := range []string{"batched ingest, one replica:", "batched ingest, two replicas together:"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

// checkBenchRows checks the summary table of bench's output: a row per
// name (a prefix of the run's name), each with a positive rate, no
// failures, and for the bridge on SQLite a log peak within its bound.
func checkBenchRows(t *testing.T, text string, names ...string) {
	t.Helper()
	_, table, ok := strings.Cut(text, "all rounds together:\n")
	if !ok {
		t.Fatalf("no summary table:\n%s", text)
	}
	for _, name := range names {
		var row []string
		for line := range strings.Lines(table) {
			if strings.HasPrefix(line, name) {
				row = strings.Fields(line)
			}
		}
		if row == nil {
			t.Errorf("no %q row:\n%s", name, text)
			continue
		}
		rate, err := strconv.ParseFloat(row[len(row)-5], 64)
		if err != nil || rate <= 0 {
			t.Errorf("%s: events/s %q, want a positive number", name, row[len(row)-5])
		}
		// The bridge's log stays under its bound (64 MiB by default) in every run.
		if peak, err := strconv.ParseFloat(row[len(row)-2], 64); err != nil || strings.HasPrefix(name, "bridge") && (peak <= 0 || peak > 64) {
			t.Errorf("%s: log peak %q MiB, want a number, and for the bridge above 0 and at most 64", name, row[len(row)-2])
		}
		if failures := row[len(row)-1]; failures != "0" {
			t.Errorf("%s: %s failures", name, failures)
		}
	}
}
