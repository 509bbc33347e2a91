package store

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/bridgeworks/bridge/mapping"
)

// submission is one caller's messages, or one function, waiting for a group commit.
type submission struct {
	msgs     []mapping.Message
	fn       func(ctx context.Context, w *writer) error
	receipts []mapping.Receipt
	err      error
	done     chan struct{}
	// state is subWaiting until the committer takes the submission
	// (subTaken) or its caller gives up waiting first (subAbandoned).
	state atomic.Int32
}

// A submission's states.
const (
	subWaiting int32 = iota
	subTaken
	subAbandoned
)

// take claims sub for a group; it fails if the caller gave up on it.
func (sub *submission) take() bool { return sub.state.CompareAndSwap(subWaiting, subTaken) }

// Submit stores msgs durably, applies their identity links and enqueues their
// jobs. It returns only after the transaction holding them has committed, so
// a caller may acknowledge on a nil error. Concurrent calls share one
// transaction (group commit). The receipts are in the order of msgs.
// NUL characters outside identifiers are stored as U+FFFD (see
// mapping.Message.WithoutNUL).
//
// Submit waits at most until ctx's deadline or Options.CommitTimeout,
// whichever comes first; past it, it answers CodeUnavailable (with a
// RetryAfter): the messages were not stored if the committer had not taken
// them yet, and may be stored otherwise (a retry is deduplicated). While the
// store cannot store (a full disk, a replaced file, a failed sync) it
// answers CodeUnavailable at once. If ctx is cancelled, it returns ctx's error.
func (s *Store) Submit(ctx context.Context, msgs []mapping.Message) ([]mapping.Receipt, error) {
	cloned := false
	for i, m := range msgs {
		if m.HasNUL() {
			if !cloned {
				msgs, cloned = slices.Clone(msgs), true // the caller's slice stays as it was
			}
			msgs[i] = m.WithoutNUL()
		}
	}
	sub := &submission{msgs: msgs, done: make(chan struct{})}
	if err := s.enqueue(ctx, sub); err != nil {
		return nil, err
	}
	return sub.receipts, sub.err
}

// inTx runs fn inside the next group commit and returns once that commit
// has finished. fn's changes are durable when inTx returns nil; if fn fails,
// its changes are rolled back and the error returned.
func (s *Store) inTx(ctx context.Context, fn func(ctx context.Context, w *writer) error) error {
	sub := &submission{fn: fn, done: make(chan struct{})}
	if err := s.enqueue(ctx, sub); err != nil {
		return err
	}
	return sub.err
}

// enqueue hands sub to the committer and waits for its commit, within
// ctx's deadline and CommitTimeout.
func (s *Store) enqueue(ctx context.Context, sub *submission) error {
	if err := s.health.refusal(); err != nil {
		s.health.countRefused(1)
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return &mapping.Error{Code: mapping.CodeUnavailable, Message: "the bridge is shutting down; retry shortly", RetryAfter: 5 * time.Second}
	}
	timer := time.NewTimer(s.opts.CommitTimeout)
	defer timer.Stop()
	queue := s.queue
	if sub.fn != nil {
		queue = s.ops
	}
	select {
	case queue <- sub:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return s.gaveUp(ctx, false, false)
	case <-timer.C:
		s.mu.RUnlock()
		return s.gaveUp(ctx, false, true)
	}
	timedOut := false
	select {
	case <-sub.done:
		return nil
	case <-ctx.Done():
	case <-timer.C:
		timedOut = true
	}
	if sub.state.CompareAndSwap(subWaiting, subAbandoned) {
		return s.gaveUp(ctx, false, timedOut)
	}
	if sub.fn != nil {
		// The committer runs fn now; fn writes its results into its
		// caller's variables, so the caller waits for it to finish (an
		// internal operation: a claim, a repair, a batch of housekeeping).
		<-sub.done
		return nil
	}
	select {
	case <-sub.done:
		return nil
	default:
		return s.gaveUp(ctx, true, timedOut)
	}
}

