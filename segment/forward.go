package segment

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/mapping"
)

// Defaults of ForwarderConfig.
const (
	// DefaultForwardTimeout bounds one job's Send.
	DefaultForwardTimeout = 10 * time.Second
	// DefaultForwardInterval is how long a partial batch waits for more messages.
	DefaultForwardInterval = 5 * time.Millisecond
	// DefaultForwardBatch is the outbox's default worker count: when every
	// worker waits on Segment, their batch is full and leaves at once.
	DefaultForwardBatch = 32
)

// analytics-go retries a failed batch ten times, waiting RetryAfter(i) after
// attempt i. The Forwarder keeps those waits short: a job's result must come
// within its timeout, and retrying for longer is the outbox's business.
const (
	internalRetryBase = 10 * time.Millisecond
	internalRetryCap  = 200 * time.Millisecond
)

// maxSuspects bounds how many message IDs the Forwarder remembers as
// refused in a batch of several messages (see Send); maxBatches how many
// requests it follows through analytics-go's retries.
const (
	maxSuspects = 10000
	maxBatches  = 10000
)

// analyticsAttempts is how many times analytics-go v3.3.0 tries a batch.
const analyticsAttempts = 10

// ForwarderConfig configures a Forwarder.
type ForwarderConfig struct {
	// Endpoint is the Segment Tracking API base URL; default https://api.segment.io.
	Endpoint string
	// WriteKey is the write key of the Segment source the bridge sends to; required.
	WriteKey string
	// ResolveUserID returns the user ID behind a Jimo token (a derived or
	// legacy token; in shared mode a Jimo webhook's identifyToken, which may
	// be the user ID itself), or "" when the bridge does not know it yet. Jobs
	// whose payload carries a jimoToken and no userId need it.
	ResolveUserID func(ctx context.Context, jimoToken string) (string, error)
	// Timeout bounds one job's Send, and each HTTP attempt; default 10 s.
	Timeout time.Duration
	// Interval is how long analytics-go gathers messages into a partial
	// batch; default 5 ms. Each Send waits up to that long unless its batch
	// fills, so it bounds throughput at low concurrency: about
	// concurrent Sends / (Interval/2 + round trip).
	Interval time.Duration
	// BatchSize is the most messages per request; a full batch leaves at
	// once. Default 32; about the number of concurrent Sends (outbox workers)
	// is best.
	BatchSize int
	// Transport sends the HTTP requests; default a clone of http.DefaultTransport.
	Transport http.RoundTripper
	// Logger receives analytics-go's own messages at debug level; default none.
	Logger *slog.Logger
}

// Forwarder sends outbox jobs to Segment's Tracking API through
// analytics-go. It implements mapping.Sender and is safe for concurrent use:
// concurrent Sends share batches.
type Forwarder struct {
	timeout time.Duration
	resolve func(ctx context.Context, jimoToken string) (string, error)
	log     *slog.Logger
	// batched sends most messages; solo sends, one per request, a message
	// whose last batch was refused with other messages in it.
	batched analytics.Client
	solo    analytics.Client

	mu       sync.Mutex
	closed   bool
	waiters  map[string][]*waiter // by message ID
	suspects map[string]bool      // message IDs to send alone next time
	batches  map[string]*batch    // by the request's own messageId
}

// waiter is one Send waiting for its message's result. Its fields other
// than done are guarded by Forwarder.mu.
type waiter struct {
	id   string
	done chan error // receives the result once; buffered
	// active is true until the Send has its result or gives up.
	active bool
	// last describes the last failed attempt, for a timeout's error.
	last string
}

// batch is one request analytics-go sends, and retries, with the Sends it
// serves: those waiting when it was first sent. Once none of them waits, or
// Segment refused it for good or asked to wait, its retries are dropped.
type batch struct {
	ids      []string
	waiters  []*waiter
	attempts int
	dead     bool
}

var _ mapping.Sender = (*Forwarder)(nil)

// errAbandoned fails, without a request, a retry of a batch whose messages
// nobody waits for any more (their Sends returned; the outbox will resend).
var errAbandoned = errors.New("segment: batch abandoned: no job waits for it")

