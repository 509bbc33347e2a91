package segment

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
)

// DefaultForwardTimeout bounds one request when ForwarderConfig.HTTPClient is nil.
const DefaultForwardTimeout = 10 * time.Second

// maxMessageBytes is the most a message may weigh encoded: Segment's 32 KB, as analytics-go counts it.
const maxMessageBytes = 32000

// ForwarderConfig configures a Forwarder.
type ForwarderConfig struct {
	// Endpoint is the Tracking API base URL; default https://api.segment.io.
	Endpoint string
	// WriteKey is the write key of the Segment source the bridge sends to; required.
	WriteKey string
	// ResolveUserID returns the user ID behind a Jimo token (a derived or
	// legacy token; in shared mode a Jimo webhook's identifyToken, which may
	// be the user ID itself), or "" when the bridge does not know it yet. Jobs
	// whose payload carries a jimoToken and no userId need it.
	ResolveUserID func(ctx context.Context, jimoToken string) (string, error)
	// HTTPClient sends the requests; nil means a client with
	// DefaultForwardTimeout keeping up to 64 idle connections to Segment.
	HTTPClient *http.Client
}

// Forwarder sends outbox jobs to Segment's Tracking API, one job per
// request, once. It implements outbox.Sender and is safe for concurrent use.
//
// The messages are analytics-go's own types (analytics.Identify, Track, …),
// checked by their Validate and encoded by analytics-go's JSON encoding, in
// the batch envelope analytics-go sends. The HTTP exchange is written here
// rather than left to analytics.Client because that client (v3.3.0) tries a
// failed batch ten times, a count no Config field changes, and reports only
// a "<status> <text>" string to its Callback, without Retry-After. Retries
// belong to the outbox, which needs each attempt's classified result.
type Forwarder struct {
	url, writeKey string
	resolve       func(ctx context.Context, jimoToken string) (string, error)
	http          *http.Client
}

var _ outbox.Sender = (*Forwarder)(nil)

// NewForwarder returns a Forwarder sending with cfg; it fails without a write key.
func NewForwarder(cfg ForwarderConfig) (*Forwarder, error) {
	if strings.TrimSpace(cfg.WriteKey) == "" {
		return nil, errors.New("segment: forwarding needs a write key (BRIDGE_SEGMENT_FORWARD_WRITE_KEY)")
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = analytics.DefaultEndpoint
	}
	if cfg.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		cfg.HTTPClient = &http.Client{Timeout: DefaultForwardTimeout, Transport: t}
	}
	return &Forwarder{url: strings.TrimRight(cfg.Endpoint, "/") + "/v1/batch", writeKey: cfg.WriteKey,
		resolve: cfg.ResolveUserID, http: cfg.HTTPClient}, nil
}

// Send delivers one job: it decodes job.Payload (an Outgoing), resolves a
// jimoToken to the user ID when the payload has no userId, builds the
// analytics-go message (messageId and timestamp as in the payload, the
// context with "bridge":{"forwarded":true} always set), and POSTs it alone
// to {Endpoint}/v1/batch with the write key as Basic auth user, once.
//
// It returns nil on a 2xx answer, else a *outbox.DeliveryError. Permanent:
// a payload that does not decode or that analytics-go's Validate refuses
// (no userId or anonymousId; no event, groupId, previousId where needed), a
// message over 32 KB, a jimoToken without ResolveUserID, and a 4xx other
// than 408 and 429 (the error quotes at most 200 bytes of the answer).
// Transient: 408, 429 (RetryAfter from Retry-After), 5xx, network errors,
// timeouts, ctx ending, and a jimoToken not resolved yet (its session may
// not have arrived).
func (f *Forwarder) Send(ctx context.Context, job mapping.Job) error {
	id, body, err := f.encode(ctx, job)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return permanent(fmt.Errorf("segment: build request: %w", err))
	}
	req.SetBasicAuth(f.writeKey, "")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "analytics-go (version: "+analytics.Version+")")
	resp, err := f.http.Do(req)
	if err != nil {
		return transient(fmt.Errorf("segment: message %s: POST /v1/batch: %w", id, err))
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	what := fmt.Sprintf("segment: message %s: POST /v1/batch: %s", id, resp.Status)
	if s := strings.TrimSpace(strings.ToValidUTF8(string(answer), "")); s != "" {
		what += ": " + s
	}
	return outbox.ClassifyStatus(resp.StatusCode, outbox.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), errors.New(what))
}

