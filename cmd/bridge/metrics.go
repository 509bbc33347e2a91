package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/bridgeworks/bridge/mapping/outbox"
	"github.com/bridgeworks/bridge/mapping/store"
)

// metrics are the bridge's Prometheus metrics on a registry of their own,
// built by newMetrics in newApp (nothing is global), beside the Go runtime and
// process collectors. Every label value comes from a small fixed set (route
// templates, status codes, sources, reasons, rules, destinations, results),
// never from a payload. To add a metric: a field here, its definition and
// registration in newMetrics, and a line in the README's Operating section.
type metrics struct {
	registry *prometheus.Registry

	// HTTP (observe.go).
	requests       *prometheus.CounterVec   // route, status
	requestSeconds *prometheus.HistogramVec // route
	refusals       *prometheus.CounterVec   // reason

	// Decoding and storing (segment.Metrics and countingStore).
	eventsReceived    *prometheus.CounterVec // source
	requestsRejected  *prometheus.CounterVec // source, reason
	messagesStored    *prometheus.CounterVec // source
	messagesDuplicate *prometheus.CounterVec // source
	messagesRejected  *prometheus.CounterVec // source, reason
	rulesFired        *prometheus.CounterVec // rule
	messageNotes      *prometheus.CounterVec // source, note

	// Group commits (store.CommitObserver).
	commitMessages prometheus.Histogram
	commitSeconds  prometheus.Histogram
	commitErrors   prometheus.Counter

	// Outbox deliveries (outbox.DeliveryObserver); the backlog gauges are outboxCollector's.
	deliveries       *prometheus.CounterVec   // destination, result
	deliveryAttempts *prometheus.HistogramVec // destination
}

var (
	latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	sizeBuckets    = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}
)

// newMetrics builds a registry holding the Go runtime and process collectors
// and every bridge metric. The outbox gauges are added by registerOutbox once
// the store exists.
func newMetrics() *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	}
	m := &metrics{
		registry: prometheus.NewRegistry(),

		requests:       counter("bridge_http_requests_total", "HTTP requests by route template and status.", "route", "status"),
		requestSeconds: histogram("bridge_http_request_seconds", "HTTP request latency by route template.", latencyBuckets, "route"),
		refusals: counter("bridge_refusals_total",
			"Requests refused, by reason (write_key, signature, cors, rate_limit, admin_login, api_password, csrf, unauthorized, forbidden).", "reason"),

		eventsReceived:    counter("bridge_events_received_total", "Events decoded, by source.", "source"),
		requestsRejected:  counter("bridge_requests_rejected_total", "Requests or events refused at decoding, by source and reason.", "source", "reason"),
		messagesStored:    counter("bridge_messages_stored_total", "Messages committed, by source.", "source"),
		messagesDuplicate: counter("bridge_messages_duplicate_total", "Messages already stored (same source and message ID), by source.", "source"),
		messagesRejected:  counter("bridge_messages_rejected_total", "Messages stored but not applied, by source and reason.", "source", "reason"),
		rulesFired:        counter("bridge_rules_fired_total", "Identity rules that fired (refused values, conflicts, caps, impersonation).", "rule"),
		messageNotes:      counter("bridge_message_notes_total", "Messages stored with a decoding note (for example an unreadable timestamp), by source and note.", "source", "note"),

		commitMessages: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bridge_commit_messages", Help: "Messages per group commit.", Buckets: sizeBuckets}),
		commitSeconds:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bridge_commit_seconds", Help: "Group commit latency.", Buckets: latencyBuckets}),
		commitErrors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "bridge_commit_errors_total", Help: "Group commits that failed."}),

		deliveries:       counter("bridge_deliveries_total", "Outbox delivery attempts by destination and result (done, retry, dead, released).", "destination", "result"),
		deliveryAttempts: histogram("bridge_delivery_attempts", "Attempt number of each delivery, by destination.", sizeBuckets, "destination"),
	}
	for _, r := range refusalReasons {
		m.refusals.WithLabelValues(r) // every reason reads 0 before its first refusal
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestSeconds, m.refusals,
		m.eventsReceived, m.requestsRejected, m.messagesStored, m.messagesDuplicate, m.messagesRejected, m.rulesFired, m.messageNotes,
		m.commitMessages, m.commitSeconds, m.commitErrors,
		m.deliveries, m.deliveryAttempts,
	)
	return m
}

