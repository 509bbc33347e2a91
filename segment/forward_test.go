package segment_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/segment"
	"github.com/bridgeworks/bridge/segment/segmenttest"
)

const writeKey = "wk_forward"

// forwardTimeout bounds each Send in these tests.
const forwardTimeout = 2 * time.Second

func newForwarder(t testing.TB, srv *segmenttest.Server, edit func(*segment.ForwarderConfig)) *segment.Forwarder {
	t.Helper()
	cfg := segment.ForwarderConfig{
		Endpoint: srv.URL,
		WriteKey: writeKey,
		Timeout:  forwardTimeout,
		Interval: 5 * time.Millisecond,
		ResolveUserID: func(ctx context.Context, token string) (string, error) {
			return map[string]string{
				"7c9e6679-7425-40de-944b-e07fc1f90ae7": "usr_grace_7f3a9c2e41d8b6a0",           // a derived token
				"0f8fad5b-d9cb-469f-a165-70867728950e": "0f8fad5b-d9cb-469f-a165-70867728950e", // shared mode: the user ID
			}[token], nil
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	f, err := segment.NewForwarder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func deliveryError(t *testing.T, err error) *mapping.DeliveryError {
	t.Helper()
	var d *mapping.DeliveryError
	if !errors.As(err, &d) {
		t.Fatalf("error %v (%T), want a *mapping.DeliveryError", err, err)
	}
	return d
}

func identifyJob(t testing.TB) mapping.Job {
	t.Helper()
	j, ok := segment.IdentifyJob(mapping.Message{
		Source: mapping.SourceJimoSession, ID: "jimo-session-1", Type: "session", Timestamp: t0,
		UserID: "usr_ada_0f8fad5bd9cb469f", AnonymousID: "6d2a4f1e-8c3b-4a5d-b7e9-0f1a2b3c4d5e",
		Traits: map[string]any{"name": "Ada Lovelace", "seats": 12}, Email: "ada@example.com",
	})
	if !ok {
		t.Fatal("no identify job")
	}
	return j
}

// nthJob is a distinct identify job per n.
func nthJob(t testing.TB, n int) mapping.Job {
	t.Helper()
	j, ok := segment.IdentifyJob(mapping.Message{
		Source: mapping.SourceJimoSession, ID: fmt.Sprintf("jimo-session-%d", n), Type: "session", Timestamp: t0,
		UserID: fmt.Sprintf("usr_%016d", n), AnonymousID: fmt.Sprintf("anon-%d", n),
	})
	if !ok {
		t.Fatal("no identify job")
	}
	return j
}

func TestForwarderDelivers(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f := newForwarder(t, srv, nil)
	identify := identifyJob(t)
	track, ok := segment.TrackJob(webhookMessage(t, "jimo/webhook_tour_completed.json", jimo.ModeShared), "", nil)
	if !ok {
		t.Fatal("no track job")
	}
	relay, ok := segment.RelayJob(relayEvents(t, "segment/api_batch_analytics_go.json", "batch")[1].Message.Raw)
	if !ok {
		t.Fatal("no relay job")
	}
	for _, j := range []mapping.Job{identify, track, relay} {
		if err := f.Send(context.Background(), j); err != nil {
			t.Fatalf("Send %s: %v", j.MessageID, err)
		}
	}
	msgs := srv.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	want := []struct{ typ, id, userID, anonymousID, event string }{
		{"identify", identify.MessageID, "usr_ada_0f8fad5bd9cb469f", "6d2a4f1e-8c3b-4a5d-b7e9-0f1a2b3c4d5e", ""},
		{"track", track.MessageID, "0f8fad5b-d9cb-469f-a165-70867728950e", "", "Jimo Tour Completed"},
		{"track", "6a9f3b2d-1c4e-4f70-8b8c-9d0e1f2a3b4c", "usr_2b7f9d1c4e6a8b0d", "", "Report Exported"},
	}
	for i, m := range msgs {
		w := want[i]
		if m.Type != w.typ || m.MessageID != w.id || m.UserID != w.userID || m.AnonymousID != w.anonymousID || m.Event != w.event {
			t.Errorf("message %d: %s %s user %q anon %q event %q, want %s %s %q %q %q", i, m.Type, m.MessageID, m.UserID, m.AnonymousID, m.Event, w.typ, w.id, w.userID, w.anonymousID, w.event)
		}
		if !m.Forwarded {
			t.Errorf("message %d lacks the bridge marker: %s", i, m.Raw)
		}
		// Fed back through Segment's webhook destination, the message is
		// recognised as the bridge's own and is not forwarded again.
		evs, err := segment.DecodeWebhook(m.Raw, t0)
		if err != nil || len(evs) != 1 || !evs[0].Message.Forwarded {
			t.Errorf("message %d fed back: %v, forwarded %v; want recognised", i, err, len(evs) == 1 && evs[0].Message.Forwarded)
		}
		if _, ok := segment.RelayJob(m.Raw); ok {
			t.Errorf("message %d fed back to the relay: ok, want refused", i)
		}
	}
	id := msgs[0]
	if id.Traits["email"] != "ada@example.com" || id.Traits["name"] != "Ada Lovelace" || fmt.Sprint(id.Traits["seats"]) != "12" {
		t.Errorf("identify traits %v", id.Traits)
	}
	if id.Timestamp != "2025-11-23T12:00:00Z" {
		t.Errorf("identify timestamp %q, want the session's", id.Timestamp)
	}
	if integrations := id.Integrations; integrations["Jimo"] != false || integrations["Jimo (Actions)"] != false {
		t.Errorf("integrations %v, want the Jimo destinations off", integrations)
	}
	if ip := msgs[2].Context["ip"]; ip != "198.51.100.4" {
		t.Errorf("relayed context ip %v, want the original's", ip)
	}
	for _, b := range srv.Batches() {
		if lib, _ := b.Context["library"].(map[string]any); lib["name"] != "analytics-go" {
			t.Errorf("batch context %v, want analytics-go's library", b.Context)
		}
	}
}

func TestForwarderResolvesJimoTokens(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f := newForwarder(t, srv, nil)
	j, ok := segment.TrackJob(webhookMessage(t, "jimo/webhook_survey_answered.json", jimo.ModeDerived), "", nil)
	if !ok {
		t.Fatal("no job")
	}
	if err := f.Send(context.Background(), j); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || msgs[0].UserID != "usr_grace_7f3a9c2e41d8b6a0" {
		t.Fatalf("messages %+v, want one for the resolved user", msgs)
	}
	if strings.Contains(string(msgs[0].Raw), "7c9e6679") {
		t.Errorf("the Jimo token reached Segment: %s", msgs[0].Raw)
	}

	unknown, _ := segment.TrackJob(mapping.Message{Source: mapping.SourceJimoWebhook, ID: "w2", Event: "tour.started", JimoToken: "not-linked-yet", Timestamp: t0}, "", nil)
	err := f.Send(context.Background(), unknown)
	if d := deliveryError(t, err); d.Permanent || !strings.Contains(err.Error(), "no user") {
		t.Errorf("unresolved token: %v (permanent %v), want transient", err, d.Permanent)
	}
	failing := newForwarder(t, srv, func(c *segment.ForwarderConfig) {
		c.ResolveUserID = func(context.Context, string) (string, error) { return "", errors.New("database is locked") }
	})
	if d := deliveryError(t, failing.Send(context.Background(), j)); d.Permanent {
		t.Errorf("resolver error: permanent, want transient")
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d messages, want still 1", n)
	}
}

func TestForwarderFailures(t *testing.T) {
	tests := []struct {
		name       string
		fault      func(*segmenttest.Server)
		key        string
		permanent  bool
		retryAfter time.Duration
		contains   string
		// attempts is how many requests reach the fake at most.
		attempts int
	}{
		{name: "400 is permanent at once", fault: func(s *segmenttest.Server) { s.FailWith(400, -1) }, permanent: true, contains: "400", attempts: 1},
		{name: "wrong write key is permanent", fault: func(s *segmenttest.Server) {}, key: "wk_wrong", permanent: true, contains: "401", attempts: 1},
		{name: "429 is transient with Retry-After", fault: func(s *segmenttest.Server) { s.RetryAfter(9, -1) }, retryAfter: 9 * time.Second, contains: "429", attempts: 1},
		{name: "500 is transient after short retries", fault: func(s *segmenttest.Server) { s.FailWith(500, -1) }, contains: "500", attempts: 10},
		{name: "hang is transient at the timeout", fault: func(s *segmenttest.Server) { s.Hang(time.Minute) }, contains: "deadline", attempts: 10},
		{name: "refused connections are transient", fault: func(s *segmenttest.Server) { s.Refuse() }, contains: "refused", attempts: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := segmenttest.NewServer(t, writeKey)
			f := newForwarder(t, srv, func(c *segment.ForwarderConfig) {
				if tt.key != "" {
					c.WriteKey = tt.key
				}
				c.Timeout = 500 * time.Millisecond
			})
			tt.fault(srv)
			start := time.Now()
			err := f.Send(context.Background(), identifyJob(t))
			elapsed := time.Since(start)
			d := deliveryError(t, err)
			if d.Permanent != tt.permanent || mapping.Retryable(err) == tt.permanent {
				t.Errorf("permanent %v, Retryable %v; want permanent %v (%v)", d.Permanent, mapping.Retryable(err), tt.permanent, err)
			}
			if d.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter %v, want %v", d.RetryAfter, tt.retryAfter)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
			// The job's time is bounded by the timeout, whatever analytics-go retries.
			if elapsed > time.Second {
				t.Errorf("Send took %v, want it bounded by its 500ms timeout", elapsed)
			}
			if n := srv.Attempts(); n > tt.attempts {
				t.Errorf("%d requests reached the fake, want at most %d", n, tt.attempts)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("%d messages accepted, want none", n)
			}
			srv.Recover()
			if tt.key == "" {
				// Nothing stuck: the next attempt (the outbox's retry) goes through, once.
				if err := f.Send(context.Background(), identifyJob(t)); err != nil {
					t.Fatalf("Send after Recover: %v", err)
				}
				if n := len(srv.Messages()); n != 1 {
					t.Errorf("%d messages after Recover, want 1", n)
				}
			}
		})
	}
}

func TestForwarderRecoversWithinRetries(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f := newForwarder(t, srv, nil)
	srv.FailWith(503, 2)
	if err := f.Send(context.Background(), identifyJob(t)); err != nil {
		t.Fatalf("Send: %v, want analytics-go's short retries to get through", err)
	}
	if n, a := len(srv.Messages()), srv.Attempts(); n != 1 || a != 3 {
		t.Errorf("%d messages in %d requests, want 1 in 3", n, a)
	}
}

// A refusal of a batch that held several messages cannot be pinned on one of
// them: all get a transient error, and each is then sent alone, which decides.
func TestForwarderBatchRefusalIsRetriedAlone(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f := newForwarder(t, srv, func(c *segment.ForwarderConfig) {
		c.BatchSize = 2
		c.Interval = time.Hour // a batch leaves when it holds 2 messages
	})
	srv.FailWith(400, -1)
	jobs := []mapping.Job{nthJob(t, 1), nthJob(t, 2)}
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.Send(context.Background(), j)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if d := deliveryError(t, err); d.Permanent || !strings.Contains(err.Error(), "batch of 2") {
			t.Errorf("job %d in a refused batch: %v (permanent %v), want transient", i, err, d.Permanent)
		}
	}
	// Alone, each is refused for good; a BatchSize of 2 would otherwise hold
	// the first for an hour.
	for i, j := range jobs {
		err := f.Send(context.Background(), j)
		if d := deliveryError(t, err); !d.Permanent {
			t.Errorf("job %d alone: %v, want permanent", i, err)
		}
	}
	if n := srv.Attempts(); n != 3 {
		t.Errorf("%d requests, want 3 (one batch, two alone)", n)
	}
}

func TestForwarderBatchesConcurrentSends(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f := newForwarder(t, srv, func(c *segment.ForwarderConfig) { c.Interval = 50 * time.Millisecond })
	const n = 20
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Send(context.Background(), nthJob(t, i)); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d sends failed", failed.Load())
	}
	msgs := srv.Messages()
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.MessageID] = true
	}
	if len(msgs) != n || len(seen) != n {
		t.Errorf("%d messages, %d distinct, want %d of each", len(msgs), len(seen), n)
	}
	if b := len(srv.Batches()); b >= n {
		t.Errorf("%d requests for %d concurrent sends, want them batched", b, n)
	}
}

