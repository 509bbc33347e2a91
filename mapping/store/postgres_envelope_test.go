package store

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// cuttableProxy forwards TCP connections to a server until it is cut: then
// it closes every connection it carries and refuses new ones, as a database
// whose network went away; restore lets connections through again.
type cuttableProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newCuttableProxy(t *testing.T, target string) *cuttableProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			cut := p.cut
			p.mu.Unlock()
			if cut {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *cuttableProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// TestPostgresUnreachableThenBack: while the database cannot be reached,
// submissions answer unavailable (with a RetryAfter) within their deadline
// and Ready says why; once it can be reached again, the store stores
// without a restart.
func TestPostgresUnreachableThenBack(t *testing.T) {
	dsn := postgresDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCuttableProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	s, err := Open(context.Background(), u.String(), Options{CommitTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	submit(t, s, identify("m0", "user-0", "anon-0", 0))

	proxy.setCut(true)
	start := time.Now()
	_, err = s.Submit(context.Background(), []mapping.Message{identify("m1", "user-1", "anon-1", time.Minute)})
	var e *mapping.Error
	if !errors.As(err, &e) || e.Code != mapping.CodeUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("submit with the database unreachable: got %v, want unavailable with a RetryAfter", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("submit with the database unreachable answered after %s, want within CommitTimeout (3s) and the connect timeout", took)
	}
	if err := s.Ready(context.Background()); err == nil {
		t.Errorf("Ready with the database unreachable: got ready, want not ready")
	} else if !strings.Contains(err.Error(), "not ready") {
		t.Errorf("Ready with the database unreachable: got %v, want a not-ready error", err)
	}

	// Ready notices the database is back by itself, without a submission.
	proxy.setCut(false)
	deadline := time.Now().Add(30 * time.Second)
	for err = s.Ready(context.Background()); err != nil && time.Now().Before(deadline); err = s.Ready(context.Background()) {
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Ready once the database is back: %v", err)
	}
	r, err := s.Submit(context.Background(), []mapping.Message{identify("m1", "user-1", "anon-1", time.Minute)})
	if err != nil {
		t.Fatalf("submit once the database is back: %v", err)
	}
	if r[0].Duplicate {
		t.Errorf("m1 was stored while the database was unreachable, yet its submission was refused")
	}
}

// TestPostgresLockedPastDeadline: while another session holds the graph
// lock past CommitTimeout (a replica stuck in a transaction, an operator's
// session), submissions answer unavailable with a RetryAfter and Ready says
// the database is locked; once the lock is released, the store stores.
func TestPostgresLockedPastDeadline(t *testing.T) {
	dsn := postgresDatabase(t)
	s, err := Open(context.Background(), dsn, Options{CommitTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	submit(t, s, identify("m0", "user-0", "", 0))
	other, err := s.write.Connx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.ExecContext(context.Background(), `BEGIN`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(context.Background(), `SELECT pg_advisory_xact_lock($1, $2)`, lockClassGraph, s.lockKey); err != nil {
		t.Fatal(err)
	}
	_, err = s.Submit(context.Background(), []mapping.Message{identify("m1", "user-1", "", 0)})
	var e *mapping.Error
	if !errors.As(err, &e) || e.Code != mapping.CodeUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("submit while another session holds the lock: got %v, want unavailable with a RetryAfter", err)
	}
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), ReasonLocked) {
		t.Errorf("Ready while locked: got %v, want not ready (locked)", err)
	}
	if _, err := other.ExecContext(context.Background(), `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if r := submit(t, s, identify("m2", "user-2", "", 0)); r[0].Duplicate {
		t.Errorf("m2 after the lock was released: got a duplicate, want it stored")
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Errorf("Ready after the lock was released: %v", err)
	}
}

// TestConcurrentStartMigratesOnce: replicas starting at the same moment on
// a new PostgreSQL database all start, and the migrations are applied once.
func TestConcurrentStartMigratesOnce(t *testing.T) {
	dsn := postgresDatabase(t)
	const replicas = 4
	stores := make(chan *Store, replicas)
	errs := make(chan error, replicas)
	for range replicas {
		go func() {
			s, err := Open(context.Background(), dsn, Options{})
			if err != nil {
				errs <- err
				return
			}
			stores <- s
		}()
	}
	var s *Store
	for range replicas {
		select {
		case err := <-errs:
			t.Errorf("a replica starting with the others: %v", err)
		case s = <-stores:
			defer s.Close()
		}
	}
	if s == nil {
		t.FailNow()
	}
	var versions, distinct int
	if err := s.read.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations`).Scan(&versions, &distinct); err != nil {
		t.Fatal(err)
	}
	if want := len(mustGlob(t)); versions != want || distinct != want {
		t.Errorf("schema_migrations holds %d rows of %d versions, want each of the %d migrations once", versions, distinct, want)
	}
}

func mustGlob(t *testing.T) []string {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	return names
}
