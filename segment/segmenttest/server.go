// Package segmenttest is a fake of Segment's HTTP Tracking API for tests: an
// httptest server that decodes what analytics-go sends (POST /v1/batch,
// gzip or not; the single-call routes too), checks Basic auth against a
// write key, records every message exactly as received, and fails on command
// (an HTTP status, 429 with Retry-After, hanging past the client's timeout,
// refusing connections).
package segmenttest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping/outbox/outboxtest"
)

// Message is one message the fake accepted, as received.
type Message struct {
	// Raw is the message's JSON exactly as it appeared in the request.
	Raw json.RawMessage
	// The message's fields, decoded (numbers as json.Number).
	Type         string
	MessageID    string
	UserID       string
	AnonymousID  string
	Event        string
	Name         string
	GroupID      string
	PreviousID   string
	Timestamp    string
	Traits       map[string]any
	Properties   map[string]any
	Context      map[string]any
	Integrations map[string]any
	// Forwarded is true when the context carries "bridge":{"forwarded":true}.
	Forwarded bool
	// Batch is the index, in Batches, of the request that carried it.
	Batch int
}

// Batch is one accepted request.
type Batch struct {
	// Body is the request body after decompression.
	Body []byte
	// Gzip is true when the body came with Content-Encoding: gzip.
	Gzip bool
	// Path is the request path (/v1/batch, /v1/identify, …).
	Path string
	// MessageID, SentAt and Context are the batch's own fields.
	MessageID string
	SentAt    string
	Context   map[string]any
	// Header holds the request's headers.
	Header http.Header
}

// Server is the fake Segment API. Its failure controls (FailWith,
// RetryAfter, Hang, Refuse, Recover) can be used while clients send.
type Server struct {
	*outboxtest.Faults
	// URL is the endpoint to configure (analytics.Config.Endpoint).
	URL      string
	writeKey string

	mu       sync.Mutex
	changed  chan struct{}
	messages []Message
	batches  []Batch
	attempts int
}

// NewServer starts a fake that accepts writeKey as Basic auth user (with an
// empty password, as Segment's libraries send it); it is closed when the test ends.
func NewServer(tb testing.TB, writeKey string) *Server {
	s := &Server{writeKey: writeKey, changed: make(chan struct{})}
	s.Faults = outboxtest.NewFaults(http.HandlerFunc(s.serve))
	s.URL = s.Faults.URL()
	tb.Cleanup(s.Close)
	return s
}

// maxBody is the largest decompressed body accepted, like Segment's 500 KB batch limit (with room).
const maxBody = 1 << 20

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.attempts++
	s.mu.Unlock()
	// Read the body first: the server then notices a client that goes away
	// while the request hangs.
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return // the client went away
	}
	if !s.Before(w, r) {
		return
	}
	route, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok || !knownRoute(route) {
		fail(w, http.StatusNotFound, "no such route")
		return
	}
	if r.Method != http.MethodPost {
		fail(w, http.StatusMethodNotAllowed, "POST only")
		return
	}
	if user, _, ok := r.BasicAuth(); !ok || user != s.writeKey {
		fail(w, http.StatusUnauthorized, "invalid write key")
		return
	}
	var body io.Reader = bytes.NewReader(raw)
	gz := strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip")
	if gz {
		zr, err := gzip.NewReader(body)
		if err != nil {
			fail(w, http.StatusBadRequest, "bad gzip body")
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err != nil {
		fail(w, http.StatusBadRequest, "unreadable body")
		return
	}
	if len(b) > maxBody {
		fail(w, http.StatusBadRequest, "body too large")
		return
	}
	batch, msgs, problem := decode(route, b)
	if problem != "" {
		fail(w, http.StatusBadRequest, problem)
		return
	}
	batch.Gzip, batch.Path, batch.Header = gz, r.URL.Path, r.Header.Clone()
	s.mu.Lock()
	for i := range msgs {
		msgs[i].Batch = len(s.batches)
	}
	s.batches = append(s.batches, batch)
	s.messages = append(s.messages, msgs...)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"success":true}`))
}

func knownRoute(route string) bool {
	switch route {
	case "batch", "import", "identify", "track", "page", "screen", "group", "alias":
		return true
	}
	return false
}

func fail(w http.ResponseWriter, status int, problem string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": problem})
}

// decode reads a batch body ({"batch":[...],"context","sentAt","messageId"})
// or a single call's body into its messages.
func decode(route string, b []byte) (Batch, []Message, string) {
	batch := Batch{Body: b}
	var raws []json.RawMessage
	if route == "batch" || route == "import" {
		var env struct {
			Batch     []json.RawMessage `json:"batch"`
			MessageID string            `json:"messageId"`
			SentAt    string            `json:"sentAt"`
			Context   map[string]any    `json:"context"`
		}
		if err := unmarshal(b, &env); err != nil {
			return batch, nil, "invalid JSON: " + err.Error()
		}
		if env.Batch == nil {
			return batch, nil, `no "batch" array`
		}
		batch.MessageID, batch.SentAt, batch.Context = env.MessageID, env.SentAt, env.Context
		raws = env.Batch
	} else {
		raws = []json.RawMessage{b}
	}
	msgs := make([]Message, 0, len(raws))
	for i, raw := range raws {
		var f struct {
			Type         string         `json:"type"`
			MessageID    string         `json:"messageId"`
			UserID       string         `json:"userId"`
			AnonymousID  string         `json:"anonymousId"`
			Event        string         `json:"event"`
			Name         string         `json:"name"`
			GroupID      string         `json:"groupId"`
			PreviousID   string         `json:"previousId"`
			Timestamp    string         `json:"timestamp"`
			Traits       map[string]any `json:"traits"`
			Properties   map[string]any `json:"properties"`
			Context      map[string]any `json:"context"`
			Integrations map[string]any `json:"integrations"`
		}
		if err := unmarshal(raw, &f); err != nil {
			return batch, nil, fmt.Sprintf("message %d: invalid: %v", i, err)
		}
		if f.Type == "" && route != "batch" && route != "import" {
			f.Type = route
		}
		m := Message{
			Raw: append(json.RawMessage(nil), raw...), Type: f.Type, MessageID: f.MessageID,
			UserID: f.UserID, AnonymousID: f.AnonymousID, Event: f.Event, Name: f.Name,
			GroupID: f.GroupID, PreviousID: f.PreviousID, Timestamp: f.Timestamp,
			Traits: f.Traits, Properties: f.Properties, Context: f.Context, Integrations: f.Integrations,
		}
		if bridge, ok := f.Context["bridge"].(map[string]any); ok {
			m.Forwarded = bridge["forwarded"] == true
		}
		msgs = append(msgs, m)
	}
	return batch, msgs, ""
}

func unmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// Messages returns the accepted messages, in the order received.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Batches returns the accepted requests, in the order received.
func (s *Server) Batches() []Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Batch(nil), s.batches...)
}

// Attempts returns how many requests reached the server, failed ones included.
func (s *Server) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// WaitFor waits until at least n messages have been accepted, and returns
// them; the error says how many arrived when timeout passes first.
func (s *Server) WaitFor(n int, timeout time.Duration) ([]Message, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, changed := len(s.messages), s.changed
		s.mu.Unlock()
		if got >= n {
			return s.Messages(), nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return s.Messages(), fmt.Errorf("segmenttest: %d messages accepted within %v, want %d", got, timeout, n)
		}
	}
}
