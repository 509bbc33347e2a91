package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"
)

// TestSoakReports runs bridge soak briefly with a small log bound: every
// event offered is acknowledged, and the summary reports the log's peak
// (within its bound), the resident memory and the backlog.
func TestSoakReports(t *testing.T) {
	var out bytes.Buffer
	args := []string{"soak", "-duration", "3s", "-interval", "1s", "-rate", "200", "-concurrency", "8", "-wal-limit", "2MiB", "-dir", t.TempDir()}
	if err := run(context.Background(), args, func(string) string { return "" }, &out); err != nil {
		t.Fatalf("soak: %v\n%s", err, out.String())
	}
	m := regexp.MustCompile(`in all: (\d+) events acknowledged \(\d+/s\), (\d+) failed; log peak ([\d.]+) MiB \(bound 2 MiB.*RSS peak ([\d.]+) MiB.*backlog peak (\d+) jobs`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no summary:\n%s", out.String())
	}
	acked, _ := strconv.Atoi(m[1])
	peak, _ := strconv.ParseFloat(m[3], 64)
	rss, _ := strconv.ParseFloat(m[4], 64)
	if acked == 0 || m[2] != "0" {
		t.Errorf("%d acknowledged, %s failed; want some and none:\n%s", acked, m[2], out.String())
	}
	if peak <= 0 || peak > 2 {
		t.Errorf("log peak %.1f MiB, want above 0 and at most the 2 MiB bound:\n%s", peak, out.String())
	}
	if rss <= 0 {
		t.Errorf("RSS peak %.1f MiB, want it measured:\n%s", rss, out.String())
	}
}
