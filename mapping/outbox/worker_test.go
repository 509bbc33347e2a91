package outbox

import (
	"errors"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		jitter     float64
		want       time.Duration
	}{
		{"first, no jitter", 1, 0, 0, 500 * time.Millisecond},
		{"first, full jitter", 1, 0, 0.999999, time.Second - time.Microsecond},
		{"grows", 4, 0, 0, 4 * time.Second},
		{"capped", 30, 0, 1, 15 * time.Minute},
		{"retry-after wins", 1, 30 * time.Second, 0, 30 * time.Second},
		{"retry-after capped", 1, 5 * time.Hour, 0, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Backoff(tt.attempt, tt.retryAfter, tt.jitter)
			if got.Round(time.Millisecond) != tt.want.Round(time.Millisecond) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		err     error
		attempt int
		want    string
	}{
		{"delivered", nil, 1, ResultDone},
		{"network error retries", errors.New("connection refused"), 1, ResultRetry},
		{"5xx retries", ClassifyStatus(503, 0, errors.New("503")), 3, ResultRetry},
		{"4xx is dead", ClassifyStatus(400, 0, errors.New("400 bad request")), 1, ResultDead},
		{"429 retries", ClassifyStatus(429, time.Minute, errors.New("429")), 1, ResultRetry},
		{"too many attempts", errors.New("timeout"), 5, ResultDead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.err, tt.attempt, 5, now, 0.5)
			if got.Result != tt.want {
				t.Errorf("got result %s, want %s (%+v)", got.Result, tt.want, got)
			}
			if got.Result == ResultRetry && !got.RunAt.After(now) {
				t.Errorf("got run_at %v, want after %v", got.RunAt, now)
			}
		})
	}
}
