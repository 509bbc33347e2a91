package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping/store"
)

// benchResult is one load run: how many events were acknowledged and how long each acknowledgement took.
type benchResult struct {
	name      string
	events    int64
	failures  int64
	elapsed   time.Duration
	latencies []time.Duration
	// walPeak is the largest size the database's write-ahead log reached during the run.
	walPeak int64
}

func (r benchResult) rate() float64 { return float64(r.events) / r.elapsed.Seconds() }

func (r benchResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	return r.latencies[int(p*float64(len(r.latencies)-1))]
}

// runBench drives the bridge and its baselines in the same run and prints
// events/s, p50 and p99 acknowledgement latency, and the ratios:
//   - single-event /v1/identify against a bare Echo handler that reads the body and answers 200,
//     and, to show what any durable endpoint can reach here, against the floor (floorServer);
//   - /v1/batch of 100 events against raw batched inserts into SQLite with the same durability;
//   - with -db, single identifies and batches on PostgreSQL with one replica and with two replicas
//     sharing one database, each against the bridge's own figures on SQLite.
//
// The bridge delivers the jobs its events cause (to a stand-in for Jimo
// answering at once) throughout, as in production, and each bridge run is
// reported with the jobs it left undelivered; before the next run starts,
// delivery catches up (see settle).
func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bridge bench", flag.ContinueOnError)
	fs.SetOutput(stdout)
	duration := fs.Duration("duration", time.Minute, "how long each load run lasts (long enough for the write-ahead log to be checkpointed inside it: steady state)")
	rounds := fs.Int("rounds", 2, "how many times every run is repeated, interleaved with the others")
	known := fs.Int("known", 10000, "how many known people the returning-identify run draws from")
	concurrency := fs.Int("concurrency", 128, "concurrent clients")
	batchSize := fs.Int("batch", 100, "events per /v1/batch request")
	dir := fs.String("dir", "", "directory for the benchmark databases (default: a temporary one)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	pgServer := fs.String("db", "", "measure the bridge on PostgreSQL too, beside SQLite: with one replica, then with two sharing one database and the load; "+
		"every round creates its databases on the server at `URL` (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) and drops them after "+
		"(default: SQLite only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rounds < 1 || *known < 1 {
		return fmt.Errorf("-rounds %d, -known %d: want at least 1 each", *rounds, *known)
	}
	if *pgServer != "" && !store.IsPostgres(*pgServer) {
		return fmt.Errorf("-db %q: want a postgres:// URL", store.Redacted(*pgServer))
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	d, removeDir, err := scratchDir(*dir, "bridge-bench-")
	if err != nil {
		return err
	}
	defer removeDir()
	*dir = d
	// The outbox's figure is the bridge's own: Jimo's stand-in answers at once.
	jimoURL, stopJimo, err := instantJimo()
	if err != nil {
		return err
	}
	defer stopJimo()

	const writeKey = "bench-write-key"
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(writeKey+":"))
	cfg, err := parseConfig("bench", []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(*dir, "bridge.db"),
		"-segment-write-keys", writeKey, "-admin-password", "bench", "-jimo-api-key", "bench", "-jimo-endpoint", jimoURL},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		return err
	}
	logger := slog.New(slog.DiscardHandler)
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

	bareURL, stopBare, err := listen(bareEcho())
	if err != nil {
		return err
	}
	defer stopBare()
	floor, err := openFloor(ctx, filepath.Join(*dir, "floor.db"))
	if err != nil {
		return err
	}
	defer floor.Close()
	floorURL, stopFloor, err := listen(floor.handler())
	if err != nil {
		return err
	}
	defer stopFloor()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency * 2, MaxIdleConns: *concurrency * 4}}
	identifyBody := func() []byte { b, _ := identifyEvent(newPerson()); return b }
	batchOf := func(next func() person) []byte {
		var b bytes.Buffer
		b.WriteString(`{"batch":[`)
		for i := range *batchSize {
			if i > 0 {
				b.WriteByte(',')
			}
			event, _ := identifyEvent(next())
			b.Write(event)
		}
		b.WriteString(`],"sentAt":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`)
		return b.Bytes()
	}
	batchBody := func() []byte { return batchOf(newPerson) }
	// Known people identify again, as most identifies in production do
	// (every page load of a signed-in user): stored once before the rounds.
	people := make([]person, *known)
	// The outbox delivers throughout, as in production: its claims and
	// outcomes share the writer with ingestion, so every run pays for them.
	outboxCtx, stopOutbox := context.WithCancel(ctx)
	outboxDone := a.runOutbox(outboxCtx, logger)
	defer func() { stopOutbox(); <-outboxDone }()
	settleBridge := func() (benchResult, error) { return settle(ctx, a.store, *duration, a.store.Checkpoint) }
	for i := range people {
		people[i] = newPerson()
	}
	for i := 0; i < len(people); i += *batchSize {
		next := i
		body := batchOf(func() person { p := people[next%len(people)]; next++; return p })
		if err := post(ctx, client, bridgeURL+"/v1/batch", auth, body); err != nil {
			return fmt.Errorf("storing the known people: %w", err)
		}
	}
	bridgeWAL := filepath.Join(*dir, "bridge.db-wal")
	returningBody := func() []byte { b, _ := identifyEvent(people[rand.IntN(len(people))]); return b }

	fmt.Fprintf(stdout, "bridge bench: %d clients, %d rounds of %s per run, batches of %d; %d CPUs, GOMAXPROCS %d\n\n",
		*concurrency, *rounds, *duration, *batchSize, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	// Each round runs every measurement once, baselines beside the bridge,
	// so that a slow spell of the machine weighs on a round, not on one side.
	var bareRuns, floorRuns, singleRuns, returningRuns, rawRuns, batchRuns []benchResult
	// On PostgreSQL, indexed by the number of replicas less one.
	var pgSingleRuns, pgBatchRuns [2][]benchResult
	var singleCommits, batchCommits commitStats
	// The jobs each bridge run left for delivery when it ended (0 if delivery kept up).
	var singleLeft, returningLeft, batchLeft []int
	left := func(runs *[]int) error {
		n, err := backlog(ctx, a.store)
		*runs = append(*runs, n)
		return err
	}
	fmt.Fprintf(stdout, "%-6s %11s %14s %14s %14s %11s %14s\n", "round", "bare Echo/s", "floor/s", "identify new/s", "returning/s", "raw rows/s", "batch ev/s")
	for round := 1; round <= *rounds; round++ {
		if _, err := settleBridge(); err != nil {
			return err
		}
		bare := drive(ctx, client, "bare Echo (read body, 200)", []string{bareURL + "/v1/identify"}, auth, identifyBody, 1, *concurrency, *duration)
		peak := sampleWAL(filepath.Join(*dir, "floor.db-wal"))
		floorRun := drive(ctx, client, "floor (one durable row per event)", []string{floorURL + "/v1/identify"}, auth, identifyBody, 1, *concurrency, *duration)
		floorRun.walPeak = peak()
		if _, err := settleBridge(); err != nil {
			return err
		}
		commitsBefore := a.metrics.commits()
		peak = sampleWAL(bridgeWAL)
		single := drive(ctx, client, "bridge /v1/identify", []string{bridgeURL + "/v1/identify"}, auth, identifyBody, 1, *concurrency, *duration)
		single.walPeak = peak()
		if err := left(&singleLeft); err != nil {
			return err
		}
		singleCommits = singleCommits.plus(a.metrics.commits().since(commitsBefore))
		if _, err := settleBridge(); err != nil {
			return err
		}
		peak = sampleWAL(bridgeWAL)
		returning := drive(ctx, client, "bridge /v1/identify, returning", []string{bridgeURL + "/v1/identify"}, auth, returningBody, 1, *concurrency, *duration)
		returning.walPeak = peak()
		if err := left(&returningLeft); err != nil {
			return err
		}
		if _, err := settleBridge(); err != nil {
			return err
		}
		peak = sampleWAL(filepath.Join(*dir, "raw.db-wal"))
		raw, err := rawInserts(ctx, filepath.Join(*dir, "raw.db"), *batchSize, *duration)
		if err != nil {
			return err
		}
		raw.walPeak = peak()
		if _, err := settleBridge(); err != nil {
			return err
		}
		commitsBefore = a.metrics.commits()
		peak = sampleWAL(bridgeWAL)
		batch := drive(ctx, client, fmt.Sprintf("bridge /v1/batch (%d events)", *batchSize), []string{bridgeURL + "/v1/batch"}, auth, batchBody, *batchSize, *concurrency/4+1, *duration)
		batch.walPeak = peak()
		if err := left(&batchLeft); err != nil {
			return err
		}
		batchCommits = batchCommits.plus(a.metrics.commits().since(commitsBefore))
		bareRuns, floorRuns, singleRuns, returningRuns = append(bareRuns, bare), append(floorRuns, floorRun), append(singleRuns, single), append(returningRuns, returning)
		rawRuns, batchRuns = append(rawRuns, raw), append(batchRuns, batch)
		fmt.Fprintf(stdout, "%-6d %11.0f %7.0f (%3.0f%%) %7.0f (%3.0f%%) %7.0f (%3.0f%%) %11.0f %7.0f (%3.0f%%)\n", round, bare.rate(),
			floorRun.rate(), 100*floorRun.rate()/bare.rate(), single.rate(), 100*single.rate()/bare.rate(),
			returning.rate(), 100*returning.rate()/bare.rate(), raw.rate(), batch.rate(), 100*batch.rate()/raw.rate())
		fmt.Fprintf(stdout, "%-6s log peaks (MiB): floor %.1f, identify new %.1f, returning %.1f, raw %.1f, batch %.1f\n", "",
			mib(floorRun.walPeak), mib(single.walPeak), mib(returning.walPeak), mib(raw.walPeak), mib(batch.walPeak))
		fmt.Fprintf(stdout, "%-6s jobs left for delivery at the end of the run: identify new %d, returning %d, batch %d\n", "",
			singleLeft[round-1], returningLeft[round-1], batchLeft[round-1])
		if *pgServer == "" {
			continue
		}
		for i, replicas := range []int{1, 2} {
			pgSingle, pgBatch, err := postgresRuns(ctx, client, *pgServer, replicas, writeKey, auth, jimoURL, identifyBody, batchBody, *batchSize, *concurrency, *duration)
			if err != nil {
				return err
			}
			pgSingleRuns[i], pgBatchRuns[i] = append(pgSingleRuns[i], pgSingle), append(pgBatchRuns[i], pgBatch)
			fmt.Fprintf(stdout, "%-6s PostgreSQL, %s: identify new %.0f/s (%.0f%% of SQLite's), batch %.0f ev/s (%.0f%% of SQLite's)\n", "", replicasName(replicas),
				pgSingle.rate(), 100*pgSingle.rate()/single.rate(), pgBatch.rate(), 100*pgBatch.rate()/batch.rate())
		}
	}
	delivery, err := settleBridge()
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "\nall rounds together:\n(log peak: the largest the database's write-ahead log grew during the runs; the bridge's bound is %.0f MiB)\n%-46s %12s %10s %10s %13s %9s\n",
		mib(int64(cfg.WALLimit)), "run", "events/s", "p50", "p99", "log peak MiB", "failures")
	all := [][]benchResult{bareRuns, floorRuns, singleRuns, returningRuns, rawRuns, batchRuns}
	if *pgServer != "" {
		all = append(all, pgSingleRuns[0], pgBatchRuns[0], pgSingleRuns[1], pgBatchRuns[1])
	}
	for _, runs := range all {
		r := combine(runs)
		fmt.Fprintf(stdout, "%-46s %12.0f %10s %10s %13.1f %9d\n", r.name, r.rate(), r.percentile(0.50).Round(time.Microsecond), r.percentile(0.99).Round(time.Microsecond), mib(r.walPeak), r.failures)
	}
	fmt.Fprintf(stdout, "\ngroup commits during /v1/identify: %s\ngroup commits during /v1/batch:    %s\n", singleCommits, batchCommits)
	fmt.Fprintf(stdout, "\nsingle-event ingest / bare Echo, medians of rounds (target ≥ 25%%):\n")
	fmt.Fprintf(stdout, "  identifies of new people:      %.0f%%\n", medianRatio(singleRuns, bareRuns))
	fmt.Fprintf(stdout, "  identifies of returning people: %.0f%%\n", medianRatio(returningRuns, bareRuns))
	fmt.Fprintf(stdout, "  the floor (one durable row per event, nothing else): %.0f%%\n", medianRatio(floorRuns, bareRuns))
	fmt.Fprintf(stdout, "batched ingest / raw SQLite inserts: median of rounds %.0f%% (target ≥ 75%%)\n", medianRatio(batchRuns, rawRuns))
	if *pgServer != "" {
		fmt.Fprintf(stdout, "bridge on PostgreSQL / bridge on SQLite, medians of rounds:\n")
		fmt.Fprintf(stdout, "  batched ingest, one replica:            %.0f%% (target ≥ 50%%)\n", medianRatio(pgBatchRuns[0], batchRuns))
		fmt.Fprintf(stdout, "  batched ingest, two replicas together:  %.0f%% (target ≥ 100%%)\n", medianRatio(pgBatchRuns[1], batchRuns))
		fmt.Fprintf(stdout, "  identifies of new people, one replica:  %.0f%%\n", medianRatio(pgSingleRuns[0], singleRuns))
		fmt.Fprintf(stdout, "  identifies of new people, two replicas: %.0f%%\n", medianRatio(pgSingleRuns[1], singleRuns))
	}
	fmt.Fprintf(stdout, "outbox delivery to Jimo (fake answering at once), running throughout: most jobs left at the end of a run: identify new %d, returning %d, batch %d;\n"+
		"  after the last run it delivered the %d left in %s\n",
		slices.Max(singleLeft), slices.Max(returningLeft), slices.Max(batchLeft), delivery.events, delivery.elapsed.Round(time.Millisecond))
	return nil
}

