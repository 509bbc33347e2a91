package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/testenv"
)

// fill submits batches of fresh identifies from several goroutines until
// stop is closed, and returns how many messages were acknowledged.
func fill(t *testing.T, s *Store, prefix string, stop <-chan struct{}) int64 {
	t.Helper()
	var acked atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msgs := make([]mapping.Message, 10)
				for j := range msgs {
					n := fmt.Sprintf("%s-%d-%d-%d", prefix, g, i, j)
					msgs[j] = identify("m-"+n, "user-"+n, "anon-"+n, time.Duration(i)*time.Millisecond)
					msgs[j].Traits = map[string]any{"plan": "pro", "bio": strings.Repeat(n, 20)}
				}
				if _, err := s.Submit(context.Background(), msgs); err != nil {
					t.Errorf("submit: %v", err)
					return
				}
				acked.Add(int64(len(msgs)))
			}
		}()
	}
	wg.Wait()
	return acked.Load()
}

// TestWALStaysBounded writes without pause for some seconds with a small
// log limit; the -wal file, sampled by its size on disk throughout, must
// never exceed the limit, although far more than the limit was written.
func TestWALStaysBounded(t *testing.T) {
	const limit = 2 << 20
	s := openTestStore(t, Options{WALLimit: limit, MaxGroup: 20})
	stop := make(chan struct{})
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if fi, err := os.Stat(s.path + "-wal"); err == nil && fi.Size() > peak.Load() {
				peak.Store(fi.Size())
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	// Write for at least 3 s, and until the database holds several times
	// the limit (slow machines take longer), at most a minute.
	go func() {
		start := time.Now()
		for {
			time.Sleep(100 * time.Millisecond)
			fi, err := os.Stat(s.path)
			if time.Since(start) > time.Minute || time.Since(start) > 3*time.Second && err == nil && fi.Size() >= 6*limit {
				close(stop)
				return
			}
		}
	}()
	acked := fill(t, s, "w", stop)
	<-sampled
	st := s.Stats()
	var db int64
	if fi, err := os.Stat(s.path); err == nil {
		db = fi.Size()
	}
	t.Logf("%d messages acknowledged; database %d bytes; log peak %d sampled, %d by Stats; %d checkpoints", acked, db, peak.Load(), st.WALPeak, st.Checkpoints)
	if db+st.WALBytes < 4*limit {
		t.Fatalf("only %d bytes written in all; want several times the limit %d for the test to mean anything", db, limit)
	}
	if peak.Load() > limit || st.WALPeak > limit {
		t.Errorf("the log reached %d bytes (sampled), %d (Stats); want at most %d", peak.Load(), st.WALPeak, limit)
	}
	if st.WALLimit != limit || st.Checkpoints == 0 {
		t.Errorf("Stats: limit %d, %d checkpoints; want %d and some", st.WALLimit, st.Checkpoints, limit)
	}
}

// TestFailedSyncIsFatal injects a failure of the log's sync: the groups it
// covered are refused (never acknowledged), the store becomes fatal, and
// it refuses every write after it even once syncs would succeed again.
func TestFailedSyncIsFatal(t *testing.T) {
	var failing atomic.Bool
	var files sync.Map
	s := openTestStore(t, Options{SyncFile: func(f *os.File) error {
		files.Store(f, true)
		if failing.Load() {
			return &os.PathError{Op: "sync", Path: f.Name(), Err: syscall.EIO}
		}
		return f.Sync()
	}})
	submit(t, s, identify("m0", "user-0", "anon-0", 0))
	failing.Store(true)
	var wg sync.WaitGroup
	var acked atomic.Int32
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Submit(context.Background(), []mapping.Message{identify(fmt.Sprint("m", i+1), fmt.Sprint("user-", i+1), "", 0)})
			if err == nil {
				acked.Add(1)
			} else if mapping.ErrorCode(err) != mapping.CodeUnavailable {
				t.Errorf("submit during failing syncs: got %v, want unavailable", err)
			}
		}()
	}
	wg.Wait()
	if acked.Load() != 0 {
		t.Errorf("%d submissions acknowledged although every sync failed", acked.Load())
	}
	select {
	case <-s.Fatal():
	default:
		t.Fatal("the store is not fatal after a failed sync")
	}
	if err := s.FatalError(); !errors.Is(err, syscall.EIO) {
		t.Errorf("FatalError: got %v, want the sync failure", err)
	}
	failing.Store(false)
	if _, err := s.Submit(context.Background(), []mapping.Message{identify("m9", "user-9", "", 0)}); mapping.ErrorCode(err) != mapping.CodeUnavailable {
		t.Errorf("submit after a failed sync: got %v, want unavailable (the store must not go on as if it had not failed)", err)
	}
	if err := s.Ready(context.Background()); err == nil {
		t.Error("Ready: got nil after a failed sync, want not ready")
	}
	n := 0
	files.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("the log was synced through %d descriptors, want one held since Open", n)
	}
}

