// Package outboxtest holds what the fake destinations of tests share: the
// failures a destination can show the outbox (status answers, Retry-After,
// hangs, refused connections), settable while a test runs.
package outboxtest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// Faults is the failure behaviour a fake server applies, settable at run
// time. It owns the httptest.Server so that it can stop and resume
// listening. The fake Segment (segmenttest) and Jimo (jimotest) servers share it.
type Faults struct {
	ts   *httptest.Server
	gate *gate

	mu         sync.Mutex
	failStatus int // answer this status to the next failN requests
	failN      int // <0: until Recover
	retryAfter int // Retry-After seconds sent with failStatus 429
	hang       time.Duration
	refused    bool
	release    chan struct{} // closed by Close: hung requests end
	closed     bool
}

// NewFaults starts an httptest.Server for h whose failures can be set at run
// time; h must call Before first on every request.
func NewFaults(h http.Handler) *Faults {
	f := &Faults{release: make(chan struct{})}
	f.ts = httptest.NewUnstartedServer(h)
	f.gate = &gate{cur: f.ts.Listener, addr: f.ts.Listener.Addr()}
	f.ts.Listener = f.gate
	f.ts.Start()
	return f
}

// FailWith makes the next n requests fail with status (n < 0: every request
// until Recover). The answer's body is a short JSON error.
func (f *Faults) FailWith(status, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failStatus, f.failN, f.retryAfter = status, n, 0
}

// RetryAfter makes the next n requests (n < 0: every request until Recover)
// fail with 429 Too Many Requests and Retry-After: seconds.
func (f *Faults) RetryAfter(seconds, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failStatus, f.failN, f.retryAfter = http.StatusTooManyRequests, n, seconds
}

// Hang makes every request wait d before it is handled (until Recover): long
// enough, the client times out first. A request whose client goes away while
// it hangs is neither answered nor recorded; Close drops the connection of a
// request still hanging.
func (f *Faults) Hang(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hang = d
}

// Refuse stops listening and closes every open connection: new connections
// are refused until Recover.
func (f *Faults) Refuse() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refused || f.closed {
		return
	}
	f.refused = true
	f.gate.refuse()
	f.ts.CloseClientConnections()
}

// Recover clears every fault: the server listens again (on the same
// address) if it was refusing, and new requests are answered normally.
// Requests already hanging wait out their time (or their client leaving, or
// Close). It panics if the address cannot be listened on again.
func (f *Faults) Recover() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failStatus, f.failN, f.retryAfter, f.hang = 0, 0, 0, 0
	if f.refused && !f.closed {
		if err := f.gate.reopen(); err != nil {
			panic("fake server: listen again: " + err.Error())
		}
		f.refused = false
	}
}

// Close shuts the server down; hung requests are released first.
func (f *Faults) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.release)
	f.mu.Unlock()
	f.ts.Close()
}

// URL is the server's base URL.
func (f *Faults) URL() string { return f.ts.URL }

// Before applies the faults to one request. It returns false when the
// request has been dealt with (failed, or abandoned by its client).
func (f *Faults) Before(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	hang := f.hang
	f.mu.Unlock()
	if hang > 0 {
		t := time.NewTimer(hang)
		defer t.Stop()
		select {
		case <-t.C:
		case <-f.release:
			panic(http.ErrAbortHandler) // drop the connection: no answer at all
		case <-r.Context().Done():
			return false
		}
	}
	f.mu.Lock()
	status, retryAfter := 0, 0
	if f.failN != 0 {
		status, retryAfter = f.failStatus, f.retryAfter
		if f.failN > 0 {
			f.failN--
		}
	}
	f.mu.Unlock()
	if status == 0 {
		return true
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write([]byte(`{"error":"injected failure: ` + http.StatusText(status) + `"}`))
	return false
}

// gate is the fake's listener: refuse closes the real listener, so
// connections are refused, and reopen listens on the same address again,
// while the http.Server's Accept loop waits in between.
type gate struct {
	addr net.Addr

	mu     sync.Mutex
	cur    net.Listener  // nil while refusing
	ready  chan struct{} // closed when cur is set again or the gate closes
	closed bool
}

func (g *gate) Accept() (net.Conn, error) {
	for {
		g.mu.Lock()
		cur, ready, closed := g.cur, g.ready, g.closed
		g.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if cur == nil {
			<-ready
			continue
		}
		c, err := cur.Accept()
		if err == nil {
			return c, nil
		}
		g.mu.Lock()
		switched := g.cur != cur && !g.closed
		g.mu.Unlock()
		if !switched {
			return nil, err
		}
	}
}

func (g *gate) refuse() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur != nil && !g.closed {
		g.cur.Close()
		g.cur, g.ready = nil, make(chan struct{})
	}
}

func (g *gate) reopen() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur != nil || g.closed {
		return nil
	}
	ln, err := net.Listen("tcp", g.addr.String())
	if err != nil {
		return err
	}
	g.cur = ln
	close(g.ready)
	return nil
}

func (g *gate) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	if g.cur != nil {
		return g.cur.Close()
	}
	close(g.ready)
	return nil
}

func (g *gate) Addr() net.Addr { return g.addr }