// postgresRuns measures the bridge on PostgreSQL with replicas bridges on
// one new database (created on serverURL for these runs, dropped after):
// identifies of new people, then batches of batchSize, with as many
// clients as the SQLite runs, spread evenly over the replicas, each run
// starting once delivery caught up with the last.
func postgresRuns(ctx context.Context, client *http.Client, serverURL string, replicas int, writeKey, auth, jimoURL string,
	identifyBody, batchBody func() []byte, batchSize, concurrency int, d time.Duration) (single, batch benchResult, err error) {
	dbURL, drop, err := createPostgresDB(ctx, serverURL, "bridge_bench_")
	if err != nil {
		return single, batch, err
	}
	defer func() {
		if dropErr := drop(context.Background()); err == nil {
			err = dropErr
		}
	}()
	urls, first, stop, err := benchReplicas(ctx, replicas, dbURL, writeKey, jimoURL)
	if err != nil {
		return single, batch, err
	}
	defer stop()
	with := func(path string) []string {
		out := make([]string, len(urls))
		for i, u := range urls {
			out[i] = u + path
		}
		return out
	}
	settlePostgres := func() error {
		_, err := settle(ctx, first, d, func(ctx context.Context) error { return postgresCheckpoint(ctx, serverURL) })
		return err
	}
	if err := settlePostgres(); err != nil {
		return single, batch, err
	}
	name := "PostgreSQL, " + replicasName(replicas) + ", "
	single = drive(ctx, client, name+"/v1/identify", with("/v1/identify"), auth, identifyBody, 1, concurrency, d)
	if err := settlePostgres(); err != nil {
		return single, batch, err
	}
	batch = drive(ctx, client, fmt.Sprintf("%s/v1/batch (%d events)", name, batchSize), with("/v1/batch"), auth, batchBody, batchSize, concurrency/4+1, d)
	return single, batch, nil
}

