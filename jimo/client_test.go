package jimo_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/jimo/jimotest"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
)

const apiKey = "jimo-secret-api-key"

func testJob(t testing.TB) mapping.Job {
	t.Helper()
	j, ok := jimo.IdentifyJob(segmentMessage(t, "segment/webhook_identify.json"), jimo.ModeShared, nil)
	if !ok {
		t.Fatal("no job")
	}
	return j
}

// deliveryError returns err as a *outbox.DeliveryError, failing the test otherwise.
func deliveryError(t *testing.T, err error) *outbox.DeliveryError {
	t.Helper()
	var d *outbox.DeliveryError
	if !errors.As(err, &d) {
		t.Fatalf("error %v (%T), want a *outbox.DeliveryError", err, err)
	}
	if strings.Contains(err.Error(), apiKey) {
		t.Errorf("error %q contains the API key", err)
	}
	return d
}

func TestClientSend(t *testing.T) {
	srv := jimotest.NewServer(t, apiKey)
	c := jimo.NewClient(srv.URL+"/", apiKey, nil)
	j := testJob(t)
	if err := c.Send(context.Background(), j); err != nil {
		t.Fatalf("Send: %v", err)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if string(r.Body) != string(j.Payload) {
		t.Errorf("body\ngot  %s\nwant %s", r.Body, j.Payload)
	}
	if r.IdempotencyKey != j.MessageID {
		t.Errorf("Idempotency-Key %q, want %q", r.IdempotencyKey, j.MessageID)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if r.Event.Type != "identify" || r.Event.UserID != "usr_2b7f9d1c4e6a8b0d" || r.Event.Traits["email"] != "ada@example.com" {
		t.Errorf("event %+v, want Ada's identify", r.Event)
	}
}

func TestClientFailures(t *testing.T) {
	j := testJob(t)
	tests := []struct {
		name string
		// fault sets the failure up and returns the client's options.
		fault      func(srv *jimotest.Server)
		key        string
		timeout    time.Duration
		permanent  bool
		retryAfter time.Duration
		contains   string
	}{
		{name: "500 is transient", fault: func(s *jimotest.Server) { s.FailWith(500, 1) }, contains: "500"},
		{name: "503 is transient", fault: func(s *jimotest.Server) { s.FailWith(503, 1) }, contains: "503"},
		{name: "408 is transient", fault: func(s *jimotest.Server) { s.FailWith(408, 1) }, contains: "408"},
		{name: "429 carries Retry-After", fault: func(s *jimotest.Server) { s.RetryAfter(7, 1) }, retryAfter: 7 * time.Second, contains: "429"},
		{name: "400 is permanent with the body", fault: func(s *jimotest.Server) { s.FailWith(400, 1) }, permanent: true, contains: "injected failure: Bad Request"},
		{name: "422 is permanent", fault: func(s *jimotest.Server) { s.FailWith(422, 1) }, permanent: true, contains: "422"},
		{name: "wrong API key is permanent", fault: func(s *jimotest.Server) {}, key: "wrong-key", permanent: true, contains: "401"},
		{name: "hang past the timeout is transient", fault: func(s *jimotest.Server) { s.Hang(10 * time.Second) }, timeout: 200 * time.Millisecond, contains: "deadline"},
		{name: "refused connection is transient", fault: func(s *jimotest.Server) { s.Refuse() }, contains: "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := jimotest.NewServer(t, apiKey)
			key := apiKey
			if tt.key != "" {
				key = tt.key
			}
			c := jimo.NewClient(srv.URL, key, nil)
			tt.fault(srv)
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			err := c.Send(ctx, j)
			d := deliveryError(t, err)
			if d.Permanent != tt.permanent {
				t.Errorf("permanent = %v, want %v (%v)", d.Permanent, tt.permanent, err)
			}
			if outbox.Retryable(err) == tt.permanent {
				t.Errorf("Retryable = %v, want %v", outbox.Retryable(err), !tt.permanent)
			}
			if d.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", d.RetryAfter, tt.retryAfter)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
			if n := len(srv.Requests()); n != 0 {
				t.Errorf("%d requests recorded, want none", n)
			}
			// No retries inside the client: one attempt at most.
			if n := srv.Attempts(); n > 1 {
				t.Errorf("%d attempts, want at most 1", n)
			}
			srv.Recover()
			if key == apiKey {
				if err := c.Send(context.Background(), j); err != nil {
					t.Fatalf("Send after Recover: %v", err)
				}
				if n := len(srv.Requests()); n != 1 {
					t.Errorf("%d requests after Recover, want 1", n)
				}
			}
		})
	}
}

func TestClientSnippetBoundedAndRedacted(t *testing.T) {
	body := strings.Repeat("x", 150) + " key=" + apiKey + " " + strings.Repeat("y", 500)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(body))
	}))
	defer ts.Close()
	err := jimo.NewClient(ts.URL, apiKey, nil).Send(context.Background(), testJob(t))
	d := deliveryError(t, err)
	if !d.Permanent {
		t.Errorf("permanent = false, want true")
	}
	_, quoted, _ := strings.Cut(err.Error(), "Bad Request: ")
	if len(quoted) > 200 {
		t.Errorf("error quotes %d bytes of the body, want at most 200: %q", len(quoted), err)
	}
	if !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("error %q: want the key in the body redacted", err)
	}
}

func TestClientBadPayloadIsPermanent(t *testing.T) {
	srv := jimotest.NewServer(t, apiKey)
	c := jimo.NewClient(srv.URL, apiKey, nil)
	for _, p := range []string{"", "[]", `{"userId":`} {
		err := c.Send(context.Background(), mapping.Job{Destination: jimo.Destination, MessageID: "m", Payload: []byte(p)})
		if d := deliveryError(t, err); !d.Permanent {
			t.Errorf("payload %q: permanent = false, want true", p)
		}
	}
	if n := srv.Attempts(); n != 0 {
		t.Errorf("%d requests for bad payloads, want none", n)
	}
}

// BenchmarkClientSend measures deliveries per second to a fake Jimo that
// answers at once, from 32 concurrent senders (the outbox's default workers).
func BenchmarkClientSend(b *testing.B) {
	srv := jimotest.NewServer(b, apiKey)
	c := jimo.NewClient(srv.URL, apiKey, nil)
	j := testJob(b)
	const senders = 32
	var next atomic.Int64
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := c.Send(context.Background(), j); err != nil {
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
}
