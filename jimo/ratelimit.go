package jimo

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit configures the per-client-IP limit of POST /jimo/session
// (golang.org/x/time/rate token buckets). PerSecond 0 (or less) means no
// limit, as everywhere in the bridge; Burst 0 means twice PerSecond, at
// least 1. The buckets live in this process: each replica limits on its own.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// maxClients bounds how many client buckets a limiter keeps; past it, full
// buckets are forgotten first, then arbitrary ones.
const maxClients = 1 << 16

// limiter is a rate.Limiter per key. It keeps state only for keys seen
// recently: a bucket that has refilled completely is forgotten, which
// changes nothing (a new one starts full).
type limiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu        sync.Mutex
	clients   map[string]*rate.Limiter
	lastSweep time.Time
}

// newLimiter returns the limiter of cfg, or nil (no limit) when PerSecond is 0 or less.
func newLimiter(cfg RateLimit, now func() time.Time) *limiter {
	if cfg.PerSecond <= 0 || math.IsNaN(cfg.PerSecond) {
		return nil
	}
	burst := cfg.Burst
	if burst <= 0 {
		burst = max(1, int(math.Ceil(2*cfg.PerSecond)))
	}
	return &limiter{limit: rate.Limit(cfg.PerSecond), burst: burst, now: now, clients: map[string]*rate.Limiter{}}
}

// allow takes one token from key's bucket. When none is left it takes
// nothing and returns false and how long until one is.
func (l *limiter) allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	lim := l.clients[key]
	if lim == nil {
		l.sweep(now)
		lim = rate.NewLimiter(l.limit, l.burst)
		l.clients[key] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now)
		return false, wait
	}
	return true, 0
}

// sweep forgets full buckets, at most once a minute unless the map is full;
// if it is still full, it forgets arbitrary ones. Callers hold l.mu.
func (l *limiter) sweep(now time.Time) {
	full := len(l.clients) >= maxClients
	if !full && now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, lim := range l.clients {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.clients, k)
		}
	}
	for k := range l.clients {
		if len(l.clients) < maxClients {
			break
		}
		delete(l.clients, k)
	}
}
