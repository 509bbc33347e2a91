// Package outbox delivers the jobs the store writes beside the changes that
// cause them, and holds the whole delivery policy, so that retries live in
// one place: what a destination's sender must do (Sender: deliver once,
// never retry), how a failure is classified (DeliveryError, Retryable,
// ClassifyStatus for HTTP answers, ParseRetryAfter), what an attempt leads to
// (Decide, Backoff), and the worker (Outbox) that claims jobs from a Queue
// (the store), sends them, records their outcomes in batches, and pauses and
// probes a destination that keeps failing.
package outbox

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// Sender delivers outbox jobs of one destination. It must not retry: the
// outbox does. A returned error that is a *DeliveryError says whether the
// failure is worth retrying; any other error is treated as transient.
type Sender interface {
	Send(ctx context.Context, job mapping.Job) error
}

// DeliveryError is a failed delivery, classified.
type DeliveryError struct {
	// Permanent is true when a retry cannot succeed (a 4xx other than 408 and 429).
	Permanent bool
	// RetryAfter, when positive, is how long the destination asked us to wait (429 Retry-After).
	RetryAfter time.Duration
	Err        error
}

func (e *DeliveryError) Error() string {
	kind := "transient"
	if e.Permanent {
		kind = "permanent"
	}
	if e.Err == nil {
		return kind + " delivery failure"
	}
	return e.Err.Error()
}

// Unwrap returns the cause.
func (e *DeliveryError) Unwrap() error { return e.Err }

// Retryable reports whether err is worth retrying: true unless it is a permanent *DeliveryError.
func Retryable(err error) bool {
	var d *DeliveryError
	if errors.As(err, &d) {
		return !d.Permanent
	}
	return true
}

// ClassifyStatus turns an HTTP status from a destination into a delivery
// error: nil for 2xx; transient for 408, 429 and 5xx; permanent otherwise.
func ClassifyStatus(status int, retryAfter time.Duration, err error) error {
	switch {
	case status >= 200 && status < 300:
		return nil
	case status == 408 || status == 429 || status >= 500:
		return &DeliveryError{RetryAfter: retryAfter, Err: err}
	default:
		return &DeliveryError{Permanent: true, Err: err}
	}
}

// ParseRetryAfter reads a Retry-After header value: a number of seconds, or an
// HTTP date (taken relative to now). It returns 0 for an absent, malformed,
// negative or past value.
func ParseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(value); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
