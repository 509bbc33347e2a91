package segment

import (
	"math"
	"sync"
	"time"
)

// RateLimit bounds the events accepted per write key on the Tracking API.
// The zero value means no limit.
type RateLimit struct {
	// PerSecond is the sustained rate, in events per second; 0 disables the limit.
	PerSecond float64
	// Burst is how many events may arrive at once; 0 means one second's worth (at least 1).
	Burst int
}

// limiter is a token bucket per write key. Only keys that authenticated reach
// it, so the number of buckets is bounded by the configured write keys.
type limiter struct {
	rate, burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// newLimiter returns nil (no limit) when l.PerSecond is not positive.
func newLimiter(l RateLimit) *limiter {
	if !(l.PerSecond > 0) {
		return nil
	}
	burst := float64(l.Burst)
	if burst <= 0 {
		burst = math.Max(1, l.PerSecond)
	}
	return &limiter{rate: l.PerSecond, burst: burst, buckets: map[string]*bucket{}}
}

// take charges n events to key at now. It returns 0 when they are accepted,
// or how long to wait before they would be. A request larger than the burst
// is accepted once the bucket is full, leaving it in debt, so no batch is
// refused forever.
func (l *limiter) take(key string, n int, now time.Time) time.Duration {
	if l == nil || n == 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = math.Min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.last = now
	}
	need := math.Min(float64(n), l.burst)
	if b.tokens < need {
		return time.Duration((need - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens -= float64(n)
	return 0
}
