package mapping

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkSubmitIdentify measures group-committed identifies (fresh user and
// anonymous IDs, traits) in groups of 100, through the real SQLite store.
func BenchmarkSubmitIdentify(b *testing.B) {
	s := openTestStore(b, Options{})
	n := 0
	b.ResetTimer()
	for b.Loop() {
		msgs := make([]Message, 100)
		for i := range msgs {
			n++
			msgs[i] = identify(fmt.Sprint("m", n), fmt.Sprint("user-", n), fmt.Sprint("anon-", n), time.Duration(n)*time.Millisecond)
			msgs[i].Traits = map[string]any{"plan": "pro", "name": "Bench"}
			msgs[i].Email = fmt.Sprint("u", n, "@example.com")
		}
		if _, err := s.Submit(context.Background(), msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

type nopSender struct{}

func (nopSender) Send(context.Context, Job) error { return nil }

// BenchmarkOutboxDrain measures delivery throughput through the real store
// with a sender that answers at once: claim, send, record.
func BenchmarkOutboxDrain(b *testing.B) {
	s := openTestStore(b, Options{})
	const jobs = 30000
	msgs := make([]Message, 0, jobs)
	for i := range jobs {
		m := identify(fmt.Sprint("m", i), fmt.Sprint("user-", i), "", 0)
		m.Jobs = []Job{{Destination: "fake", OrderingKey: m.UserID, MessageID: m.ID, Payload: []byte(`{}`)}}
		msgs = append(msgs, m)
	}
	if _, err := s.Submit(context.Background(), msgs); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.RunOutbox(ctx, OutboxOptions{Senders: map[string]Sender{"fake": nopSender{}}, Workers: 128})
		close(done)
	}()
	for {
		bl, err := s.Backlogs(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if len(bl) == 0 || bl[0].Pending == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	<-done
	b.ReportMetric(jobs/time.Since(start).Seconds(), "jobs/s")
}