// NewForwarder returns a Forwarder sending with cfg. It fails without a
// write key. Close it to flush and stop.
func NewForwarder(cfg ForwarderConfig) (*Forwarder, error) {
	if strings.TrimSpace(cfg.WriteKey) == "" {
		return nil, errors.New("segment: forwarding needs a write key (BRIDGE_SEGMENT_FORWARD_WRITE_KEY)")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultForwardTimeout
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultForwardInterval
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultForwardBatch
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = analytics.DefaultEndpoint
	}
	cfg.Endpoint = strings.TrimRight(cfg.Endpoint, "/")
	if cfg.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		cfg.Transport = t
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{
		timeout:  cfg.Timeout,
		resolve:  cfg.ResolveUserID,
		log:      cfg.Logger,
		waiters:  map[string][]*waiter{},
		suspects: map[string]bool{},
		batches:  map[string]*batch{},
	}
	client := func(batchSize int) (analytics.Client, error) {
		return analytics.NewWithConfig(cfg.WriteKey, analytics.Config{
			Endpoint:   cfg.Endpoint,
			Interval:   cfg.Interval,
			BatchSize:  batchSize,
			Transport:  &guard{f: f, next: cfg.Transport},
			Logger:     logAdapter{cfg.Logger},
			Callback:   resultCallback{f},
			RetryAfter: internalRetry,
		})
	}
	var err error
	if f.batched, err = client(cfg.BatchSize); err != nil {
		return nil, fmt.Errorf("segment: forwarder: %w", err)
	}
	if f.solo, err = client(1); err != nil {
		f.batched.Close()
		return nil, fmt.Errorf("segment: forwarder: %w", err)
	}
	return f, nil
}

// internalRetry is analytics-go's wait before its retry i+1: 10 ms doubling, at most 200 ms.
func internalRetry(i int) time.Duration {
	if i >= 5 {
		return internalRetryCap
	}
	return min(internalRetryBase<<i, internalRetryCap)
}

// Send delivers one job: it decodes job.Payload (an Outgoing), resolves a
// jimoToken to the user ID when the payload has no userId, builds the
// analytics-go message (its messageId and timestamp as in the payload, its
// context with the bridge marker "bridge":{"forwarded":true} always set),
// enqueues it, and waits until analytics-go reports the message's result,
// ctx ends or the timeout passes. It does not retry: analytics-go's own
// retries are short and end with the timeout.
//
// The result is nil once Segment accepted the message, else a
// *mapping.DeliveryError. Permanent: a payload that does not decode or that
// analytics-go refuses (missing userId and anonymousId, event, groupId; over
// 32 KB), and a 4xx other than 408 and 429 for a request holding only this
// message. Transient: 408, 429 (with RetryAfter from Retry-After), 5xx,
// network errors, the timeout or ctx ending, an unresolved jimoToken (its
// session may not have arrived yet), a closed Forwarder, and a 4xx for a batch
// that held other messages too; the next Send of that message then goes in a
// request of its own, so a bad message cannot make others dead.
func (f *Forwarder) Send(ctx context.Context, job mapping.Job) error {
	var out Outgoing
	if err := json.Unmarshal(job.Payload, &out); err != nil {
		return permanent(fmt.Errorf("segment: job %s: payload does not decode: %w", job.MessageID, err))
	}
	if out.MessageID == "" {
		out.MessageID = job.MessageID
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if out.UserID == "" && out.JimoToken != "" {
		if f.resolve == nil {
			return permanent(fmt.Errorf("segment: message %s names its user by Jimo token, and the forwarder cannot resolve tokens", out.MessageID))
		}
		userID, err := f.resolve(ctx, out.JimoToken)
		switch {
		case err != nil:
			return transient(fmt.Errorf("segment: message %s: resolve Jimo token: %w", out.MessageID, err))
		case userID == "":
			return transient(fmt.Errorf("segment: message %s: no user is linked to its Jimo token yet (its session may not have arrived)", out.MessageID))
		}
		out.UserID = userID
	}
	msg, err := analyticsMessage(out)
	if err != nil {
		return permanent(fmt.Errorf("segment: message %s: %w", out.MessageID, err))
	}
	if err := msg.Validate(); err != nil {
		return permanent(fmt.Errorf("segment: message %s: %w", out.MessageID, err))
	}

	w, solo, err := f.wait(out.MessageID)
	if err != nil {
		return err
	}
	defer f.forget(w)
	client := f.batched
	if solo {
		client = f.solo
	}
	if err := client.Enqueue(msg); err != nil {
		if errors.Is(err, analytics.ErrClosed) {
			return transient(fmt.Errorf("segment: message %s: %w", out.MessageID, err))
		}
		return permanent(fmt.Errorf("segment: message %s: %w", out.MessageID, err))
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		f.mu.Lock()
		last := w.last
		f.mu.Unlock()
		err := fmt.Errorf("segment: message %s: no answer: %w", out.MessageID, context.Cause(ctx))
		if last != "" {
			err = fmt.Errorf("segment: message %s: no success before %w; last attempt: %s", out.MessageID, context.Cause(ctx), last)
		}
		return transient(err)
	}
}

// wait registers a waiter for the message ID and says whether the message
// must go alone; it fails once the Forwarder is closed.
func (f *Forwarder) wait(id string) (*waiter, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, false, transient(fmt.Errorf("segment: message %s: the forwarder is closed", id))
	}
	w := &waiter{id: id, done: make(chan error, 1), active: true}
	f.waiters[id] = append(f.waiters[id], w)
	solo := f.suspects[id]
	delete(f.suspects, id)
	return w, solo, nil
}

