package main

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/segment"
)

// observeRequests counts requests by route and status and logs them (path
// only: query strings may hold secrets).
func observeRequests(m *metrics, logger *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			status := c.Response().Status
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			m.add("bridge_http_requests_total", 1, "route", route, "status", strconv.Itoa(status))
			m.observe("bridge_http_request_seconds", latencyBounds, time.Since(start).Seconds(), "route", route)
			if status >= 500 || logger.Enabled(c.Request().Context(), slog.LevelDebug) {
				logger.Log(c.Request().Context(), levelFor(status), "request", "method", c.Request().Method, "path", c.Request().URL.Path,
					"status", status, "took_ms", time.Since(start).Milliseconds())
			}
			return nil
		}
	}
}

func levelFor(status int) slog.Level {
	if status >= 500 {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

// countingStore counts what the store did with each submitted message.
type countingStore struct {
	*mapping.Store
	m *metrics
}

func (s countingStore) Submit(ctx context.Context, msgs []mapping.Message) ([]mapping.Receipt, error) {
	receipts, err := s.Store.Submit(ctx, msgs)
	if err != nil {
		return receipts, err
	}
	for i, r := range receipts {
		source := string(msgs[i].Source)
		switch {
		case r.Duplicate:
			s.m.add("bridge_messages_duplicate_total", 1, "source", source)
		case msgs[i].Rejected != "":
			s.m.add("bridge_messages_stored_total", 1, "source", source)
			s.m.add("bridge_messages_rejected_total", 1, "source", source, "reason", msgs[i].Rejected)
		default:
			s.m.add("bridge_messages_stored_total", 1, "source", source)
		}
		for _, n := range r.Notes {
			s.m.add("bridge_rules_fired_total", 1, "rule", ruleOf(n))
		}
		if !r.Duplicate {
			for _, n := range msgs[i].Notes {
				s.m.add("bridge_message_notes_total", 1, "source", source, "note", noteOf(n))
			}
		}
	}
	return receipts, nil
}

// ruleOf reduces a receipt note to a low-cardinality label.
func ruleOf(note string) string {
	switch {
	case strings.Contains(note, "(conflict)"):
		return "conflict"
	case strings.Contains(note, "(over_cap)"):
		return "over_cap"
	case strings.HasPrefix(note, "impersonating"):
		return "impersonating"
	case strings.Contains(note, "refused: "):
		return "refused_" + note[strings.LastIndex(note, " ")+1:]
	case strings.HasPrefix(note, "rejected: "):
		return "rejected"
	case strings.Contains(note, "deleted"):
		return "deleted_identifier"
	}
	return "other"
}

// noteOf reduces a decoding note (mapping.Message.Notes) to a low-cardinality label.
func noteOf(note string) string {
	if strings.HasPrefix(note, segment.NoteUnreadableTimestamp+":") {
		return segment.NoteUnreadableTimestamp
	}
	return "other"
}

// segmentMetrics adapts metrics to segment.Metrics.
type segmentMetrics struct{ m *metrics }

func (s segmentMetrics) Received(source mapping.Source, n int) {
	s.m.add("bridge_events_received_total", float64(n), "source", string(source))
}

func (s segmentMetrics) Rejected(source mapping.Source, reason string) {
	s.m.add("bridge_requests_rejected_total", 1, "source", string(source), "reason", reason)
}

// adminCounters are the process counters the admin overview shows as warnings.
func (a *app) adminCounters() map[string]float64 {
	var signatures float64
	for _, route := range []string{"/segment/webhook", "/jimo/session", "/jimo/webhook", "/v1/:call"} {
		signatures += a.metrics.sum("bridge_http_requests_total", `route="`+route+`"`, `status="401"`)
	}
	return map[string]float64{
		"signature_failures": signatures,
		"blocked_values":     a.metrics.sum("bridge_rules_fired_total", `rule="refused_blocked_value"`),
	}
}

// outboxGauges reports the outbox per destination when metrics are scraped.
func (a *app) outboxGauges(logger *slog.Logger) {
	backlog := func(read func(b mapping.Backlog) float64) func() map[string]float64 {
		return func() map[string]float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			bs, err := a.store.Backlogs(ctx)
			if err != nil {
				logger.Warn("read outbox backlog for metrics", "err", err)
				return nil
			}
			out := map[string]float64{}
			for _, b := range bs {
				out[labels("destination", b.Destination)] = read(b)
			}
			return out
		}
	}
	a.metrics.gauge("bridge_outbox_backlog", "Outbox jobs waiting or in flight, by destination.",
		backlog(func(b mapping.Backlog) float64 { return float64(b.Pending) }))
	a.metrics.gauge("bridge_outbox_dead_jobs", "Outbox jobs that failed for good and wait for an operator, by destination.",
		backlog(func(b mapping.Backlog) float64 { return float64(b.Dead) }))
	a.metrics.gauge("bridge_outbox_oldest_job_seconds", "Age of the oldest waiting outbox job, by destination.",
		backlog(func(b mapping.Backlog) float64 {
			if b.Oldest.IsZero() {
				return 0
			}
			return time.Since(b.Oldest).Seconds()
		}))
}

// describeMetrics gives every metric family its help text.
func describeMetrics(m *metrics) {
	for name, help := range map[string]string{
		"bridge_http_requests_total":      "HTTP requests by route and status.",
		"bridge_http_request_seconds":     "HTTP request latency by route.",
		"bridge_events_received_total":    "Events decoded, by source.",
		"bridge_requests_rejected_total":  "Requests or events refused at decoding, by source and reason.",
		"bridge_messages_stored_total":    "Messages committed, by source.",
		"bridge_messages_duplicate_total": "Messages already stored (same source and message ID), by source.",
		"bridge_messages_rejected_total":  "Messages stored but not applied, by source and reason.",
		"bridge_rules_fired_total":        "Identity rules that fired (refused values, conflicts, caps, impersonation).",
		"bridge_message_notes_total":      "Messages applied with a decoding note (for example an unreadable timestamp), by source and note.",
		"bridge_commit_messages":          "Messages per group commit.",
		"bridge_commit_seconds":           "Group commit latency.",
		"bridge_commit_errors_total":      "Group commits that failed.",
		"bridge_deliveries_total":         "Outbox delivery attempts by destination and result (done, retry, dead, released).",
		"bridge_delivery_attempts":        "Attempt number of each delivery, by destination.",
	} {
		m.describe(name, help)
	}
}