// handler serves the registry in the Prometheus exposition format. A
// collector that fails is logged and left out; the rest is still served.
func (m *metrics) handler(logger *slog.Logger) echo.HandlerFunc {
	return echo.WrapHandler(promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
}

// Committed implements store.CommitObserver.
func (m *metrics) Committed(messages int, took time.Duration, err error) {
	if err != nil {
		m.commitErrors.Inc()
		return
	}
	m.commitMessages.Observe(float64(messages))
	m.commitSeconds.Observe(took.Seconds())
}

// Delivered implements outbox.DeliveryObserver.
func (m *metrics) Delivered(destination, result string, attempt int) {
	m.deliveries.WithLabelValues(destination, result).Inc()
	m.deliveryAttempts.WithLabelValues(destination).Observe(float64(attempt))
}

// current returns the value of one counter or histogram series (for a
// histogram: its count and sum).
func current(c prometheus.Metric) (value, sum float64) {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return 0, 0 // a counter or histogram of ours always writes
	}
	if h := d.GetHistogram(); h != nil {
		return float64(h.GetSampleCount()), h.GetSampleSum()
	}
	return d.GetCounter().GetValue(), 0
}

// commitStats sums the group commits so far: how many, the messages they held, the time they took.
type commitStats struct {
	commits  uint64
	messages float64
	seconds  float64
}

func (m *metrics) commits() commitStats {
	n, messages := current(m.commitMessages)
	_, seconds := current(m.commitSeconds)
	return commitStats{uint64(n), messages, seconds}
}

func (c commitStats) since(before commitStats) commitStats {
	return commitStats{c.commits - before.commits, c.messages - before.messages, c.seconds - before.seconds}
}

func (c commitStats) plus(o commitStats) commitStats {
	return commitStats{c.commits + o.commits, c.messages + o.messages, c.seconds + o.seconds}
}

func (c commitStats) String() string {
	if c.commits == 0 {
		return "none"
	}
	n := float64(c.commits)
	return fmt.Sprintf("%d, %.0f messages and %.1f ms each on average", c.commits, c.messages/n, 1000*c.seconds/n)
}

// outboxCollector reports the outbox per destination: jobs waiting or in
// flight, dead jobs, and the age of the oldest waiting job. All three come
// from one read of the store per scrape.
type outboxCollector struct {
	backlogs func(context.Context) ([]store.Backlog, error)
	now      func() time.Time
	logger   *slog.Logger

	backlog, dead, oldest *prometheus.Desc
}

// registerOutbox adds the outbox gauges, read from backlogs at each scrape.
func (m *metrics) registerOutbox(backlogs func(context.Context) ([]store.Backlog, error), now func() time.Time, logger *slog.Logger) {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"destination"}, nil)
	}
	m.registry.MustRegister(&outboxCollector{
		backlogs: backlogs, now: now, logger: logger,
		backlog: desc("bridge_outbox_backlog", "Outbox jobs waiting or in flight, by destination."),
		dead:    desc("bridge_outbox_dead_jobs", "Outbox jobs that failed for good and wait for an operator, by destination."),
		oldest:  desc("bridge_outbox_oldest_job_seconds", "Age of the oldest waiting outbox job, by destination (0 with none waiting)."),
	})
}

// Describe implements prometheus.Collector.
func (o *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- o.backlog
	ch <- o.dead
	ch <- o.oldest
}

