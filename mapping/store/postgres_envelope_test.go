package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// faultyProxy forwards TCP connections to a database server, until a
// test breaks the network between them: cut closes every connection it
// carries and refuses new ones (the server went away); freeze forwards
// nothing either way but keeps the connections open (a partition, a paused
// machine). restore ends either.
type faultyProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
	frozen chan struct{} // closed by restore; nil when not frozen
}

// newFaultyProxy starts a proxy to target and returns dsn with its address.
func newFaultyProxy(t *testing.T, dsn string) (*faultyProxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultyProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.restore(); p.breakConns() })
	target := u.Host
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
			go p.pipe(s, c)
			go p.pipe(c, s)
		}
	}()
	u.Host = ln.Addr().String()
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	return p, u.String()
}

func (p *faultyProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			frozen := p.frozen
			p.mu.Unlock()
			if frozen != nil {
				<-frozen
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// cutAll closes every connection and refuses new ones until restore.
func (p *faultyProxy) cutAll() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
	p.breakConns()
}

func (p *faultyProxy) breakConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// freeze stops forwarding, keeping the connections open, until restore.
func (p *faultyProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
}

func (p *faultyProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

// TestPostgresUnreachableThenBack: while the database cannot be reached,
// submissions answer unavailable (with a RetryAfter) within their deadline
// and Ready says why; once it can be reached again, the store stores
// without a restart.
func TestPostgresUnreachableThenBack(t *testing.T) {
	proxy, dsn := newFaultyProxy(t, postgresDatabase(t))
	s := openStoreOn(t, dsn, Options{CommitTimeout: 3 * time.Second})
	submit(t, s, identify("m0", "user-0", "anon-0", 0))

	proxy.cutAll()
	start := time.Now()
	_, err := s.Submit(context.Background(), []mapping.Message{identify("m1", "user-1", "anon-1", time.Minute)})
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
	proxy.restore()
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
	s := openStoreOn(t, dsn, Options{CommitTimeout: 500 * time.Millisecond})
	submit(t, s, identify("m0", "user-0", "", 0))
	release := holdGraphLock(t, s)
	defer release()
	_, err := s.Submit(context.Background(), []mapping.Message{identify("m1", "user-1", "", 0)})
	var e *mapping.Error
	if !errors.As(err, &e) || e.Code != mapping.CodeUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("submit while another session holds the lock: got %v, want unavailable with a RetryAfter", err)
	}
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), ReasonLocked) {
		t.Errorf("Ready while locked: got %v, want not ready (locked)", err)
	}
	release()
	// Ready finds out by itself that the lock is gone: no submission comes
	// to a replica that is not ready.
	deadline := time.Now().Add(30 * time.Second)
	for err = s.Ready(context.Background()); err != nil && time.Now().Before(deadline); err = s.Ready(context.Background()) {
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("Ready after the lock was released, with no submission: %v", err)
	}
	if r := submit(t, s, identify("m2", "user-2", "", 0)); r[0].Duplicate {
		t.Errorf("m2 after the lock was released: got a duplicate, want it stored")
	}
}

// holdGraphLock takes the graph lock in a transaction of its own on s's
// database (a replica stuck in a transaction, an operator's session) and
// returns the function that releases it.
func holdGraphLock(t *testing.T, s *Store) (release func()) {
	t.Helper()
	other, err := s.read.Connx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(context.Background(), `BEGIN`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(context.Background(), `SELECT pg_advisory_xact_lock($1, $2)`, lockClassGraph, s.lockKey); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			other.ExecContext(context.Background(), `ROLLBACK`)
			other.Close()
		})
	}
}

// waitForLockWaiter waits until a bridge session waits for an advisory lock.
func waitForLockWaiter(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := s.read.Get(&n, `SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND application_name = 'bridge'`); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no session waits for the graph lock")
}

// TestPostgresConnectionLostMidGroup: the connection to the database drops
// while groups wait for the graph lock; their callers get unavailable (503
// with Retry-After), not an internal error.
func TestPostgresConnectionLostMidGroup(t *testing.T) {
	dsn := postgresDatabase(t)
	proxy, proxied := newFaultyProxy(t, dsn)
	s := openStoreOn(t, proxied, Options{CommitTimeout: 20 * time.Second})
	direct := openStoreOn(t, dsn, Options{})
	release := holdGraphLock(t, direct)
	defer release()

	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			_, err := s.Submit(context.Background(), []mapping.Message{identify(fmt.Sprint("m", i), fmt.Sprint("user-", i), "", 0)})
			errs <- err
		}()
	}
	waitForLockWaiter(t, direct)
	proxy.cutAll()
	for range 3 {
		err := <-errs
		var e *mapping.Error
		if !errors.As(err, &e) || e.Code != mapping.CodeUnavailable || e.RetryAfter <= 0 {
			t.Errorf("a submission whose connection dropped: got %v, want unavailable with a RetryAfter", err)
		}
	}
}

// TestPartitionedReplicaReleasesTheLock: a replica cut off from the
// database just as its group gets the graph lock (its session would idle in
// a transaction until the server's keepalive notices, hours later) loses
// its session after idle_in_transaction_session_timeout, so the other
// replicas store again; and its own committer gives up on the group rather
// than hang.
func TestPartitionedReplicaReleasesTheLock(t *testing.T) {
	dsn := postgresDatabase(t)
	proxy, proxied := newFaultyProxy(t, dsn)
	a := openStoreOn(t, proxied, Options{CommitTimeout: time.Second})
	defer proxy.restore() // before a closes (t.Cleanup)
	b := openStoreOn(t, dsn, Options{CommitTimeout: time.Second})
	release := holdGraphLock(t, b)
	aDone := make(chan error, 1)
	go func() {
		_, err := a.Submit(context.Background(), []mapping.Message{identify("ma", "user-a", "", 0)})
		aDone <- err
	}()
	waitForLockWaiter(t, b)
	proxy.freeze() // a's session is about to get the lock; a never hears of it
	release()

	deadline := time.Now().Add(60 * time.Second)
	for i := 0; ; i++ {
		_, err := b.Submit(context.Background(), []mapping.Message{identify(fmt.Sprint("mb", i), "user-b", "", 0)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica b still cannot store a minute after replica a was cut off holding the lock: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-aDone:
		var e *mapping.Error
		if !errors.As(err, &e) || e.Code != mapping.CodeUnavailable {
			t.Errorf("the cut-off replica's submission: got %v, want unavailable", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("the cut-off replica's committer still waits a minute later")
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