// forget retires w, whose Send returns.
func (f *Forwarder) forget(w *waiter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retireLocked(w)
}

func (f *Forwarder) retireLocked(w *waiter) {
	if !w.active {
		return
	}
	w.active = false
	ws := f.waiters[w.id]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(f.waiters, w.id)
	} else {
		f.waiters[w.id] = ws
	}
}

// settleLocked hands err (nil: delivered) to w, if it still waits.
func (f *Forwarder) settleLocked(w *waiter, err error) {
	if !w.active {
		return
	}
	w.done <- err // buffered, and active only until its one result
	f.retireLocked(w)
}

// settle hands err to every Send waiting for the message ID (analytics-go's
// verdict on the message).
func (f *Forwarder) settle(id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range append([]*waiter(nil), f.waiters[id]...) {
		f.settleLocked(w, err)
	}
}

// begin is called before each attempt at a request: it returns the request's
// batch, created on the first attempt with the Sends then waiting, and
// whether the attempt is worth making (some of those Sends still wait).
func (f *Forwarder) begin(batchID string, ids []string) (*batch, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.batches[batchID]
	if b == nil {
		if len(f.batches) >= maxBatches {
			clear(f.batches)
		}
		b = &batch{ids: ids}
		for _, id := range ids {
			b.waiters = append(b.waiters, f.waiters[id]...)
		}
		f.batches[batchID] = b
	}
	b.attempts++
	if b.attempts >= analyticsAttempts {
		delete(f.batches, batchID) // its last attempt
	}
	if !b.dead && !slices.ContainsFunc(b.waiters, func(w *waiter) bool { return w.active }) {
		b.dead = true
	}
	return b, !b.dead
}

// delivered forgets a request Segment accepted; analytics-go's callback settles its Sends.
func (f *Forwarder) delivered(batchID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.batches, batchID)
}

// refused settles the Sends of a request Segment refused with derr, and
// drops its retries. A permanent refusal of a request that held several
// messages says nothing certain about each: they are settled as transient
// and sent alone next time.
func (f *Forwarder) refused(b *batch, derr *mapping.DeliveryError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b.dead = true
	var err error = derr
	if derr.Permanent && len(b.ids) > 1 {
		if len(f.suspects)+len(b.ids) > maxSuspects {
			clear(f.suspects)
		}
		for _, w := range b.waiters {
			if w.active {
				f.suspects[w.id] = true
			}
		}
		err = transient(fmt.Errorf("%w (in a batch of %d messages; the message is sent alone on its next attempt)", derr.Err, len(b.ids)))
	}
	for _, w := range b.waiters {
		f.settleLocked(w, err)
	}
}

// attempted records a failed attempt for the timeout errors of its Sends.
func (f *Forwarder) attempted(b *batch, what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range b.waiters {
		w.last = what
	}
}

