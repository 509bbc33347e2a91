package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
)

// TestClaimsAcrossStores has two stores on one database (two replicas)
// claim and record the same outbox at the same time: every job is
// delivered exactly once, and a user's jobs one at a time, in the order
// they were written.
func TestClaimsAcrossStores(t *testing.T) {
	dsn := testDSN(t)
	stores := []*Store{openStoreOn(t, dsn, Options{}), openStoreOn(t, dsn, Options{})}
	const users, perUser = 20, 5
	for u := range users {
		user := fmt.Sprint("user-", u)
		var msgs []mapping.Message
		for k := range perUser {
			msgs = append(msgs, withJobs(fmt.Sprintf("m-%d-%d", u, k), user, fmt.Sprintf("%s/%d", user, k)))
		}
		submit(t, stores[u%2], msgs...)
	}

	var mu sync.Mutex
	running := map[string]string{} // ordering key -> job message ID in flight
	delivered := map[string][]string{}
	var violations []string
	var wg sync.WaitGroup
	for _, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				jobs, err := s.Claim(ctx, []string{"fake"}, 7, nil, time.Minute)
				if err != nil {
					mu.Lock()
					violations = append(violations, "claim: "+err.Error())
					mu.Unlock()
					return
				}
				mu.Lock()
				done := 0
				for _, l := range delivered {
					done += len(l)
				}
				for _, j := range jobs {
					if other, ok := running[j.Job.OrderingKey]; ok {
						violations = append(violations, fmt.Sprintf("%s claimed while %s of the same user is in flight", j.Job.MessageID, other))
					}
					running[j.Job.OrderingKey] = j.Job.MessageID
				}
				mu.Unlock()
				if len(jobs) == 0 && done == users*perUser {
					return
				}
				var outcomes []outbox.Delivery
				mu.Lock()
				for _, j := range jobs {
					// Marked delivered before the outcome commits: the next job of the user can be claimed only after.
					delete(running, j.Job.OrderingKey)
					delivered[j.Job.OrderingKey] = append(delivered[j.Job.OrderingKey], j.Job.MessageID)
					outcomes = append(outcomes, outbox.Delivery{ID: j.ID, Destination: j.Job.Destination, MessageID: j.Job.MessageID,
						Attempts: j.Attempts, Claimed: j.Attempts, Outcome: outbox.Outcome{Result: outbox.ResultDone}})
				}
				mu.Unlock()
				if err := s.Record(ctx, outcomes); err != nil {
					mu.Lock()
					violations = append(violations, "record: "+err.Error())
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, v := range violations {
		t.Error(v)
	}
	for u := range users {
		user := fmt.Sprint("user-", u)
		var want []string
		for k := range perUser {
			want = append(want, fmt.Sprintf("%s/%d", user, k))
		}
		if got := delivered[user]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: delivered %v, want each job once, in order %v", user, got, want)
		}
	}
	if len(delivered) != users {
		t.Errorf("delivered jobs of %d users, want %d", len(delivered), users)
	}
}

// TestJobsWakeOtherStores: jobs committed by one store wake the outbox
// worker of another store on the same PostgreSQL database at once, rather
// than at its next poll. (On SQLite one process writes and delivers.)
func TestJobsWakeOtherStores(t *testing.T) {
	dsn := postgresDatabase(t)
	a, b := openStoreOn(t, dsn, Options{}), openStoreOn(t, dsn, Options{})
	// b wakes once when it starts listening, for what it may have missed.
	select {
	case <-b.Wake():
	case <-time.After(30 * time.Second):
		t.Fatal("the store did not start listening for other stores' jobs")
	}
	submit(t, a, withJobs("m1", "user-1", "job-1"))
	select {
	case <-b.Wake():
	case <-time.After(30 * time.Second):
		t.Fatal("jobs committed by one store did not wake the other")
	}
}