// smallDisk mounts a tmpfs of size bytes on a fresh directory (unmounted
// when the test ends); without the privilege to mount it skips, and fails
// under BRIDGE_TEST_REQUIRE_ALL=1.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		testenv.Lacks(t, fmt.Sprintf("to mount a small tmpfs (%v)", err), "run it as root or with CAP_SYS_ADMIN")
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// countingObserver counts group commits.
type countingObserver struct{ commits atomic.Int64 }

func (o *countingObserver) Committed(int, time.Duration, error) { o.commits.Add(1) }

// TestDiskFullRefusesThenRecovers fills a small file system under the
// store: the group that fails answers unavailable, the store refuses at once
// (no commit attempted) while the disk is full, Ready fails; once space is
// freed it recovers without a restart, and every acknowledged message is there.
func TestDiskFullRefusesThenRecovers(t *testing.T) {
	dir := smallDisk(t, 8<<20)
	obs := &countingObserver{}
	s, err := Open(context.Background(), filepath.Join(dir, "bridge.db"), Options{WALLimit: 1 << 20, MaxGroup: 20, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// Ballast takes all but about 1 MiB.
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(dir, "ballast")
	if err := os.WriteFile(ballast, make([]byte, int64(st.Bavail)*st.Bsize-1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var acked []string
	var full error
	for i := 0; full == nil; i++ {
		if i > 100000 {
			t.Fatal("the disk never filled")
		}
		msgs := make([]mapping.Message, 10)
		for j := range msgs {
			n := fmt.Sprint(i, "-", j)
			msgs[j] = identify("m"+n, "user-"+n, "anon-"+n, 0)
			msgs[j].Traits = map[string]any{"bio": strings.Repeat("x", 500)}
		}
		if _, err := s.Submit(context.Background(), msgs); err != nil {
			full = err
			break
		}
		for _, m := range msgs {
			acked = append(acked, m.UserID)
		}
	}
	var e *mapping.Error
	if !errors.As(full, &e) || e.Code != mapping.CodeUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("submit on a full disk: got %v, want unavailable with a RetryAfter", full)
	}
	if got := s.Stats().Unavailable; got != ReasonDiskFull {
		t.Errorf("Stats().Unavailable: got %q, want %q", got, ReasonDiskFull)
	}
	if err := s.Ready(context.Background()); err == nil {
		t.Error("Ready on a full disk: got nil, want not ready")
	}
	before := obs.commits.Load()
	for i := range 50 {
		if _, err := s.Submit(context.Background(), []mapping.Message{identify(fmt.Sprint("doomed", i), fmt.Sprint("doomed-", i), "", 0)}); mapping.ErrorCode(err) != mapping.CodeUnavailable {
			t.Fatalf("submit while the disk is full: got %v, want unavailable", err)
		}
	}
	if after := obs.commits.Load(); after != before {
		t.Errorf("%d commits attempted while the disk was full, want none (refused at once)", after-before)
	}
	if got := s.Stats().Refused[ReasonDiskFull]; got < 50 {
		t.Errorf("Stats().Refused[disk_full]: got %d, want at least 50", got)
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the store to recover after space was freed", func() bool { return s.Ready(context.Background()) == nil })
	submit(t, s, identify("after", "user-after", "", 0))
	for _, u := range append(acked, "user-after") {
		if _, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: u}); err != nil {
			t.Fatalf("acknowledged %s: %v", u, err)
		}
	}
	if _, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: "doomed-0"}); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Errorf("a refused message: got %v, want not found", err)
	}
}