// Close flushes what is queued, waits for requests in flight (at most about
// one timeout), stops, and fails the Sends still waiting with a transient
// error. Sends after Close fail the same way. Close is idempotent.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	err := errors.Join(f.batched.Close(), f.solo.Close())
	f.mu.Lock()
	for id, ws := range f.waiters {
		for _, w := range append([]*waiter(nil), ws...) {
			f.settleLocked(w, transient(fmt.Errorf("segment: message %s: the forwarder closed before its result", id)))
		}
	}
	f.mu.Unlock()
	return err
}

// analyticsMessage builds analytics-go's typed message for out.
func analyticsMessage(out Outgoing) (analytics.Message, error) {
	traits, err := anyObject("traits", out.Traits)
	if err != nil {
		return nil, err
	}
	props, err := anyObject("properties", out.Properties)
	if err != nil {
		return nil, err
	}
	integrations, err := anyObject("integrations", out.Integrations)
	if err != nil {
		return nil, err
	}
	extra, err := anyObject("context", out.Context)
	if err != nil {
		return nil, err
	}
	if extra == nil {
		extra = map[string]any{}
	}
	// The marker is set whatever the payload says: nothing the bridge sends may loop.
	bridge, _ := decodeObject(rawOf(extra["bridge"]))
	if bridge == nil {
		bridge = object{}
	}
	bridge["forwarded"] = json.RawMessage("true")
	extra["bridge"] = encodeObject(bridge)
	ctx := &analytics.Context{Extra: extra}

	switch out.Type {
	case "identify":
		return analytics.Identify{MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			Timestamp: out.Timestamp, Context: ctx, Traits: traits, Integrations: integrations}, nil
	case "track":
		return analytics.Track{MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			Event: out.Event, Timestamp: out.Timestamp, Context: ctx, Properties: props, Integrations: integrations}, nil
	case "page":
		return analytics.Page{MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			Name: out.Name, Timestamp: out.Timestamp, Context: ctx, Properties: props, Integrations: integrations}, nil
	case "screen":
		return analytics.Screen{MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			Name: out.Name, Timestamp: out.Timestamp, Context: ctx, Properties: props, Integrations: integrations}, nil
	case "group":
		return analytics.Group{MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			GroupId: out.GroupID, Timestamp: out.Timestamp, Context: ctx, Traits: traits, Integrations: integrations}, nil
	case "alias":
		return analytics.Alias{MessageId: out.MessageID, UserId: out.UserID, PreviousId: out.PreviousID,
			Timestamp: out.Timestamp, Context: ctx, Integrations: integrations}, nil
	}
	return nil, fmt.Errorf("type %q cannot be sent to Segment", out.Type)
}

// anyObject splits a JSON object into a map whose values stay encoded (so
// they reach Segment byte for byte, numbers included); nil for none.
func anyObject(name string, raw json.RawMessage) (map[string]any, error) {
	if absent(raw) {
		return nil, nil
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("%s is not valid JSON", name)
	}
	o, ok := splitObject(raw)
	if !ok {
		return nil, fmt.Errorf("%s is not a JSON object", name)
	}
	m := make(map[string]any, len(o))
	for k, v := range o {
		m[k] = v
	}
	return m, nil
}

func rawOf(v any) json.RawMessage {
	raw, _ := v.(json.RawMessage)
	return raw
}

func permanent(err error) error { return &mapping.DeliveryError{Permanent: true, Err: err} }
func transient(err error) error { return &mapping.DeliveryError{Err: err} }

// messageIDOf returns the messageId of an analytics-go message.
func messageIDOf(m analytics.Message) string {
	switch v := m.(type) {
	case analytics.Identify:
		return v.MessageId
	case analytics.Track:
		return v.MessageId
	case analytics.Page:
		return v.MessageId
	case analytics.Screen:
		return v.MessageId
	case analytics.Group:
		return v.MessageId
	case analytics.Alias:
		return v.MessageId
	}
	return ""
}

// resultCallback makes analytics-go's report on each message its Send's result.
type resultCallback struct{ f *Forwarder }

func (c resultCallback) Success(m analytics.Message) { c.f.settle(messageIDOf(m), nil) }