// gaveUp is what a caller that stopped waiting gets: ctx's error if it was
// cancelled, else CodeUnavailable. A wait as long as CommitTimeout (not
// merely a short deadline of the caller's) marks the store unavailable
// until its next commit.
func (s *Store) gaveUp(ctx context.Context, taken, timedOut bool) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	reason := ReasonOverloaded
	if s.phase.Load() == phaseLocking {
		reason = ReasonLocked
	}
	if timedOut {
		s.health.set(reason, fmt.Errorf("a submission waited %s without being committed", s.opts.CommitTimeout), false)
	}
	s.health.countRefused(1)
	return unavailable(reason, taken)
}

// commitLoop takes the first waiting submission, adds every other one already
// waiting (up to MaxGroup messages), and commits them in one transaction.
// It does not wait for the disk: syncLoop syncs the log beside it and only
// then releases the callers, so one group is applied while the last syncs.
// While the disk is full it probes, with growing intervals, whether a tiny
// write succeeds again.
func (s *Store) commitLoop() {
	defer close(s.stopped)
	defer close(s.syncQueue)
	const firstProbe, lastProbe = 250 * time.Millisecond, 15 * time.Second
	backoff, nextProbe := firstProbe, time.Time{}
	for {
		var probe <-chan time.Time
		var probeTimer *time.Timer
		if reason, _ := s.health.current(); reason == ReasonDiskFull {
			if nextProbe.IsZero() {
				nextProbe = time.Now().Add(backoff)
			}
			probeTimer = time.NewTimer(time.Until(nextProbe))
			probe = probeTimer.C
		} else {
			backoff, nextProbe = firstProbe, time.Time{}
		}
		// A group starts with the first message waiting, if one is, and
		// every function waiting joins it (see gather).
		var first *submission
		select {
		case first = <-s.queue:
		default:
			select {
			case first = <-s.queue:
			case first = <-s.ops:
			case <-probe:
				if s.probe() {
					s.health.clear(ReasonDiskFull)
				} else {
					backoff = min(2*backoff, lastProbe)
				}
				nextProbe = time.Time{}
				continue
			case <-s.closing:
				if probeTimer != nil {
					probeTimer.Stop()
				}
				s.drain()
				return
			}
		}
		if probeTimer != nil {
			probeTimer.Stop()
		}
		if group := s.gather(first); len(group) > 0 {
			s.commitGroup(group)
		}
	}
}

// drain commits what was queued before the store closed.
func (s *Store) drain() {
	for {
		var first *submission
		select {
		case first = <-s.queue:
		case first = <-s.ops:
		default:
			return
		}
		if group := s.gather(first); len(group) > 0 {
			s.commitGroup(group)
		}
	}
}

// probe tries, on the committer's connection, to free the log's space
// (a checkpoint that truncates it) and then to commit a tiny write (the
// database header's user version, rewritten as it is). It reports whether
// the write succeeded.
func (s *Store) probe() bool {
	ctx := context.Background()
	if s.postgres {
		// A write that needs room in PostgreSQL's log.
		_, err := s.write.ExecContext(ctx, `UPDATE schema_migrations SET applied_at = applied_at WHERE version = 1`)
		return err == nil
	}
	s.committer.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	s.sampleLog()
	var v int
	if err := s.committer.GetContext(ctx, &v, `PRAGMA user_version`); err != nil {
		return false
	}
	for _, q := range []string{`BEGIN IMMEDIATE`, fmt.Sprintf(`PRAGMA user_version = %d`, v), `COMMIT`} {
		if _, err := s.committer.ExecContext(ctx, q); err != nil {
			if _, rerr := s.committer.ExecContext(ctx, `ROLLBACK`); rerr != nil {
				err = errors.Join(err, rerr)
			}
			s.log.Debug("probe: still cannot store", "err", err)
			return false
		}
	}
	return true
}