// TestLockedPastDeadline holds the write lock from another connection:
// Submit answers unavailable by its context's deadline or CommitTimeout,
// whichever comes first, and Ready says locked;
// once the lock is released the store commits again: what was answered
// unavailable after the committer took it is stored (its retry is
// recognised as a duplicate), what was still queued is not.
func TestLockedPastDeadline(t *testing.T) {
	s := openTestStore(t, Options{CommitTimeout: 300 * time.Millisecond})
	other, err := openSQLite(s.path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	// A caller's deadline shorter than CommitTimeout is kept too.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = s.Submit(ctx, []mapping.Message{identify("m0", "user-0", "", 0)})
	var e *mapping.Error
	if !errors.As(err, &e) || e.Code != mapping.CodeUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("submit with a deadline while locked: got %v, want unavailable with a RetryAfter", err)
	}
	_, err = s.Submit(context.Background(), []mapping.Message{identify("m1", "user-1", "", 0)})
	if !errors.As(err, &e) || e.Code != mapping.CodeUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("submit while locked: got %v, want unavailable with a RetryAfter", err)
	}
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), ReasonLocked) {
		t.Errorf("Ready while locked: got %v, want not ready (locked)", err)
	}
	if _, err := conn.ExecContext(context.Background(), `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	// m0 was in the group waiting for the lock: it is committed once the lock is released.
	if r := submit(t, s, identify("m0", "user-0", "", 0)); !r[0].Duplicate {
		t.Errorf("retry of m0 after the lock: got a new message, want the duplicate of the one committed once the lock was released")
	}
	// m1 waited behind that group and was never taken: it was not stored.
	if r := submit(t, s, identify("m1", "user-1", "", 0)); r[0].Duplicate {
		t.Errorf("retry of m1 after the lock: got a duplicate, want m1 never stored before")
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Errorf("Ready after the lock: %v", err)
	}
}

// TestOverloadedWriterAnswersUnavailable keeps the committer busy past
// CommitTimeout: a submission still queued is answered unavailable and is
// never stored; Ready fails meanwhile and recovers after.
func TestOverloadedWriterAnswersUnavailable(t *testing.T) {
	s := openTestStore(t, Options{CommitTimeout: 200 * time.Millisecond})
	started, release := make(chan struct{}), make(chan struct{})
	go s.inTx(context.Background(), func(context.Context, *writer) error {
		close(started)
		<-release
		return nil
	})
	<-started
	_, err := s.Submit(context.Background(), []mapping.Message{identify("m1", "user-1", "", 0)})
	if mapping.ErrorCode(err) != mapping.CodeUnavailable {
		t.Fatalf("submit behind a busy writer: got %v, want unavailable", err)
	}
	if err := s.Ready(context.Background()); err == nil {
		t.Error("Ready behind a busy writer: got nil, want not ready")
	}
	close(release)
	submit(t, s, identify("m2", "user-2", "", 0))
	if _, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: "user-1"}); mapping.ErrorCode(err) != mapping.CodeNotFound {
		t.Errorf("the submission answered unavailable before the committer took it: got %v, want never stored", err)
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Errorf("Ready after the writer caught up: %v", err)
	}
	if got := s.Stats().Refused[ReasonOverloaded]; got < 1 {
		t.Errorf("Stats().Refused[overloaded]: got %d, want at least 1", got)
	}
}

// TestDatabaseRemovedUnderTheStore renames, then replaces, the database
// file under an open store: Ready fails and writes are refused (they would
// be lost with the unlinked file) until the path names the file again.
func TestDatabaseRemovedUnderTheStore(t *testing.T) {
	s := openTestStore(t, Options{})
	submit(t, s, identify("m1", "user-1", "", 0))
	moved := s.path + ".moved"
	if err := os.Rename(s.path, moved); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "removed") {
		t.Errorf("Ready with the database renamed away: got %v, want it removed", err)
	}
	if _, err := s.Submit(context.Background(), []mapping.Message{identify("m2", "user-2", "", 0)}); mapping.ErrorCode(err) != mapping.CodeUnavailable {
		t.Errorf("submit with the database renamed away: got %v, want unavailable", err)
	}
	if err := os.WriteFile(s.path, []byte("another file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("Ready with another file at the path: got %v, want it replaced", err)
	}
	if err := os.Rename(moved, s.path); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Errorf("Ready with the database back: %v", err)
	}
	submit(t, s, identify("m2", "user-2", "", 0))
}

// TestMissingDatabaseBesideItsLog: a database path whose file is gone but
// whose log or shared memory is left refuses to open (and creates nothing).
func TestMissingDatabaseBesideItsLog(t *testing.T) {
	for _, suffix := range []string{"-wal", "-shm"} {
		t.Run(suffix, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bridge.db")
			if err := os.WriteFile(path+suffix, []byte("left over"), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open: got a store, want a refusal")
			}
			if !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), suffix) {
				t.Errorf("Open: got %q, want it to say the database is missing beside %s", err, suffix)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Open created %s (%v), want nothing created", path, err)
			}
		})
	}
}

// TestDatabaseFilesOwnerOnly: the database, its log and its shared memory
// are created readable and writable by their owner only.
func TestDatabaseFilesOwnerOnly(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	s := openTestStore(t, Options{})
	submit(t, s, identify("m1", "user-1", "", 0))
	for _, name := range []string{s.path, s.path + "-wal", s.path + "-shm"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: mode %v, want -rw-------", filepath.Base(name), got)
		}
	}
}

// TestWriterContractChecked: the writer connection's settings the store's
// durability relies on are checked, and a connection without them refused.
func TestWriterContractChecked(t *testing.T) {
	s := openTestStore(t, Options{})
	if err := s.checkContract(context.Background()); err != nil {
		t.Fatalf("the store's own writer: %v", err)
	}
	for _, q := range []string{`PRAGMA synchronous = OFF`, `PRAGMA wal_autocheckpoint = 1000`} {
		if _, err := s.committer.ExecContext(context.Background(), q); err != nil {
			t.Fatal(err)
		}
		if err := s.checkContract(context.Background()); err == nil {
			t.Errorf("after %s: got nil, want a refusal", q)
		}
	}
}

// TestUnavailabilityLogIsRateLimited: a condition that comes and goes
// hundreds of times, and refusals by the thousand, log a handful of lines.
func TestUnavailabilityLogIsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	var h health
	h.init(slog.New(slog.NewTextHandler(&buf, nil)), time.Now)
	for range 300 {
		h.set(ReasonOverloaded, errors.New("slow"), false)
		h.countRefused(10)
		h.clear(ReasonOverloaded)
	}
	if n := strings.Count(buf.String(), "\n"); n == 0 || n > 6 {
		t.Errorf("%d log lines for 300 episodes, want a handful:\n%s", n, buf.String())
	}
	if got := h.refusedCounts()[ReasonOverloaded]; got != 3000 {
		t.Errorf("refused: got %d, want 3000 (every refusal counted, logged or not)", got)
	}
}

// TestLogRestartsInPlace: the checkpoint that bounds the log leaves its file
// as it is, and the next groups write it over from its start, so that a
// sync need not record a new size. The log's size in use, read from its
// index, equals the file's size until the first checkpoint (which checks
// that the index is read rightly), and is smaller than the file afterwards;
// the file never passes the limit.
func TestLogRestartsInPlace(t *testing.T) {
	const limit = 1 << 20
	s := openTestStore(t, Options{WALLimit: limit})
	fileSize := func() int64 {
		t.Helper()
		fi, err := os.Stat(s.path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	restarted := false
	for i := 0; i < 500 && !restarted; i++ {
		msgs := make([]mapping.Message, 20)
		for j := range msgs {
			n := fmt.Sprintf("%d-%d", i, j)
			msgs[j] = identify("m-"+n, "user-"+n, "anon-"+n, time.Duration(i)*time.Millisecond)
		}
		if _, err := s.Submit(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
		// A checkpoint running meanwhile changes neither the file's size nor the frames in use.
		inUse, file := s.logInUse(), fileSize()
		if file > limit {
			t.Fatalf("the log's file has %d bytes; want at most %d", file, limit)
		}
		if s.Stats().Checkpoints == 0 {
			if inUse != file {
				t.Fatalf("before any checkpoint, %d bytes of the log are in use and its file has %d; want the same", inUse, file)
			}
			continue
		}
		restarted = inUse < file
	}
	if !restarted {
		t.Fatalf("after %d checkpoints the log was never written over in place (file %d bytes)", s.Stats().Checkpoints, fileSize())
	}
}

// sizesObserver records the messages of each group commit.
type sizesObserver struct {
	mu    sync.Mutex
	sizes []int
}

func (o *sizesObserver) Committed(n int, _ time.Duration, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sizes = append(o.sizes, n)
}

// TestGroupsKeepToAnEighthOfTheLog checks that a group holds no more
// messages than would grow the log by an eighth of its bound, at the last
// groups' growth per message, so that the checkpoint beside the writer
// copies one group while the next is applied.
func TestGroupsKeepToAnEighthOfTheLog(t *testing.T) {
	obs := &sizesObserver{}
	s := openTestStore(t, Options{Observer: obs})
	ctx := context.Background()
	release := holdCommitter(t, s)
	// As if the last group had grown the log by a third of an eighth per message.
	s.logPerMessage = s.ckptEvery() / 3
	errs := make(chan error, 10)
	for i := range 10 {
		go func() {
			_, err := s.Submit(ctx, []mapping.Message{identify(fmt.Sprint("m", i), fmt.Sprint("user-", i), "", 0)})
			errs <- err
		}()
	}
	waitQueued(t, s, 10)
	release()
	for range 10 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	// The held function's group, then the messages: the first group of
	// them is capped at 3; later ones follow the growth measured since.
	if len(obs.sizes) < 2 || obs.sizes[1] != 3 {
		t.Errorf("group sizes %v; want the first group of messages to hold 3 of the 10 waiting", obs.sizes)
	}
}