// replicasName names a configuration of n replicas: "1 replica", "2 replicas".
func replicasName(n int) string {
	if n == 1 {
		return "1 replica"
	}
	return fmt.Sprintf("%d replicas", n)
}

// combine sums runs of the same measurement into one result.
func combine(runs []benchResult) benchResult {
	out := benchResult{name: runs[0].name}
	for _, r := range runs {
		out.events += r.events
		out.failures += r.failures
		out.elapsed += r.elapsed
		out.latencies = append(out.latencies, r.latencies...)
		out.walPeak = max(out.walPeak, r.walPeak)
	}
	return out
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// sampleWAL samples the size of the write-ahead log at path every 5 ms
// until the returned function is called, which returns the largest seen.
func sampleWAL(path string) func() int64 {
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		var peak int64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if fi, err := os.Stat(path); err == nil {
				peak = max(peak, fi.Size())
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 { close(stop); return <-done }
}

// medianRatio is the median over rounds of a's rate as a percentage of b's in the same round.
func medianRatio(a, b []benchResult) float64 {
	ratios := make([]float64, len(a))
	for i := range a {
		ratios[i] = 100 * a[i].rate() / b[i].rate()
	}
	sort.Float64s(ratios)
	if n := len(ratios); n%2 == 0 {
		return (ratios[n/2-1] + ratios[n/2]) / 2
	}
	return ratios[len(ratios)/2]
}

// settle gives the next run, of length d, the machine to itself: the
// outbox, delivering throughout, catches up with the jobs waiting in s
// (within ten times d and at least a minute, or settle fails), then
// checkpoint copies what the runs left in the database's log out, and what
// the system still holds of any file is written, before the next run
// starts rather than during it. It reports how many jobs were delivered
// while it waited, and how long it waited.
func settle(ctx context.Context, s *store.Store, d time.Duration, checkpoint func(context.Context) error) (benchResult, error) {
	caughtUp, err := catchUp(ctx, s, max(10*d, time.Minute))
	if err != nil {
		return caughtUp, err
	}
	if err := checkpoint(ctx); err != nil {
		return caughtUp, err
	}
	syscall.Sync()
	return caughtUp, nil
}

// backlog counts the jobs waiting for delivery in s, held ones aside.
func backlog(ctx context.Context, s *store.Store) (int, error) {
	bs, err := s.Backlogs(ctx)
	n := 0
	for _, b := range bs {
		n += b.Pending
	}
	return n, err
}

// catchUp waits, for at most limit, until the outbox (running) has
// delivered every job waiting in s, and reports how many it delivered
// meanwhile.
func catchUp(ctx context.Context, s *store.Store, limit time.Duration) (benchResult, error) {
	res := benchResult{name: "outbox delivery"}
	before, err := backlog(ctx, s)
	if err != nil {
		return res, err
	}
	start := time.Now()
	left := before
	for left > 0 {
		if time.Since(start) > limit {
			return res, fmt.Errorf("the outbox did not catch up within %s: %d jobs left of %d", limit, left, before)
		}
		time.Sleep(100 * time.Millisecond) // counting the backlog is not free: look rarely
		if left, err = backlog(ctx, s); err != nil {
			return res, err
		}
	}
	res.elapsed = time.Since(start)
	res.events = int64(before)
	return res, nil
}

// person is whom a benchmark identify is about, with the random IDs real
// clients send: an opaque user ID and a UUID anonymous ID.
type person struct{ userID, anonymousID, email string }

func newPerson() person {
	id := uuid.NewString()
	return person{userID: "u_" + strings.ReplaceAll(id, "-", ""), anonymousID: uuid.NewString(), email: id[:8] + "@example.com"}
}

// identifyEvent is an analytics-go-shaped identify of p with a new UUID
// message ID. It returns the event and its message ID.
func identifyEvent(p person) ([]byte, string) {
	messageID := uuid.NewString()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	return fmt.Appendf(nil, `{"type":"identify","messageId":%q,"userId":%q,"anonymousId":%q,`+
		`"traits":{"email":%q,"plan":"pro","name":"Bench User"},"timestamp":%q,`+
		`"context":{"library":{"name":"analytics-go","version":"3.3.0"}}}`,
		messageID, p.userID, p.anonymousID, p.email, now), messageID
}

func listen(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// post sends one request and fails unless it is acknowledged (200).
func post(ctx context.Context, client *http.Client, url, auth string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body) // read to the end, so that the connection is reused
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, answer)
	}
	return nil
}

