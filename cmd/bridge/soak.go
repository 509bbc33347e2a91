package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// runSoak runs the bridge in-process under a steady load for a long time,
// as production does, and reports every interval, then in all, what must
// stay bounded: the write-ahead log (its size and peak), the database's
// size, the process's resident memory, the outbox backlog, and the events
// acknowledged and failed. Deliveries run throughout, to a stand-in for
// Jimo that answers at once.
func runSoak(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bridge soak", flag.ContinueOnError)
	fs.SetOutput(stdout)
	duration := fs.Duration("duration", 5*time.Minute, "how long the load lasts")
	perSecond := fs.Float64("rate", 500, "events per second offered")
	batchSize := fs.Int("batch", 1, "events per request (1: /v1/identify; more: /v1/batch)")
	returning := fs.Float64("returning", 0.5, "share of events about people identified before")
	concurrency := fs.Int("concurrency", 64, "concurrent clients")
	interval := fs.Duration("interval", 10*time.Second, "how often to report")
	walLimit := byteSize(0)
	fs.Var(&walLimit, "wal-limit", "bound of the write-ahead log (default: the bridge's)")
	dir := fs.String("dir", "", "directory for the database (default: a temporary one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *perSecond <= 0 || *batchSize < 1 || *concurrency < 1 || *interval <= 0 {
		return errors.New("-rate, -batch, -concurrency and -interval must be positive")
	}
	d, removeDir, err := scratchDir(*dir, "bridge-soak-")
	if err != nil {
		return err
	}
	defer removeDir()
	*dir = d
	jimoURL, stopJimo, err := instantJimo()
	if err != nil {
		return err
	}
	defer stopJimo()
	const writeKey = "soak-write-key"
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(writeKey+":"))
	cfgArgs := []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(*dir, "bridge.db"),
		"-segment-write-keys", writeKey, "-admin-password", "soak", "-jimo-api-key", "soak", "-jimo-endpoint", jimoURL}
	if walLimit > 0 {
		cfgArgs = append(cfgArgs, "-wal-limit", strconv.FormatInt(int64(walLimit), 10))
	}
	cfg, err := parseConfig("soak", cfgArgs, func(string) string { return "" }, io.Discard)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := newApp(ctx, cfg, logger, io.Discard)
	if err != nil {
		return err
	}
	defer a.store.Close()
	bridgeURL, stopBridge, err := listen(a.echo)
	if err != nil {
		return err
	}
	defer stopBridge()
	outboxCtx, stopOutbox := context.WithCancel(ctx)
	outboxDone := a.runOutbox(outboxCtx, logger)
	defer func() { stopOutbox(); <-outboxDone }()

	// People identified before come back: known grows as new people are acknowledged.
	var knownMu sync.Mutex
	var known []person
	next := func() (person, bool) {
		knownMu.Lock()
		defer knownMu.Unlock()
		if len(known) > 0 && rand.Float64() < *returning {
			return known[rand.IntN(len(known))], false
		}
		return newPerson(), true
	}
	remember := func(ps []person) {
		knownMu.Lock()
		defer knownMu.Unlock()
		for _, p := range ps {
			if len(known) < 100000 {
				known = append(known, p)
			} else {
				known[rand.IntN(len(known))] = p
			}
		}
	}
	url := bridgeURL + "/v1/identify"
	if *batchSize > 1 {
		url = bridgeURL + "/v1/batch"
	}
	body := func() ([]byte, []person) {
		var fresh []person
		events := make([][]byte, *batchSize)
		for i := range events {
			p, isNew := next()
			if isNew {
				fresh = append(fresh, p)
			}
			events[i], _ = identifyEvent(p)
		}
		if *batchSize == 1 {
			return events[0], fresh
		}
		return []byte(`{"batch":[` + string(joinBytes(events)) + `]}`), fresh
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency * 2}}
	limiter := rate.NewLimiter(rate.Limit(*perSecond), max(*batchSize, int(*perSecond/10)))
	loadCtx, stopLoad := context.WithTimeout(ctx, *duration)
	defer stopLoad()
	var acked, failed atomic.Int64
	var wg sync.WaitGroup
	for range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for limiter.WaitN(loadCtx, *batchSize) == nil {
				b, fresh := body()
				if err := post(loadCtx, client, url, auth, b); err != nil {
					if loadCtx.Err() == nil {
						failed.Add(int64(*batchSize))
					}
					continue
				}
				acked.Add(int64(*batchSize))
				remember(fresh)
			}
		}()
	}

	fmt.Fprintf(stdout, "bridge soak: %.0f events/s offered for %s, %d per request, %.0f%% returning people, %d clients; log bound %.0f MiB\n\n",
		*perSecond, *duration, *batchSize, 100**returning, *concurrency, mib(int64(cfg.WALLimit)))
	fmt.Fprintf(stdout, "%8s %10s %9s %10s %9s %9s %9s %9s %9s\n", "elapsed", "acked", "failed", "acked/s", "log MiB", "peak MiB", "db MiB", "RSS MiB", "backlog")
	start := time.Now()
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	var maxRSS, maxBacklog int64
	var lastAcked int64
	last := start
	report := func() {
		st := a.store.Stats()
		rss := residentBytes()
		maxRSS = max(maxRSS, rss)
		backlog := int64(0)
		if bs, err := a.store.Backlogs(ctx); err == nil {
			for _, b := range bs {
				backlog += int64(b.Pending)
			}
		}
		maxBacklog = max(maxBacklog, backlog)
		var db int64
		if fi, err := os.Stat(cfg.DB); err == nil {
			db = fi.Size()
		}
		now, n := time.Now(), acked.Load()
		fmt.Fprintf(stdout, "%8s %10d %9d %10.0f %9.1f %9.1f %9.1f %9.1f %9d\n", now.Sub(start).Round(time.Second), n, failed.Load(),
			float64(n-lastAcked)/now.Sub(last).Seconds(), mib(st.WALBytes), mib(st.WALPeak), mib(db), mib(rss), backlog)
		lastAcked, last = n, now
	}
loop:
	for {
		select {
		case <-tick.C:
			report()
		case <-loadCtx.Done():
			break loop
		}
	}
	wg.Wait()
	report()
	st := a.store.Stats()
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "\nin all: %d events acknowledged (%.0f/s), %d failed; log peak %.1f MiB (bound %.0f MiB, %d checkpoints by the writer); "+
		"RSS peak %.1f MiB (sampled), %.1f MiB (kernel high-water mark); backlog peak %d jobs\n",
		acked.Load(), float64(acked.Load())/elapsed.Seconds(), failed.Load(), mib(st.WALPeak), mib(st.WALLimit), st.Checkpoints,
		mib(maxRSS), mib(peakResidentBytes()), maxBacklog)
	if st.Unavailable != "" {
		fmt.Fprintf(stdout, "the store could not store at the end: %s since %s\n", st.Unavailable, st.UnavailableSince.Format(time.RFC3339))
	}
	return nil
}

func joinBytes(parts [][]byte) []byte {
	var n int
	for _, p := range parts {
		n += len(p) + 1
	}
	out := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, p...)
	}
	return out
}

// residentBytes and peakResidentBytes read the process's resident memory,
// now (VmRSS) and its high-water mark (VmHWM), from /proc; 0 where there is none.
func residentBytes() int64     { return procStatus("VmRSS:") }
func peakResidentBytes() int64 { return procStatus("VmHWM:") }

func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
