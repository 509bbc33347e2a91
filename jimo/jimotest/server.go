// Package jimotest is a fake of Jimo's server-side events API for tests: an
// httptest server that takes POST /sse/webhook, checks the x-api-key header,
// records exactly what it receives, and fails on command (an HTTP status,
// 429 with Retry-After, hanging past the client's timeout, refusing
// connections).
package jimotest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping/outbox/outboxtest"
)

// Path is where the fake takes server-side events.
const Path = "/sse/webhook"

// Request is one accepted request, as received.
type Request struct {
	// Body is the request body, byte for byte.
	Body []byte
	// IdempotencyKey is the Idempotency-Key header.
	IdempotencyKey string
	// Header holds all the request's headers.
	Header http.Header
	// Event is Body decoded.
	Event Event
	// Received is when the fake accepted it.
	Received time.Time
}

// Event is a server-side event body decoded; numbers decode as json.Number.
type Event struct {
	UserID     string         `json:"userId"`
	Type       string         `json:"type"`
	Timestamp  string         `json:"timestamp"`
	Traits     map[string]any `json:"traits"`
	Event      string         `json:"event"`
	Properties map[string]any `json:"properties"`
}

// Server is the fake Jimo API. Its failure controls (FailWith, RetryAfter,
// Hang, Refuse, Recover) can be used while clients send.
type Server struct {
	*outboxtest.Faults
	// URL is the base URL to configure as the Jimo endpoint.
	URL    string
	apiKey string

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever a request is recorded
	requests []Request
	attempts int
}

// NewServer starts a fake that accepts apiKey in x-api-key; it is closed
// when the test ends.
func NewServer(tb testing.TB, apiKey string) *Server {
	s := &Server{apiKey: apiKey, changed: make(chan struct{})}
	s.Faults = outboxtest.NewFaults(http.HandlerFunc(s.serve))
	s.URL = s.Faults.URL()
	tb.Cleanup(s.Close)
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.attempts++
	s.mu.Unlock()
	// Read the body first: the server then notices a client that goes away
	// while the request hangs.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return // the client went away
	}
	if !s.Before(w, r) {
		return
	}
	if r.URL.Path != Path {
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, `{"error":"method not allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("x-api-key") != s.apiKey {
		http.Error(w, `{"error":"invalid api key"}`, http.StatusUnauthorized)
		return
	}
	ev, problem := decode(body)
	if problem != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": problem})
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, Request{
		Body:           body,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
		Header:         r.Header.Clone(),
		Event:          ev,
		Received:       time.Now(),
	})
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"success":true}`))
}

// decode checks a body as Jimo would: a JSON object with a userId, a type of
// identify (with traits) or track (with an event), and a timestamp.
func decode(body []byte) (Event, string) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var ev Event
	if err := d.Decode(&ev); err != nil {
		return Event{}, "body is not a JSON event object: " + err.Error()
	}
	switch {
	case ev.UserID == "":
		return ev, "userId is required"
	case ev.Timestamp == "":
		return ev, "timestamp is required"
	case ev.Type == "identify" && ev.Traits == nil:
		return ev, "traits is required for identify"
	case ev.Type == "track" && ev.Event == "":
		return ev, "event is required for track"
	case ev.Type != "identify" && ev.Type != "track":
		return ev, "type must be identify or track"
	}
	if _, err := time.Parse(time.RFC3339Nano, ev.Timestamp); err != nil {
		return ev, "timestamp is not ISO-8601"
	}
	return ev, ""
}

// Requests returns the accepted requests, in the order they were received.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Attempts returns how many requests reached the server, failed ones included.
func (s *Server) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// WaitFor waits until at least n requests have been accepted, and returns
// them; the error says how many arrived when timeout passes first.
func (s *Server) WaitFor(n int, timeout time.Duration) ([]Request, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, changed := len(s.requests), s.changed
		s.mu.Unlock()
		if got >= n {
			return s.Requests(), nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return s.Requests(), fmt.Errorf("jimotest: %d requests accepted within %v, want %d", got, timeout, n)
		}
	}
}
