package segment_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
	"github.com/bridgeworks/bridge/segment"
	"github.com/bridgeworks/bridge/segment/segmenttest"
)

const writeKey = "wk_forward"

// forwardTimeout bounds each request in these tests.
const forwardTimeout = 2 * time.Second

// countingTransport counts the requests the Forwarder itself makes, those
// that never reach the server included.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func newForwarder(t testing.TB, srv *segmenttest.Server, edit func(*segment.ForwarderConfig)) (*segment.Forwarder, *countingTransport) {
	t.Helper()
	rt := &countingTransport{}
	cfg := segment.ForwarderConfig{
		Endpoint:   srv.URL,
		WriteKey:   writeKey,
		HTTPClient: &http.Client{Timeout: forwardTimeout, Transport: rt},
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
	return f, rt
}

func deliveryError(t *testing.T, err error) *outbox.DeliveryError {
	t.Helper()
	var d *outbox.DeliveryError
	if !errors.As(err, &d) {
		t.Fatalf("error %v (%T), want a *outbox.DeliveryError", err, err)
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

// decodeJSON decodes b with numbers kept as written.
func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return m
}

// TestForwarderDelivers: each job's payload reaches Segment as one request
// holding one message, field for field: nothing lost, nothing added but the
// resolved userId in place of the jimoToken; the identify byte for byte.
func TestForwarderDelivers(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f, rt := newForwarder(t, srv, nil)
	identify := identifyJob(t)
	track, ok := jimoTrack(webhookMessage(t, "jimo/webhook_tour_completed.json", jimo.ModeShared))
	if !ok {
		t.Fatal("no track job")
	}
	relay, ok := segment.RelayJob(relayEvents(t, "segment/api_batch_analytics_go.json", "batch")[1].Message.Raw)
	if !ok {
		t.Fatal("no relay job")
	}
	jobs := []mapping.Job{identify, track, relay}
	before := time.Now().UTC()
	for _, j := range jobs {
		if err := f.Send(context.Background(), j); err != nil {
			t.Fatalf("Send %s: %v", j.MessageID, err)
		}
	}
	after := time.Now().UTC()
	msgs, batches := srv.Messages(), srv.Batches()
	if len(msgs) != 3 || len(batches) != 3 || rt.n.Load() != 3 {
		t.Fatalf("%d messages in %d requests (%d sent), want 3 in 3", len(msgs), len(batches), rt.n.Load())
	}
	for i, m := range msgs {
		want := decodeJSON(t, jobs[i].Payload)
		if tok, ok := want["jimoToken"]; ok {
			delete(want, "jimoToken")
			want["userId"] = tok // shared mode: the token is the user ID
		}
		if got := decodeJSON(t, m.Raw); !reflect.DeepEqual(got, want) {
			t.Errorf("message %d:\n got %s\nwant the payload %s", i, m.Raw, jobs[i].Payload)
		}
		if m.Batch != i || !m.Forwarded {
			t.Errorf("message %d in request %d, forwarded %v; want its own request, marked", i, m.Batch, m.Forwarded)
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
	wantIdentify := `{"type":"identify","messageId":"` + identify.MessageID + `","anonymousId":"6d2a4f1e-8c3b-4a5d-b7e9-0f1a2b3c4d5e",` +
		`"userId":"usr_ada_0f8fad5bd9cb469f","timestamp":"2025-11-23T12:00:00Z","context":{"bridge":{"forwarded":true}},` +
		`"traits":{"email":"ada@example.com","name":"Ada Lovelace","seats":12},"integrations":{"Jimo":false,"Jimo (Actions)":false}}`
	b := batches[0]
	sentAt, err := time.Parse(time.RFC3339Nano, b.SentAt)
	if err != nil || sentAt.Before(before) || sentAt.After(after) {
		t.Errorf("sentAt %q, want the time of sending (%v..%v)", b.SentAt, before, after)
	}
	wantBody := `{"messageId":"` + identify.MessageID + `","sentAt":"` + b.SentAt + `","batch":[` + wantIdentify + `],` +
		`"context":{"library":{"name":"analytics-go","version":"` + analytics.Version + `"}}}`
	if string(b.Body) != wantBody {
		t.Errorf("request body\n got %s\nwant %s", b.Body, wantBody)
	}
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(writeKey+":"))
	if b.Path != "/v1/batch" || b.Gzip || b.Header.Get("Authorization") != wantAuth || b.Header.Get("Content-Type") != "application/json" {
		t.Errorf("request %s gzip %v headers %v, want POST /v1/batch, plain JSON, Basic auth with the write key", b.Path, b.Gzip, b.Header)
	}
}

// TestForwarderEncodesAsAnalyticsGo: the message the Forwarder sends is the
// one analytics-go's own client sends for the same call, byte for byte.
func TestForwarderEncodesAsAnalyticsGo(t *testing.T) {
	ours := segmenttest.NewServer(t, writeKey)
	f, _ := newForwarder(t, ours, nil)
	job := identifyJob(t)
	if err := f.Send(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	theirs := segmenttest.NewServer(t, writeKey)
	client, err := analytics.NewWithConfig(writeKey, analytics.Config{Endpoint: theirs.URL, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Enqueue(analytics.Identify{
		MessageId: job.MessageID, UserId: "usr_ada_0f8fad5bd9cb469f", AnonymousId: "6d2a4f1e-8c3b-4a5d-b7e9-0f1a2b3c4d5e", Timestamp: t0,
		Context:      &analytics.Context{Extra: map[string]any{"bridge": map[string]any{"forwarded": true}}},
		Traits:       analytics.NewTraits().SetEmail("ada@example.com").SetName("Ada Lovelace").Set("seats", 12),
		Integrations: analytics.NewIntegrations().Disable("Jimo").Disable("Jimo (Actions)"),
	}); err != nil {
		t.Fatal(err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	got, want := ours.Messages(), theirs.Messages()
	if len(got) != 1 || len(want) != 1 {
		t.Fatalf("%d and %d messages, want 1 each", len(got), len(want))
	}
	if !bytes.Equal(got[0].Raw, want[0].Raw) {
		t.Errorf("message\n got %s\nwant %s (analytics-go's)", got[0].Raw, want[0].Raw)
	}
	g, w := decodeJSON(t, ours.Batches()[0].Body), decodeJSON(t, theirs.Batches()[0].Body)
	for _, m := range []map[string]any{g, w} {
		delete(m, "batch")
		delete(m, "messageId")
		delete(m, "sentAt")
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("batch fields %v, want analytics-go's %v", g, w)
	}
}

func TestForwarderResolvesJimoTokens(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f, _ := newForwarder(t, srv, nil)
	j, ok := jimoTrack(webhookMessage(t, "jimo/webhook_survey_answered.json", jimo.ModeDerived))
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

	unknown, _ := jimoTrack(mapping.Message{Source: mapping.SourceJimoWebhook, ID: "w2", Event: "tour.started", JimoToken: "not-linked-yet", Timestamp: t0})
	err := f.Send(context.Background(), unknown)
	if d := deliveryError(t, err); d.Permanent || !strings.Contains(err.Error(), "no user") {
		t.Errorf("unresolved token: %v (permanent %v), want transient", err, d.Permanent)
	}
	failing, _ := newForwarder(t, srv, func(c *segment.ForwarderConfig) {
		c.ResolveUserID = func(context.Context, string) (string, error) { return "", errors.New("database is locked") }
	})
	if d := deliveryError(t, failing.Send(context.Background(), j)); d.Permanent {
		t.Errorf("resolver error: permanent, want transient")
	}
	if n := srv.Attempts(); n != 1 {
		t.Errorf("%d requests, want still 1", n)
	}
}

// TestForwarderFailures: every failure is classified after exactly one
// request, whatever it is; retrying is the outbox's business.
func TestForwarderFailures(t *testing.T) {
	tests := []struct {
		name       string
		fault      func(*segmenttest.Server)
		key        string
		permanent  bool
		retryAfter time.Duration
		contains   string
		reached    int  // requests that reach the server
		timeout    bool // the error is a net.Error timeout
	}{
		{name: "400 is permanent", fault: func(s *segmenttest.Server) { s.FailWith(400, -1) }, permanent: true, contains: "400 Bad Request: {\"error\":\"injected failure: Bad Request\"}", reached: 1},
		{name: "wrong write key is permanent", key: "wk_wrong", permanent: true, contains: "401", reached: 1},
		{name: "408 is transient", fault: func(s *segmenttest.Server) { s.FailWith(408, -1) }, contains: "408", reached: 1},
		{name: "429 is transient with Retry-After", fault: func(s *segmenttest.Server) { s.RetryAfter(9, -1) }, retryAfter: 9 * time.Second, contains: "429", reached: 1},
		{name: "500 is transient", fault: func(s *segmenttest.Server) { s.FailWith(500, -1) }, contains: "500", reached: 1},
		{name: "503 is transient", fault: func(s *segmenttest.Server) { s.FailWith(503, -1) }, contains: "503", reached: 1},
		{name: "a hang is transient at the client's timeout", fault: func(s *segmenttest.Server) { s.Hang(time.Minute) }, contains: "POST /v1/batch", reached: 1, timeout: true},
		{name: "a refused connection is transient", fault: func(s *segmenttest.Server) { s.Refuse() }, contains: "refused", reached: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := segmenttest.NewServer(t, writeKey)
			f, rt := newForwarder(t, srv, func(c *segment.ForwarderConfig) {
				if tt.key != "" {
					c.WriteKey = tt.key
				}
				c.HTTPClient.Timeout = 300 * time.Millisecond
			})
			if tt.fault != nil {
				tt.fault(srv)
			}
			err := f.Send(context.Background(), identifyJob(t))
			d := deliveryError(t, err)
			if d.Permanent != tt.permanent || outbox.Retryable(err) == tt.permanent {
				t.Errorf("permanent %v, Retryable %v; want permanent %v (%v)", d.Permanent, outbox.Retryable(err), tt.permanent, err)
			}
			if ne := net.Error(nil); (errors.As(err, &ne) && ne.Timeout()) != tt.timeout {
				t.Errorf("error %v: a timeout %v, want %v", err, !tt.timeout, tt.timeout)
			}
			if d.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter %v, want %v", d.RetryAfter, tt.retryAfter)
			}
			if !strings.Contains(err.Error(), tt.contains) || strings.Contains(err.Error(), writeKey) {
				t.Errorf("error %q does not mention %q (or quotes the write key)", err, tt.contains)
			}
			if n, r := rt.n.Load(), srv.Attempts(); n != 1 || r != tt.reached {
				t.Errorf("%d requests sent, %d reached the fake; want 1 sent, %d reached", n, r, tt.reached)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("%d messages accepted, want none", n)
			}
			if tt.key != "" {
				return
			}
			// Nothing stuck: the next Send (the outbox's retry) goes through, in one request.
			srv.Recover()
			if err := f.Send(context.Background(), identifyJob(t)); err != nil {
				t.Fatalf("Send after Recover: %v", err)
			}
			if n, m := rt.n.Load(), len(srv.Messages()); n != 2 || m != 1 {
				t.Errorf("%d requests, %d messages after Recover; want 2 and 1", n, m)
			}
		})
	}
}

// TestForwarderRetriesAreTheOutboxs: two 503s, then success: each Send is
// one attempt, so the job takes three Sends.
func TestForwarderRetriesAreTheOutboxs(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f, rt := newForwarder(t, srv, nil)
	srv.FailWith(503, 2)
	for i := range 2 {
		if err := f.Send(context.Background(), identifyJob(t)); !outbox.Retryable(err) || err == nil {
			t.Fatalf("Send %d: %v, want a transient error", i, err)
		}
	}
	if err := f.Send(context.Background(), identifyJob(t)); err != nil {
		t.Fatalf("third Send: %v", err)
	}
	if n, a, m := rt.n.Load(), srv.Attempts(), len(srv.Messages()); n != 3 || a != 3 || m != 1 {
		t.Errorf("%d requests sent, %d received, %d messages; want 3, 3, 1", n, a, m)
	}
}

func TestForwarderContextCancelled(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f, rt := newForwarder(t, srv, func(c *segment.ForwarderConfig) { c.HTTPClient.Timeout = 0 })
	srv.Hang(time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Send(ctx, identifyJob(t)) }()
	for deadline := time.Now().Add(5 * time.Second); srv.Attempts() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the fake")
		}
	}
	cancel()
	select {
	case err := <-done:
		if d := deliveryError(t, err); d.Permanent || !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Send: %v (permanent %v), want transient, wrapping context.Canceled", err, d.Permanent)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Send did not return when its context was cancelled")
	}
	if n := rt.n.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	srv.Recover()
	if err := f.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := f.Send(context.Background(), identifyJob(t)); err != nil {
		t.Errorf("Send after Close: %v, want the Forwarder still usable", err)
	}
}

func TestForwarderConcurrentSends(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f, _ := newForwarder(t, srv, nil)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = f.Send(context.Background(), nthJob(t, i)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range srv.Messages() {
		seen[m.MessageID] = true
	}
	if len(seen) != n || len(srv.Messages()) != n || len(srv.Batches()) != n {
		t.Errorf("%d messages (%d distinct) in %d requests, want %d of each", len(srv.Messages()), len(seen), len(srv.Batches()), n)
	}
}

func TestForwarderBadPayloads(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f, rt := newForwarder(t, srv, func(c *segment.ForwarderConfig) { c.ResolveUserID = nil })
	tests := []struct{ name, payload string }{
		{"not JSON", `{"type":`},
		{"unknown type", `{"type":"delete","messageId":"m","userId":"u","timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"nobody", `{"type":"identify","messageId":"m","timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"track without event", `{"type":"track","messageId":"m","userId":"u","timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"group without groupId", `{"type":"group","messageId":"m","userId":"u","timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"traits not an object", `{"type":"identify","messageId":"m","userId":"u","traits":[1],"timestamp":"2024-05-14T09:02:00Z","context":{}}`},
		{"context not an object", `{"type":"identify","messageId":"m","userId":"u","timestamp":"2024-05-14T09:02:00Z","context":"x"}`},
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
	if n := rt.n.Load(); n != 0 {
		t.Errorf("%d requests for bad payloads, want none", n)
	}
}

func TestForwarderAlwaysMarks(t *testing.T) {
	srv := segmenttest.NewServer(t, writeKey)
	f, _ := newForwarder(t, srv, nil)
	// A payload built without the marker still leaves with it, the rest of
	// its context as it was, numbers included.
	payload := `{"type":"track","messageId":"m-unmarked","userId":"u","event":"e","timestamp":"2024-05-14T09:02:00.123+02:00",` +
		`"context":{"bridge":{"hop":1},"ip":"192.0.2.1","n":12345678901234567890},"properties":{"big":1.50}}`
	if err := f.Send(context.Background(), mapping.Job{Destination: segment.Destination, MessageID: "m-unmarked", Payload: []byte(payload)}); err != nil {
		t.Fatal(err)
	}
	want := `{"type":"track","messageId":"m-unmarked","userId":"u","event":"e","timestamp":"2024-05-14T09:02:00.123+02:00",` +
		`"context":{"bridge":{"forwarded":true,"hop":1},"ip":"192.0.2.1","n":12345678901234567890},"properties":{"big":1.50}}`
	if got := string(srv.Messages()[0].Raw); got != want {
		t.Errorf("message\n got %s\nwant %s", got, want)
	}
}

func TestNewForwarderNeedsWriteKey(t *testing.T) {
	if _, err := segment.NewForwarder(segment.ForwarderConfig{}); err == nil {
		t.Error("no write key: nil error, want one")
	}
}

// BenchmarkForwarderSend measures deliveries per second to a fake Segment
// that answers at once, from concurrent senders (the outbox's workers), one
// request per job.
func BenchmarkForwarderSend(b *testing.B) {
	for _, senders := range []int{8, 32, 128} {
		b.Run(fmt.Sprintf("%d_senders", senders), func(b *testing.B) {
			srv := segmenttest.NewServer(b, writeKey)
			f, _ := newForwarder(b, srv, func(c *segment.ForwarderConfig) {
				t := http.DefaultTransport.(*http.Transport).Clone()
				t.MaxIdleConnsPerHost = senders
				c.HTTPClient = &http.Client{Timeout: forwardTimeout, Transport: t}
			})
			jobs := make([]mapping.Job, 1024)
			for i := range jobs {
				jobs[i] = nthJob(b, i)
			}
			var next, failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range senders {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						if err := f.Send(context.Background(), jobs[i%int64(len(jobs))]); err != nil {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
			if failed.Load() > 0 {
				b.Fatalf("%d sends failed", failed.Load())
			}
		})
	}
}