// gather adds to first every submission already waiting, up to MaxGroup
// messages (on SQLite, fewer if the last groups' messages grew the log so
// much that a group would pass ckptEvery: checkpointLoop then copies each
// group's part of the log while the next group is applied, and the
// checkpoint the writer waits for has at most a group or two to copy),
// leaving out those whose callers gave up.
//
// The functions waiting (in ops: see inTx) all join the group, ahead of any
// message waiting: an outbox claim or outcome, an operator's repair, a
// batch of erasure or retention waits for one group at most, not for every
// message queued before it. Under a load that keeps the queue full,
// delivery would otherwise get one claim through per queue's length of
// groups, and fall behind without end. Each function's caller waits for
// its commit, so the functions waiting are few.
func (s *Store) gather(first *submission) []*submission {
	var group []*submission
	n := 0
	if first.take() {
		group = append(group, first)
		n = len(first.msgs)
	}
ops:
	for {
		select {
		case sub := <-s.ops:
			if sub.take() {
				group = append(group, sub)
			}
		default:
			break ops
		}
	}
	most := s.opts.MaxGroup
	if s.logPerMessage > 0 {
		most = max(1, min(most, int(s.ckptEvery()/s.logPerMessage)))
	}
	for n < most {
		select {
		case sub := <-s.queue:
			if sub.take() {
				group = append(group, sub)
				n += len(sub.msgs)
			}
		default:
			return group
		}
	}
	return group
}

// commitGroup commits a group in one transaction. If that fails, it commits
// each submission alone, so one bad submission cannot fail the others.
// The callers are released by syncLoop, once the commit is on disk.
//
// A failure that keeps the store from storing (a full disk, a write lock
// held elsewhere, a failed sync) fails the whole group with CodeUnavailable
// at once, and while the store refuses (see health) a group is refused
// without a commit.
func (s *Store) commitGroup(group []*submission) {
	defer s.boundLog(group)
	if err := s.health.refusal(); err != nil {
		s.health.countRefused(len(group))
		for _, sub := range group {
			sub.err = err
		}
		s.syncQueue <- group
		return
	}
	err := s.commit(group)
	if unavailable := s.storeFailed(err); unavailable != nil {
		s.health.countRefused(len(group))
		for _, sub := range group {
			sub.err = unavailable
		}
		s.syncQueue <- group
		return
	}
	if err == nil {
		s.health.clear(ReasonDiskFull, ReasonLocked, ReasonOverloaded, ReasonUnreachable)
	}
	if err != nil && len(group) > 1 {
		s.log.Warn("group commit failed; committing submissions one by one", "submissions", len(group), "err", err)
		for _, sub := range group {
			if err := s.commit([]*submission{sub}); err != nil {
				if unavailable := s.storeFailed(err); unavailable != nil {
					s.health.countRefused(1)
					err = unavailable
				}
				sub.err = err
			}
		}
		s.syncQueue <- group
		return
	}
	for _, sub := range group {
		if err != nil || sub.fn == nil {
			sub.err = err
		}
	}
	s.syncQueue <- group
}

func (s *Store) commit(group []*submission) (err error) {
	start := time.Now()
	n := 0
	// A bug must fail its group, not stop the committer (and the process).
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in group commit", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("group commit: panic: %v", r)
		}
	}()
	defer func() {
		if s.opts.Observer != nil {
			s.opts.Observer.Committed(n, time.Since(start), err)
		}
	}()
	// The transaction outlives any one request: callers wait for it. Its
	// context is never cancelled, which also spares database/sql a watcher
	// goroutine per query.
	ctx := context.Background()
	s.phaseSince.Store(s.opts.Now().UnixNano())
	s.phase.Store(phaseLocking)
	defer s.phase.Store(phaseIdle)
	w := &writer{conn: s.committer, store: s, opts: &s.opts, now: s.opts.Now().UnixNano(), behind: &behind{group: group}}
	if s.postgres {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.postgresTxTimeout())
		defer cancel()
		conn, err := s.write.Connx(ctx)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		defer conn.Close()
		w.conn = conn
		if err := s.beginPostgres(ctx, conn); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
	} else if err := w.begin(ctx); err != nil {
		return err
	}
	s.phase.Store(phaseApplying)
	committed := false
	defer func() {
		if !committed {
			w.discard() // it would be rolled back with the rest
			if _, rerr := w.exec(ctx, `ROLLBACK`); rerr != nil {
				s.log.Error("roll back a failed group commit", "err", rerr)
			}
		}
	}()
	jobs := false
	for _, sub := range group {
		if sub.fn != nil {
			// What earlier submissions wrote behind is theirs: should it
			// fail, the group fails, not the function.
			if err := w.flush(ctx); err != nil {
				return err
			}
			// A savepoint confines a failing function to its own caller.
			sub.err = w.savepoint(ctx, sub.fn)
			n++
			continue
		}
		sub.receipts = make([]mapping.Receipt, len(sub.msgs))
		for i, m := range sub.msgs {
			jobs = jobs || len(m.Jobs) > 0
			r, err := w.apply(ctx, m)
			if err != nil {
				return fmt.Errorf("apply %s message %s: %w", m.Source, m.ID, err)
			}
			sub.receipts[i] = r
			n++
		}
	}
	if jobs && s.postgres {
		if err := s.notifyJobs(ctx, w); err != nil {
			return err
		}
	}
	if _, err := w.exec(ctx, `COMMIT`); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	if jobs {
		s.wakeOutbox()
	}
	return nil
}