// drive posts bodies from concurrency clients for d and records each
// acknowledgement. The clients are spread evenly over urls (replicas of one
// bridge behind a balancer), client i posting to urls[i%len(urls)].
func drive(ctx context.Context, client *http.Client, name string, urls []string, auth string, body func() []byte, eventsPerRequest, concurrency int, d time.Duration) benchResult {
	res := benchResult{name: name}
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := range concurrency {
		url := urls[i%len(urls)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			var events, failures int64
			for time.Now().Before(deadline) && ctx.Err() == nil {
				b := body()
				t := time.Now()
				if err := post(ctx, client, url, auth, b); err != nil {
					failures++
					continue
				}
				local = append(local, time.Since(t))
				events += int64(eventsPerRequest)
			}
			mu.Lock()
			res.latencies = append(res.latencies, local...)
			res.events += events
			res.failures += failures
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// scratchDir returns dir, or, when it is empty, a new temporary directory
// named with prefix; remove deletes what scratchDir created (nothing for dir).
func scratchDir(dir, prefix string) (path string, remove func(), err error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// instantJimo starts a stand-in for Jimo's server-side API that answers 200
// at once, for bench and soak; it returns its URL and what stops it.
func instantJimo() (url string, stop func(), err error) {
	fake := echo.New()
	fake.POST("/sse/webhook", func(c echo.Context) error {
		io.Copy(io.Discard, c.Request().Body)
		return c.NoContent(http.StatusOK)
	})
	return listen(fake)
}
