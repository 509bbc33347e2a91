package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"time"
)

// metrics holds the bridge's counters and histograms and writes them in the
// Prometheus text format. It is small on purpose: a few families, labels as
// sorted key=value strings.
type metrics struct {
	mu         sync.Mutex
	counters   map[string]map[string]float64 // family -> labels -> value
	histograms map[string]map[string]*histogram
	gauges     []gaugeFunc
	help       map[string]string
}

type gaugeFunc struct {
	name, help string
	read       func() map[string]float64 // labels -> value
}

type histogram struct {
	bounds []float64
	counts []uint64
	sum    float64
	count  uint64
}

func newMetrics() *metrics {
	return &metrics{
		counters:   map[string]map[string]float64{},
		histograms: map[string]map[string]*histogram{},
		help:       map[string]string{},
	}
}

// labels renders label pairs ("route", "/v1/batch", ...) as a Prometheus label set.
func labels(kv ...string) string {
	if len(kv) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", kv[i], kv[i+1])
	}
	b.WriteByte('}')
	return b.String()
}

func (m *metrics) describe(name, help string) {
	m.mu.Lock()
	m.help[name] = help
	m.mu.Unlock()
}

func (m *metrics) add(name string, v float64, kv ...string) {
	l := labels(kv...)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counters[name] == nil {
		m.counters[name] = map[string]float64{}
	}
	m.counters[name][l] += v
}

var (
	latencyBounds = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	sizeBounds    = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}
)

func (m *metrics) observe(name string, bounds []float64, v float64, kv ...string) {
	l := labels(kv...)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.histograms[name] == nil {
		m.histograms[name] = map[string]*histogram{}
	}
	h := m.histograms[name][l]
	if h == nil {
		h = &histogram{bounds: bounds, counts: make([]uint64, len(bounds))}
		m.histograms[name][l] = h
	}
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.count++
}

// sum adds up the values of a counter family whose label sets contain every part.
func (m *metrics) sum(name string, parts ...string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var total float64
	for l, v := range m.counters[name] {
		match := true
		for _, p := range parts {
			match = match && strings.Contains(l, p)
		}
		if match {
			total += v
		}
	}
	return total
}

// gauge registers a family whose values are read when metrics are written.
func (m *metrics) gauge(name, help string, read func() map[string]float64) {
	m.mu.Lock()
	m.gauges = append(m.gauges, gaugeFunc{name, help, read})
	m.mu.Unlock()
}

// Committed implements mapping.CommitObserver.
func (m *metrics) Committed(messages int, took time.Duration, err error) {
	if err != nil {
		m.add("bridge_commit_errors_total", 1)
		return
	}
	m.observe("bridge_commit_messages", sizeBounds, float64(messages))
	m.observe("bridge_commit_seconds", latencyBounds, took.Seconds())
}

// commitStats sums the group commits so far: how many, the messages they held, the time they took.
type commitStats struct {
	commits  uint64
	messages float64
	seconds  float64
}

func (m *metrics) commits() commitStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	var c commitStats
	if h := m.histograms["bridge_commit_messages"][""]; h != nil {
		c.commits, c.messages = h.count, h.sum
	}
	if h := m.histograms["bridge_commit_seconds"][""]; h != nil {
		c.seconds = h.sum
	}
	return c
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

// Delivered implements mapping.DeliveryObserver.
func (m *metrics) Delivered(destination, result string, attempt int) {
	m.add("bridge_deliveries_total", 1, "destination", destination, "result", result)
	m.observe("bridge_delivery_attempts", sizeBounds, float64(attempt), "destination", destination)
}

func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	gauges := append([]gaugeFunc(nil), m.gauges...)
	var b strings.Builder
	for _, name := range sortedKeys(m.counters) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", name, m.help[name], name)
		series := m.counters[name]
		for _, l := range sortedKeys(series) {
			fmt.Fprintf(&b, "%s%s %g\n", name, l, series[l])
		}
	}
	for _, name := range sortedKeys(m.histograms) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s histogram\n", name, m.help[name], name)
		series := m.histograms[name]
		for _, l := range sortedKeys(series) {
			h := series[l]
			inner := strings.TrimSuffix(strings.TrimPrefix(l, "{"), "}")
			if inner != "" {
				inner += ","
			}
			for i, bound := range h.bounds {
				fmt.Fprintf(&b, "%s_bucket{%sle=\"%g\"} %d\n", name, inner, bound, h.counts[i])
			}
			fmt.Fprintf(&b, "%s_bucket{%sle=\"+Inf\"} %d\n%s_sum%s %g\n%s_count%s %d\n", name, inner, h.count, name, l, h.sum, name, l, h.count)
		}
	}
	m.mu.Unlock()
	for _, g := range gauges {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", g.name, g.help, g.name)
		values := g.read()
		for _, l := range sortedKeys(values) {
			v := values[l]
			if math.IsNaN(v) {
				continue
			}
			fmt.Fprintf(&b, "%s%s %g\n", g.name, l, v)
		}
	}
	io.WriteString(w, b.String())
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