// encode returns the job's message ID and the request body that sends it;
// its errors are Send's, classified.
func (f *Forwarder) encode(ctx context.Context, job mapping.Job) (string, []byte, error) {
	var out Outgoing
	if err := json.Unmarshal(job.Payload, &out); err != nil {
		return "", nil, permanent(fmt.Errorf("segment: job %s: payload does not decode: %w", job.MessageID, err))
	}
	if out.MessageID == "" {
		out.MessageID = job.MessageID
	}
	if out.Timestamp.IsZero() {
		out.Timestamp = time.Now().UTC()
	}
	if out.UserID == "" && out.JimoToken != "" {
		if f.resolve == nil {
			return "", nil, permanent(fmt.Errorf("segment: message %s names its user by Jimo token, and the forwarder cannot resolve tokens", out.MessageID))
		}
		userID, err := f.resolve(ctx, out.JimoToken)
		switch {
		case err != nil:
			return "", nil, transient(fmt.Errorf("segment: message %s: resolve Jimo token: %w", out.MessageID, err))
		case userID == "":
			return "", nil, transient(fmt.Errorf("segment: message %s: no user is linked to its Jimo token yet (its session may not have arrived)", out.MessageID))
		}
		out.UserID = userID
	}
	msg, err := analyticsMessage(out)
	if err == nil {
		err = msg.Validate()
	}
	var encoded []byte
	if err == nil {
		encoded, err = json.Marshal(msg)
	}
	if err == nil && len(encoded) > maxMessageBytes {
		err = fmt.Errorf("%w (%d bytes; Segment accepts at most 32 KB per message)", analytics.ErrMessageTooBig, len(encoded))
	}
	if err != nil {
		return "", nil, permanent(fmt.Errorf("segment: message %s: %w", out.MessageID, err))
	}
	// Marshalling cannot fail: the message is encoded already.
	body, _ := json.Marshal(batchBody{MessageID: out.MessageID, SentAt: time.Now().UTC(), Batch: []json.RawMessage{encoded},
		Context: analytics.Context{Library: analytics.LibraryInfo{Name: "analytics-go", Version: analytics.Version}}})
	return out.MessageID, body, nil
}

// Close releases idle connections; the Forwarder stays usable.
func (f *Forwarder) Close() error {
	f.http.CloseIdleConnections()
	return nil
}

// batchBody is the body of POST /v1/batch, as analytics-go's unexported batch type encodes it.
type batchBody struct {
	MessageID string            `json:"messageId"`
	SentAt    time.Time         `json:"sentAt"`
	Batch     []json.RawMessage `json:"batch"`
	Context   analytics.Context `json:"context"`
}

// analyticsMessage builds analytics-go's typed message for out, with its
// Type set as analytics.Client.Enqueue would.
func analyticsMessage(out Outgoing) (analytics.Message, error) {
	traits, err1 := anyObject("traits", out.Traits)
	props, err2 := anyObject("properties", out.Properties)
	integrations, err3 := anyObject("integrations", out.Integrations)
	extra, err4 := anyObject("context", out.Context)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, err
	}
	// The marker is set whatever the payload says: nothing the bridge sends may loop.
	var bridge map[string]json.RawMessage
	if raw, ok := extra["bridge"].(json.RawMessage); !ok || json.Unmarshal(raw, &bridge) != nil || bridge == nil {
		bridge = map[string]json.RawMessage{}
	}
	bridge["forwarded"] = json.RawMessage("true")
	if extra == nil {
		extra = map[string]any{}
	}
	extra["bridge"] = bridge
	ctx := &analytics.Context{Extra: extra}

	switch out.Type {
	case "identify":
		return analytics.Identify{Type: out.Type, MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			Timestamp: out.Timestamp, Context: ctx, Traits: traits, Integrations: integrations}, nil
	case "track":
		return analytics.Track{Type: out.Type, MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			Event: out.Event, Timestamp: out.Timestamp, Context: ctx, Properties: props, Integrations: integrations}, nil
	case "page":
		return analytics.Page{Type: out.Type, MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			Name: out.Name, Timestamp: out.Timestamp, Context: ctx, Properties: props, Integrations: integrations}, nil
	case "screen":
		return analytics.Screen{Type: out.Type, MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			Name: out.Name, Timestamp: out.Timestamp, Context: ctx, Properties: props, Integrations: integrations}, nil
	case "group":
		return analytics.Group{Type: out.Type, MessageId: out.MessageID, UserId: out.UserID, AnonymousId: out.AnonymousID,
			GroupId: out.GroupID, Timestamp: out.Timestamp, Context: ctx, Traits: traits, Integrations: integrations}, nil
	case "alias":
		return analytics.Alias{Type: out.Type, MessageId: out.MessageID, UserId: out.UserID, PreviousId: out.PreviousID,
			Timestamp: out.Timestamp, Context: ctx, Integrations: integrations}, nil
	}
	return nil, fmt.Errorf("type %q cannot be sent to Segment", out.Type)
}

// anyObject splits a JSON object into a map whose values stay encoded (so
// they reach Segment byte for byte, numbers included); nil for none or null.
func anyObject(name string, raw json.RawMessage) (map[string]any, error) {
	var o map[string]json.RawMessage
	if len(raw) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object", name)
	}
	if o == nil {
		return nil, nil
	}
	m := make(map[string]any, len(o))
	for k, v := range o {
		m[k] = v
	}
	return m, nil
}

func permanent(err error) error { return &outbox.DeliveryError{Permanent: true, Err: err} }
func transient(err error) error { return &outbox.DeliveryError{Err: err} }
