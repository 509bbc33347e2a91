package segment

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit bounds the events accepted on the Tracking API per write key and
// client IP. The zero value means no limit.
type RateLimit struct {
	// PerSecond is the sustained rate, in events per second; 0 (or less) means no limit.
	PerSecond float64
	// Burst is how many events may arrive at once; 0 means one second's worth (at least 1).
	// A request never costs more than Burst, so a batch larger than Burst is
	// accepted whenever the bucket is full and empties it.
	Burst int
}

// limiter keeps a token bucket (golang.org/x/time/rate) per write key and
// client IP. Buckets that have refilled completely are dropped, since a new
// bucket starts full: the map holds only pairs seen recently.
type limiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[limiterKey]*rate.Limiter
	lastSweep time.Time
	sweepAt   int // sweep when the map grows to this size
}

type limiterKey struct{ writeKey, ip string }

// sweepEvery is how often full buckets are dropped (also whenever the map
// has doubled since the last sweep).
const sweepEvery = time.Minute

// newLimiter returns nil (no limit) when l.PerSecond is not positive.
func newLimiter(l RateLimit) *limiter {
	if !(l.PerSecond > 0) {
		return nil
	}
	burst := l.Burst
	if burst <= 0 {
		burst = max(1, int(l.PerSecond))
	}
	return &limiter{limit: rate.Limit(l.PerSecond), burst: burst, buckets: map[limiterKey]*rate.Limiter{}, sweepAt: 1024}
}

// take charges n events (at most the burst) to the write key and client IP
// at now. It returns 0 when they are accepted, or else how long until they
// would be; a refused request costs nothing.
func (l *limiter) take(writeKey, ip string, n int, now time.Time) time.Duration {
	if l == nil || n == 0 {
		return 0
	}
	need := min(n, l.burst)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	k := limiterKey{writeKey, ip}
	b := l.buckets[k]
	if b == nil {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[k] = b
	}
	if b.AllowN(now, need) {
		return 0
	}
	missing := float64(need) - b.TokensAt(now)
	return max(time.Nanosecond, time.Duration(missing/float64(l.limit)*float64(time.Second)))
}

// sweep drops the buckets that are full at now; l.mu must be held.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery && len(l.buckets) < l.sweepAt {
		return
	}
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
	l.lastSweep = now
	l.sweepAt = max(1024, 2*len(l.buckets))
}