// begin starts a group's transaction on SQLite, taking the write lock.
func (w *writer) begin(ctx context.Context) error {
	if _, err := w.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
		if cannotStore(err) != "" {
			return fmt.Errorf("begin: %w", err) // locked past the busy timeout: no second wait
		}
		// Should an earlier rollback have failed, the connection would still
		// be in that transaction, and every group after it would fail here.
		// The second BEGIN says whether this rollback was needed and worked.
		if _, rerr := w.exec(ctx, `ROLLBACK`); rerr != nil {
			w.store.log.Debug("roll back before a second begin", "err", rerr)
		}
		if _, err := w.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
	}
	return nil
}

// writer applies messages inside one transaction on the committer's
// connection. On SQLite its statements are prepared once on that connection
// and reused by every transaction; on PostgreSQL they are rebound, and the
// driver prepares and caches them per connection.
type writer struct {
	conn  *sqlx.Conn
	store *Store
	opts  *Options
	now   int64
	// tombstones and anyDeletions are read from the database once per
	// transaction (nil: not read yet); see tombstoned and deletions.
	tombstones, anyDeletions *bool
	// behind is what is written behind; see writebehind.go.
	behind *behind
}

// savepoint runs fn; if fn fails, its changes are rolled back and the rest of the transaction stands.
func (w *writer) savepoint(ctx context.Context, fn func(ctx context.Context, w *writer) error) error {
	if _, err := w.exec(ctx, `SAVEPOINT fn`); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	err := fn(ctx, w)
	if err == nil {
		err = w.flush(ctx) // fn's writes written behind fail fn, as they would have at once
	}
	if err != nil {
		w.discard() // rolled back in any case
		if _, rerr := w.exec(ctx, `ROLLBACK TO SAVEPOINT fn`); rerr != nil {
			return errors.Join(err, rerr)
		}
		if _, rerr := w.exec(ctx, `RELEASE SAVEPOINT fn`); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	if _, err := w.exec(ctx, `RELEASE SAVEPOINT fn`); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

// insertRow inserts a row into table, columns (a list) taking args, and
// returns the new row's ID: the ID is assigned by the writer (nextID) and
// the INSERT written behind (later). The caller has ruled out a conflict
// with a stored row; one fails the group.
func (w *writer) insertRow(ctx context.Context, what, table, columns string, args ...any) (int64, error) {
	id, err := w.nextID(ctx, table)
	if err != nil {
		return 0, err
	}
	query := `INSERT INTO ` + table + ` (id, ` + columns + `) VALUES (?, ` + strings.Repeat("?, ", len(args)-1) + `?)`
	return id, w.later(ctx, what, query, append([]any{id}, args...)...)
}

// rebound returns query rebound for the engine, caching it.
func (s *Store) rebound(query string) string {
	if q, ok := s.bound.Load(query); ok {
		return q.(string)
	}
	q := s.write.Rebind(query)
	s.bound.Store(query, q)
	return q
}

// prepared returns query prepared on the committer's connection, preparing
// it on first use. Only the committer calls it.
func (s *Store) prepared(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.committer.PreparexContext(ctx, s.write.Rebind(query))
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", query, err)
	}
	s.stmts[query] = st
	return st, nil
}