func (c resultCallback) Failure(m analytics.Message, err error) {
	if errors.Is(err, errAbandoned) {
		return // none of its Sends waits; a newer Send of the message has its own copy
	}
	c.f.settle(messageIDOf(m), classifyFailure(err))
}

// classifyFailure turns an error analytics-go reports into a delivery error.
// analytics-go reports a refused request as "<status> <status text>" (after
// its retries), a message over 32 KB as ErrMessageTooBig, and transport
// failures as the http.Client's error.
func classifyFailure(err error) error {
	switch {
	case errors.Is(err, analytics.ErrMessageTooBig):
		return permanent(fmt.Errorf("segment: %w (Segment accepts at most 32 KB per message)", err))
	case errors.Is(err, errAbandoned):
		return transient(err)
	}
	if code, _, ok := strings.Cut(err.Error(), " "); ok {
		if status, perr := strconv.Atoi(code); perr == nil && status >= 100 && status <= 599 {
			return mapping.ClassifyStatus(status, 0, fmt.Errorf("segment: POST /v1/batch: %s", err))
		}
	}
	return transient(fmt.Errorf("segment: %w", err))
}

// guard is the HTTP transport under analytics-go. It bounds every attempt by
// the Forwarder's timeout; settles a request's Sends at once when Segment
// refuses it for good or asks to wait (429), and drops its retries, so
// analytics-go's retries cannot outlast or ignore that; records other
// failures for the timeout's error; and drops, without sending them, retries
// of a request none of whose Sends still waits (their messages are resent
// by the outbox, in requests of their own).
type guard struct {
	f    *Forwarder
	next http.RoundTripper
}

// maxErrorSnippet is the most bytes of a refusal's body an error quotes.
const maxErrorSnippet = 200

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	batchID, ids := batchMessageIDs(body)
	b := &batch{ids: ids} // untracked when the body is not a batch
	if batchID != "" {
		var ok bool
		if b, ok = g.f.begin(batchID, ids); !ok {
			return nil, errAbandoned
		}
	}
	ctx, cancel := context.WithTimeout(req.Context(), g.f.timeout)
	r := req.Clone(ctx)
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	resp, err := g.next.RoundTrip(r)
	if err != nil {
		cancel()
		g.f.attempted(b, err.Error())
		return nil, err
	}
	if resp.StatusCode < 300 {
		g.f.delivered(batchID)
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
		return resp, nil
	}
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	cancel()
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	what := resp.Status
	if s := strings.TrimSpace(strings.ToValidUTF8(string(answer[:min(len(answer), maxErrorSnippet)]), "")); s != "" {
		what += ": " + s
	}
	derr, _ := mapping.ClassifyStatus(resp.StatusCode, mapping.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		fmt.Errorf("segment: POST /v1/batch: %s", what)).(*mapping.DeliveryError)
	if derr != nil && (derr.Permanent || resp.StatusCode == http.StatusTooManyRequests) {
		g.f.refused(b, derr)
	} else {
		g.f.attempted(b, what)
	}
	return resp, nil
}

// cancelBody ends an attempt's context once its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// batchMessageIDs returns the request's own messageId and those of its
// messages, from an analytics-go batch body
// ({"messageId":…,"batch":[{"messageId":…},…]}); "" and nil if it is not one.
func batchMessageIDs(body []byte) (string, []string) {
	var b struct {
		MessageID string `json:"messageId"`
		Batch     []struct {
			MessageID string `json:"messageId"`
		} `json:"batch"`
	}
	if json.Unmarshal(body, &b) != nil {
		return "", nil
	}
	ids := make([]string, 0, len(b.Batch))
	for _, m := range b.Batch {
		if m.MessageID != "" {
			ids = append(ids, m.MessageID)
		}
	}
	return b.MessageID, ids
}

// logAdapter passes analytics-go's log lines to slog at debug level: the
// outbox logs each job's result once, where it is handled.
type logAdapter struct{ log *slog.Logger }

func (l logAdapter) Logf(format string, args ...any) {
	l.log.Debug("analytics-go: " + fmt.Sprintf(format, args...))
}

func (l logAdapter) Errorf(format string, args ...any) {
	l.log.Debug("analytics-go: " + fmt.Sprintf(format, args...))
}