func TestForwarderContextAndClose(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f := newForwarder(t, srv, func(c *segment.ForwarderConfig) { c.Timeout = 300 * time.Millisecond })
	srv.Hang(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if d := deliveryError(t, f.Send(ctx, identifyJob(t))); d.Permanent {
		t.Error("cancelled context: permanent, want transient")
	}
	srv.Recover()
	if err := f.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if d := deliveryError(t, f.Send(context.Background(), identifyJob(t))); d.Permanent {
		t.Error("Send after Close: permanent, want transient")
	}
}

func TestForwarderBadPayloads(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f := newForwarder(t, srv, func(c *segment.ForwarderConfig) { c.ResolveUserID = nil })
	tests := []struct{ name, payload string }{
		{"not JSON", `{"type":`},
		{"unknown type", `{"type":"delete","messageId":"m","userId":"u","timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"nobody", `{"type":"identify","messageId":"m","timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"track without event", `{"type":"track","messageId":"m","userId":"u","timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"traits not an object", `{"type":"identify","messageId":"m","userId":"u","traits":[1],"timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"token without resolver", `{"type":"track","messageId":"m","jimoToken":"t","event":"e","timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"over 32 KB", `{"type":"track","messageId":"m","userId":"u","event":"e","timestamp":"2024-05-14T09:02:00Z","properties":{"p":"` + strings.Repeat("x", 33<<10) + `"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.Send(context.Background(), mapping.Job{Destination: segment.Destination, MessageID: "m", Payload: []byte(tt.payload)})
			if d := deliveryError(t, err); !d.Permanent {
				t.Errorf("%v: transient, want permanent", err)
			}
		})
	}
	if n := srv.Attempts(); n != 0 {
		t.Errorf("%d requests for bad payloads, want none", n)
	}
}

func TestForwarderAlwaysMarks(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f := newForwarder(t, srv, nil)
	// A payload built without the marker still leaves with it.
	payload := `{"type":"track","messageId":"m-unmarked","userId":"u","event":"e","timestamp":"2024-05-14T09:02:00Z","context":{"bridge":{"hop":1},"ip":"192.0.2.1"}}`
	if err := f.Send(context.Background(), mapping.Job{Destination: segment.Destination, MessageID: "m-unmarked", Payload: []byte(payload)}); err != nil {
		t.Fatal(err)
	}
	m := srv.Messages()[0]
	bridge, _ := m.Context["bridge"].(map[string]any)
	if !m.Forwarded || fmt.Sprint(bridge["hop"]) != "1" || m.Context["ip"] != "192.0.2.1" {
		t.Errorf("context %v, want the marker added to what was there", m.Context)
	}
}

func TestNewForwarderNeedsWriteKey(t *testing.T) {
	if _, err := segment.NewForwarder(segment.ForwarderConfig{}); err == nil {
		t.Error("no write key: nil error, want one")
	}
}

// BenchmarkForwarderSend measures deliveries per second to a fake Segment
// that answers at once, from concurrent senders (the outbox's workers; 32 by
// default). A Send waits for its batch to leave: at once when it is full,
// else at the next Interval tick, so partial batches cost up to Interval.
func BenchmarkForwarderSend(b *testing.B) {
	for _, bc := range []struct {
		name      string
		interval  time.Duration
		batchSize int
		senders   int
	}{
		{"default_32_senders", 0, 0, 32},
		{"default_8_senders", 0, 0, 8},
		{"default_128_senders", 0, 0, 128},
		{"interval25ms_batch100_32_senders", 25 * time.Millisecond, 100, 32},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := segmenttest.NewServer(b, writeKey)
			f := newForwarder(b, srv, func(c *segment.ForwarderConfig) {
				c.Interval, c.BatchSize = bc.interval, bc.batchSize
			})
			jobs := make([]mapping.Job, 1024)
			for i := range jobs {
				jobs[i] = nthJob(b, i)
			}
			senders := bc.senders
			var next, failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if err := f.Send(context.Background(), jobs[i%int64(len(jobs))]); err != nil {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
			if failed.Load() > 0 {
				b.Fatalf("%d sends failed", failed.Load())
			}
		})
	}
}
