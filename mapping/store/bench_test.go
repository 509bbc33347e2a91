package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
)

// BenchmarkSubmitIdentify measures group-committed identifies (fresh user and
// anonymous IDs, traits) in groups of 100, through the real SQLite store.
func BenchmarkSubmitIdentify(b *testing.B) {
	s := openTestStore(b, Options{})
	n := 0
	b.ResetTimer()
	for b.Loop() {
		msgs := make([]mapping.Message, 100)
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

func (nopSender) Send(context.Context, mapping.Job) error { return nil }

// BenchmarkOutboxDrain measures delivery throughput through the real store
// with a sender that answers at once: claim, send, record.
func BenchmarkOutboxDrain(b *testing.B) {
	s := openTestStore(b, Options{})
	const jobs = 30000
	msgs := make([]mapping.Message, 0, jobs)
	for i := range jobs {
		m := identify(fmt.Sprint("m", i), fmt.Sprint("user-", i), "", 0)
		m.Jobs = []mapping.Job{{Destination: "fake", OrderingKey: m.UserID, MessageID: m.ID, Payload: []byte(`{}`)}}
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
		outbox.New(s, outbox.Options{Senders: map[string]outbox.Sender{"fake": nopSender{}}, Workers: 128}).Run(ctx)
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

// BenchmarkSubmitAtScale measures batched ingest once the store holds many
// people: identifies as real clients send them (UUID message and anonymous
// IDs, opaque user IDs, an email and traits, a 430-byte body, one Jimo job
// each) in groups of 1,600, the size /v1/batch traffic commits in. It
// stores BRIDGE_STORE_BENCH_EVENTS of them (default 240,000) and reports
// the cost per event of the last third.
func BenchmarkSubmitAtScale(b *testing.B) {
	total := 240000
	if v := os.Getenv("BRIDGE_STORE_BENCH_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 3*1600 {
			b.Fatalf("BRIDGE_STORE_BENCH_EVENTS=%q: want a number of at least 4800", v)
		}
		total = n
	}
	const group = 1600
	for b.Loop() {
		s := openTestStore(b, Options{})
		var start time.Time
		measured := 0
		for n := 0; n < total; n += group {
			if n >= total*2/3 && start.IsZero() {
				start = time.Now()
			}
			msgs := make([]mapping.Message, group)
			for i := range msgs {
				msgs[i] = realisticIdentify(n + i)
			}
			if _, err := s.Submit(context.Background(), msgs); err != nil {
				b.Fatal(err)
			}
			if !start.IsZero() {
				measured += group
			}
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(measured), "µs/event")
		s.Close()
	}
}

// realisticIdentify is the nth identify of a new person, shaped as analytics-go sends it.
func realisticIdentify(n int) mapping.Message {
	id := uuid.NewString()
	m := identify(id, "u_"+uuid.NewString(), uuid.NewString(), time.Duration(n)*time.Millisecond)
	m.Email = id[:8] + "@example.com"
	m.Traits = map[string]any{"plan": "pro", "name": "Bench User", "email": m.Email}
	m.Raw = fmt.Appendf(nil, `{"type":"identify","messageId":%q,"userId":%q,"anonymousId":%q,`+
		`"traits":{"email":%q,"plan":"pro","name":"Bench User"},"timestamp":"2026-11-24T04:42:55.123456Z",`+
		`"context":{"library":{"name":"analytics-go","version":"3.3.0"}}}`, id, m.UserID, m.AnonymousID, m.Email)
	m.Jobs = []mapping.Job{{Destination: "jimo", OrderingKey: m.UserID, MessageID: m.ID, Payload: fmt.Appendf(nil, `{"identify":%q,"traits":{"plan":"pro"}}`, m.UserID)}}
	return m
}
