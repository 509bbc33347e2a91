package jimo

import (
	"math"
	"sync"
	"time"
)

// RateLimit configures the per-client-IP token bucket of POST /jimo/session.
// Zero fields mean the defaults (10 requests a second, bursts of 20); a
// negative PerSecond turns the limit off.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

func (r RateLimit) withDefaults() RateLimit {
	if r.PerSecond == 0 {
		r.PerSecond = 10
	}
	if r.Burst <= 0 {
		r.Burst = 20
	}
	return r
}

// limiter is a token bucket per key. It keeps state only for keys seen
// recently: a bucket that has refilled completely is forgotten.
type limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(cfg RateLimit, now func() time.Time) *limiter {
	cfg = cfg.withDefaults()
	if cfg.PerSecond < 0 {
		return nil
	}
	return &limiter{rate: cfg.PerSecond, burst: float64(cfg.Burst), now: now, buckets: map[string]*bucket{}}
}

// allow takes one token from key's bucket. When none is left it returns
// false and how long until one is.
func (l *limiter) allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	if elapsed := now.Sub(b.at).Seconds(); elapsed > 0 {
		b.tokens = math.Min(l.burst, b.tokens+elapsed*l.rate)
	}
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// sweep forgets full buckets, at most once a minute.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.at) >= full {
			delete(l.buckets, k)
		}
	}
}
