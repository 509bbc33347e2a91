package mapping

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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
				msgs := make([]Message, 10)
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

// TestWALStaysBounded writes without pause for a few seconds with a small
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
	time.AfterFunc(3*time.Second, func() { close(stop) })
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
	s := openTestStore(t, Options{syncFile: func(f *os.File) error {
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
			_, err := s.Submit(context.Background(), []Message{identify(fmt.Sprint("m", i+1), fmt.Sprint("user-", i+1), "", 0)})
			if err == nil {
				acked.Add(1)
			} else if ErrorCode(err) != CodeUnavailable {
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
	if _, err := s.Submit(context.Background(), []Message{identify("m9", "user-9", "", 0)}); ErrorCode(err) != CodeUnavailable {
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