// Collect implements prometheus.Collector: one read of the store, three
// gauges per destination. When the read fails it logs and reports nothing.
func (o *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bs, err := o.backlogs(ctx)
	if err != nil {
		o.logger.Warn("read outbox backlog for metrics", "err", err)
		return
	}
	now := o.now()
	for _, b := range bs {
		var age float64
		if !b.Oldest.IsZero() {
			age = now.Sub(b.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(o.backlog, prometheus.GaugeValue, float64(b.Pending), b.Destination)
		ch <- prometheus.MustNewConstMetric(o.dead, prometheus.GaugeValue, float64(b.Dead), b.Destination)
		ch <- prometheus.MustNewConstMetric(o.oldest, prometheus.GaugeValue, age, b.Destination)
	}
}

// pausedCollector reports, per destination, 1 while the outbox has paused its
// deliveries after repeated failures (it is being probed), else 0. The state
// lives in the outbox of this process.
type pausedCollector struct {
	destinations func() []outbox.DestinationStatus
	paused       *prometheus.Desc
}

// registerPaused adds bridge_outbox_paused, read from destinations at each scrape.
func (m *metrics) registerPaused(destinations func() []outbox.DestinationStatus) {
	m.registry.MustRegister(&pausedCollector{destinations: destinations, paused: prometheus.NewDesc("bridge_outbox_paused",
		"1 while a destination's deliveries are paused after repeated failures (it is being probed), by destination.", []string{"destination"}, nil)})
}

// Describe implements prometheus.Collector.
func (p *pausedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- p.paused }

// Collect implements prometheus.Collector.
func (p *pausedCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range p.destinations() {
		v := 0.0
		if d.Paused {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(p.paused, prometheus.GaugeValue, v, d.Destination)
	}
}

// storeCollector reports the store's own figures at each scrape: the
// write-ahead log's size, peak and bound, the checkpoints that bound it, and
// whether (and for how long) the store cannot store, by reason, with the
// writes it refused meanwhile.
type storeCollector struct {
	stats                                  func() store.Stats
	wal, checkpoints, unavailable, refused *prometheus.Desc
}

// storeReasons are the reasons the store can be unable to store.
var storeReasons = []string{store.ReasonDiskFull, store.ReasonLocked, store.ReasonOverloaded, store.ReasonFileReplaced, store.ReasonSyncFailed}

// registerStore adds the store's figures, read from stats at each scrape.
func (m *metrics) registerStore(stats func() store.Stats) {
	m.registry.MustRegister(&storeCollector{
		stats: stats,
		wal: prometheus.NewDesc("bridge_wal_bytes",
			"Size of the SQLite write-ahead log: now (state=current), largest since start (state=peak), and its bound (state=limit).", []string{"state"}, nil),
		checkpoints: prometheus.NewDesc("bridge_wal_checkpoints_total", "Checkpoints the writer ran to keep the write-ahead log under its bound.", nil, nil),
		unavailable: prometheus.NewDesc("bridge_store_unavailable_seconds", "How long the store has been unable to store, by reason (0: it can).", []string{"reason"}, nil),
		refused:     prometheus.NewDesc("bridge_store_refused_total", "Writes answered 503 because the store could not store, by reason, since start.", []string{"reason"}, nil),
	})
}

// Describe implements prometheus.Collector.
func (s *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.wal
	ch <- s.checkpoints
	ch <- s.unavailable
	ch <- s.refused
}

// Collect implements prometheus.Collector.
func (s *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.stats()
	ch <- prometheus.MustNewConstMetric(s.wal, prometheus.GaugeValue, float64(st.WALBytes), "current")
	ch <- prometheus.MustNewConstMetric(s.wal, prometheus.GaugeValue, float64(st.WALPeak), "peak")
	ch <- prometheus.MustNewConstMetric(s.wal, prometheus.GaugeValue, float64(st.WALLimit), "limit")
	ch <- prometheus.MustNewConstMetric(s.checkpoints, prometheus.CounterValue, float64(st.Checkpoints))
	for _, r := range storeReasons {
		var since float64
		if st.Unavailable == r {
			since = time.Since(st.UnavailableSince).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(s.unavailable, prometheus.GaugeValue, since, r)
		ch <- prometheus.MustNewConstMetric(s.refused, prometheus.CounterValue, float64(st.Refused[r]), r)
	}
}
