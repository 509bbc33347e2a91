package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/admin"
	"github.com/bridgeworks/bridge/mapping/store"
	"github.com/bridgeworks/bridge/segment"
)

// observeRequests counts requests by route template and status, hands
// refusals to refused, and logs requests (path only: query strings may hold
// secrets) at debug level, or at warn when the bridge answered 5xx.
func observeRequests(m *metrics, refused *refusals, logger *slog.Logger) echo.MiddlewareFunc {
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
			m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
			m.requestSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
			refused.observe(c, route, status, err)
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

// Reasons a request is refused: the label values of bridge_refusals_total.
const (
	refusedWriteKey     = "write_key"    // Tracking API or webhook without an accepted write key
	refusedSignature    = "signature"    // session report or webhook whose signature or secret does not verify
	refusedCORS         = "cors"         // session report from an origin not in BRIDGE_ALLOWED_ORIGINS
	refusedRateLimit    = "rate_limit"   // over a rate limit or a login lockout (429)
	refusedAdminLogin   = "admin_login"  // admin sign-in with a wrong password
	refusedAPIPassword  = "api_password" // /api/v1 call without the right admin password
	refusedCSRF         = "csrf"         // admin form without its security token
	refusedUnauthorized = "unauthorized" // any other 401
	refusedForbidden    = "forbidden"    // any other 403
)

var refusalReasons = []string{refusedWriteKey, refusedSignature, refusedCORS, refusedRateLimit,
	refusedAdminLogin, refusedAPIPassword, refusedCSRF, refusedUnauthorized, refusedForbidden}

// refusalReason says why a request to route that was answered status was
// refused, or "" when it was not refused. It decides from the route template
// and the status alone, so it covers handlers that render their refusal
// themselves as well as those that return an error. sharedSecret says
// whether Segment webhooks authenticate by signature rather than write key.
func refusalReason(route string, status int, sharedSecret bool) string {
	switch status {
	case http.StatusTooManyRequests:
		return refusedRateLimit
	case http.StatusForbidden:
		switch {
		case route == "/jimo/session":
			return refusedCORS
		case strings.HasPrefix(route, "/admin/"):
			return refusedCSRF
		}
		return refusedForbidden
	case http.StatusUnauthorized:
		switch {
		case route == "/v1/:call", route == "/segment/webhook" && !sharedSecret:
			return refusedWriteKey
		case route == "/segment/webhook", route == "/jimo/session", route == "/jimo/webhook":
			return refusedSignature
		case route == "/admin/login":
			return refusedAdminLogin
		case strings.HasPrefix(route, "/api/v1/"):
			return refusedAPIPassword
		}
		return refusedUnauthorized
	}
	return ""
}

// refusals counts every refused request in bridge_refusals_total and logs
// it at warn level, at most once per interval per reason: each line carries
// the number of refusals with its reason left unlogged since the previous
// one ("suppressed"). Lines hold the route template, never the path's query
// or a credential.
type refusals struct {
	m            *metrics
	logger       *slog.Logger
	now          func() time.Time
	sharedSecret bool
	byReason     map[string]*refusalLog // fixed at construction: read without a lock
}

type refusalLog struct {
	limiter    *rate.Limiter
	suppressed atomic.Int64
}

// newRefusals logs at most one line per reason per interval; an interval of
// 0 logs every refusal.
func newRefusals(m *metrics, logger *slog.Logger, now func() time.Time, interval time.Duration, sharedSecret bool) *refusals {
	r := &refusals{m: m, logger: logger, now: now, sharedSecret: sharedSecret, byReason: map[string]*refusalLog{}}
	limit := rate.Inf
	if interval > 0 {
		limit = rate.Every(interval)
	}
	for _, reason := range refusalReasons {
		r.byReason[reason] = &refusalLog{limiter: rate.NewLimiter(limit, 1)}
	}
	return r
}

// observe counts and perhaps logs the request if it was refused. err is what
// the handler returned: a *mapping.Error's message (written for clients, so
// free of secrets) is logged as its detail.
func (r *refusals) observe(c echo.Context, route string, status int, err error) {
	reason := refusalReason(route, status, r.sharedSecret)
	if reason == "" {
		return
	}
	r.m.refusals.WithLabelValues(reason).Inc()
	l := r.byReason[reason]
	if !l.limiter.AllowN(r.now(), 1) {
		l.suppressed.Add(1)
		return
	}
	attrs := []slog.Attr{
		slog.String("reason", reason), slog.String("method", c.Request().Method), slog.String("route", route),
		slog.Int("status", status), slog.String("client_ip", c.RealIP()),
		slog.Int64("suppressed", l.suppressed.Swap(0)),
	}
	var me *mapping.Error
	if errors.As(err, &me) {
		attrs = append(attrs, slog.String("detail", me.Message))
	}
	r.logger.LogAttrs(c.Request().Context(), slog.LevelWarn, "request refused", attrs...)
}

// countingStore counts what the store did with each submitted message.
type countingStore struct {
	*store.Store
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
			s.m.messagesDuplicate.WithLabelValues(source).Inc()
		case msgs[i].Rejected != "":
			s.m.messagesStored.WithLabelValues(source).Inc()
			s.m.messagesRejected.WithLabelValues(source, msgs[i].Rejected).Inc()
		default:
			s.m.messagesStored.WithLabelValues(source).Inc()
		}
		if r.Duplicate {
			continue
		}
		// A receipt's notes start with the message's decoding notes (see
		// mapping.Receipt); the rest are the identity rules that fired.
		decoding := min(len(msgs[i].Notes), len(r.Notes))
		for _, n := range r.Notes[:decoding] {
			s.m.messageNotes.WithLabelValues(source, noteOf(n)).Inc()
		}
		for _, n := range r.Notes[decoding:] {
			s.m.rulesFired.WithLabelValues(ruleOf(n)).Inc()
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
	s.m.eventsReceived.WithLabelValues(string(source)).Add(float64(n))
}

func (s segmentMetrics) Rejected(source mapping.Source, reason string) {
	s.m.requestsRejected.WithLabelValues(string(source), reason).Inc()
}

// adminCounters are the process counters the admin overview shows as warnings.
func (m *metrics) adminCounters() admin.Counters {
	writeKeys, _ := current(m.refusals.WithLabelValues(refusedWriteKey))
	signatures, _ := current(m.refusals.WithLabelValues(refusedSignature))
	blocked, _ := current(m.rulesFired.WithLabelValues("refused_" + mapping.ReasonBlocked))
	return admin.Counters{SignatureFailures: writeKeys + signatures, BlockedValues: blocked}
}
