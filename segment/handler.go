package segment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
)

// Store keeps messages durably. Submit stores all of msgs (one transaction or
// group commit) before returning and answers one receipt per message, in order.
type Store interface {
	Submit(ctx context.Context, msgs []mapping.Message) ([]mapping.Receipt, error)
}

// Metrics counts what the handlers decode and refuse. Implementations must be
// safe for concurrent use; a nil Metrics in Config counts nothing.
type Metrics interface {
	// Received counts n events decoded from source (duplicates included).
	Received(source mapping.Source, n int)
	// Rejected counts one refusal at decoding: an event stored but not applied
	// (reason is a Reason constant, such as "missing_identity"), or a refused
	// request (reason is its error code: "invalid", "unauthorized",
	// "too_large", "rate_limited" or "not_found").
	Rejected(source mapping.Source, reason string)
}

// Config configures a Handler.
type Config struct {
	// Store receives every decoded message; required.
	Store Store
	// WriteKeys are the keys accepted on the Tracking API. They never
	// authorize the webhook: browser write keys are public.
	WriteKeys WriteKeys
	// SharedSecret verifies X-Signature on every webhook delivery (and
	// Authorization: Bearer, when a delivery carries it); required.
	SharedSecret []byte
	// RateLimit bounds events per second per write key and client IP on the
	// Tracking API; the zero value means no limit.
	RateLimit RateLimit
	// MaxWebhookBytes limits a webhook delivery body after decompression; 0 means DefaultMaxWebhookBytes.
	MaxWebhookBytes int64
	// MaxPendingBytes bounds the memory that request bodies being read and
	// handled may hold at once, for the Tracking API and for the webhook
	// each (requests beyond it are answered 503 with Retry-After); 0 means
	// DefaultMaxPendingBytes.
	MaxPendingBytes int64
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives debug records about rejected events; nil discards them.
	Logger *slog.Logger
	// Metrics counts stored and rejected messages; nil counts nothing.
	Metrics Metrics
	// Jobs, if set, attaches the outbox jobs a message causes (forwarding).
	Jobs func(m *mapping.Message)
}

// DefaultMaxPendingBytes is the default of Config.MaxPendingBytes. A body
// holds what it has read (in 32 KB chunks) and, once authenticated, its
// copy in one slice: two webhook deliveries of the largest default size at
// once, or some sixty Tracking API batches of the largest size.
const DefaultMaxPendingBytes = 64 << 20

// Handler serves the Segment endpoints: the HTTP Tracking API and the webhook
// destination. It decodes, authenticates and hands messages to the Store,
// and acknowledges only once the Store has them.
type Handler struct {
	store           Store
	keys            WriteKeys
	secret          []byte
	limiter         *limiter
	maxWebhookBytes int64
	apiBodies       *budget
	webhookBodies   *budget
	now             func() time.Time
	log             *slog.Logger
	metrics         Metrics
	jobs            func(m *mapping.Message)
}

// NewHandler returns a Handler for cfg; it fails when cfg.Store or
// cfg.SharedSecret is missing.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("segment: Config.Store is required")
	}
	if len(cfg.SharedSecret) == 0 {
		return nil, errors.New("segment: Config.SharedSecret is required: the webhook always verifies X-Signature")
	}
	pending := cfg.MaxPendingBytes
	if pending <= 0 {
		pending = DefaultMaxPendingBytes
	}
	h := &Handler{
		store:           cfg.Store,
		keys:            cfg.WriteKeys,
		secret:          cfg.SharedSecret,
		limiter:         newLimiter(cfg.RateLimit),
		maxWebhookBytes: cfg.MaxWebhookBytes,
		apiBodies:       newBudget(pending),
		webhookBodies:   newBudget(pending),
		now:             cfg.Now,
		log:             cfg.Logger,
		metrics:         cfg.Metrics,
		jobs:            cfg.Jobs,
	}
	if h.maxWebhookBytes <= 0 {
		h.maxWebhookBytes = DefaultMaxWebhookBytes
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.metrics == nil {
		h.metrics = noMetrics{}
	}
	return h, nil
}

type noMetrics struct{}

func (noMetrics) Received(mapping.Source, int)    {}
func (noMetrics) Rejected(mapping.Source, string) {}

// success is the answer Segment's libraries and the webhook destination expect.
type success struct {
	Success bool `json:"success"`
}

// TrackingAPI serves POST /v1/{call}: the call (identify, t, batch, ...) is
// the last element of the request path, whatever the route pattern. It answers
// 200 {"success":true} once the events are stored (semantically invalid ones
// included, as rejected), and otherwise returns a *mapping.Error: not_found
// for an unknown route, unauthorized for a missing or unknown write key,
// too_large or invalid for a body retrying cannot fix, rate_limited (with a
// Retry-After header) over the rate limit of the write key and client IP
// (c.RealIP()), unavailable (with Retry-After) while other bodies hold the
// memory bodies may use.
func (h *Handler) TrackingAPI(c echo.Context) error {
	return h.counted(mapping.SourceSegmentAPI, h.trackingAPI(c))
}

func (h *Handler) trackingAPI(c echo.Context) error {
	req := c.Request()
	receivedAt := h.now()
	route := path.Base(req.URL.Path)
	_, batch, ok := RouteType(route)
	if !ok {
		return mapping.Errorf(mapping.CodeNotFound,
			"/v1/%s is not a Tracking API route; use identify, track, page, screen, group, alias, batch or import", truncate(route, 40))
	}

	headerKey, err := h.headerWriteKey(req)
	if err != nil {
		return err
	}
	limit := int64(MaxEventBytes)
	if batch {
		limit = MaxBatchBytes
	}
	rd, err := readBody(req.Body, req.Header.Get("Content-Encoding"), limit, h.apiBodies, nil)
	if err != nil {
		return retryLater(c, err)
	}
	defer rd.release()
	body, err := rd.bytes()
	if err != nil {
		return retryLater(c, err)
	}
	events, err := DecodeTrackingAPI(Request{Route: route, WriteKey: headerKey, ReceivedAt: receivedAt, Source: mapping.SourceSegmentAPI}, body)
	if err != nil {
		return err
	}
	key, err := h.bodyWriteKeys(headerKey, events)
	if err != nil {
		return err
	}
	if wait := h.limiter.take(key, c.RealIP(), len(events), receivedAt); wait > 0 {
		seconds := int(math.Ceil(wait.Seconds()))
		c.Response().Header().Set("Retry-After", strconv.Itoa(seconds))
		return mapping.Errorf(mapping.CodeRateLimited,
			"this write key is over its rate limit from this address; retry after %d s, or send fewer events", seconds)
	}
	if err := h.submit(req.Context(), mapping.SourceSegmentAPI, events); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, success{Success: true})
}

// retryLater sets Retry-After on an unavailable answer and returns err.
func retryLater(c echo.Context, err error) error {
	if mapping.ErrorCode(err) == mapping.CodeUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	return err
}

// Webhook serves POST, PUT and PATCH /segment/webhook: deliveries from
// Segment's webhook destination, one event or an array. Every delivery needs
// an X-Signature that verifies with the shared secret, over the body or over
// element 0 of an array (how Segment signs batches); write keys never
// authorize it. A delivery may also carry Authorization: Bearer <shared
// secret>, which makes the whole body authentic (a wrong one is refused);
// other Authorization schemes are ignored. Deletes are honoured only where
// what was verified covers them (see DecodeDelivery).
//
// It answers 200 {"success":true} once the events are stored, and otherwise
// returns a *mapping.Error: unauthorized, invalid, too_large, or
// unavailable (with Retry-After) while other bodies hold the memory bodies
// may use. The credentials are checked before the body is read, and the
// body is hashed while it is read.
func (h *Handler) Webhook(c echo.Context) error {
	return h.counted(mapping.SourceSegmentWebhook, h.webhook(c))
}

func (h *Handler) webhook(c echo.Context) error {
	req := c.Request()
	receivedAt := h.now()
	sig := req.Header.Get("X-Signature")
	if sig == "" {
		return mapping.Errorf(mapping.CodeUnauthorized,
			"X-Signature is missing; set the shared secret in Segment's webhook destination settings to BRIDGE_SEGMENT_SHARED_SECRET")
	}
	want, ok := parseSignature(h.secret, sig)
	if !ok {
		return badSignature()
	}
	bearer := false
	if auth := req.Header.Get("Authorization"); isBearer(auth) {
		if !bearerMatches(auth, h.secret) {
			return mapping.Errorf(mapping.CodeUnauthorized,
				"Authorization: Bearer does not match; set the header in the webhook mapping to Bearer followed by BRIDGE_SEGMENT_SHARED_SECRET")
		}
		bearer = true
	}
	signed := newSigner(h.secret)
	rd, err := readBody(req.Body, req.Header.Get("Content-Encoding"), h.maxWebhookBytes, h.webhookBodies, signed)
	if err != nil {
		return retryLater(c, err)
	}
	defer rd.release()
	covered := signed.coverage(want)
	if covered == Unsigned {
		return badSignature() // refused before the body is assembled or parsed
	}
	if bearer {
		covered = SignedAll
	}
	body, err := rd.bytes()
	if err != nil {
		return retryLater(c, err)
	}
	events, err := DecodeDelivery(body, receivedAt, covered)
	if err != nil {
		return err
	}
	if err := h.submit(req.Context(), mapping.SourceSegmentWebhook, events); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, success{Success: true})
}

func badSignature() error {
	return mapping.Errorf(mapping.CodeUnauthorized,
		"X-Signature does not match the body; check that the shared secret in Segment equals BRIDGE_SEGMENT_SHARED_SECRET")
}

// isBearer reports whether an Authorization header value uses the Bearer scheme.
func isBearer(authorization string) bool {
	scheme, _, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	return strings.EqualFold(scheme, "Bearer")
}

// headerWriteKey returns the write key of the Authorization header, "" if
// there is none, or an unauthorized error if it is malformed or unknown.
func (h *Handler) headerWriteKey(req *http.Request) (string, error) {
	auth := req.Header.Get("Authorization")
	if auth == "" {
		return "", nil
	}
	key, ok := BasicWriteKey(auth)
	if !ok {
		return "", mapping.Errorf(mapping.CodeUnauthorized, "Authorization must be Basic base64(writeKey + \":\")")
	}
	if !h.keys.Contains(key) {
		return "", mapping.Errorf(mapping.CodeUnauthorized, "the write key is not accepted here; add it to BRIDGE_SEGMENT_WRITE_KEYS or use one listed there")
	}
	return key, nil
}

// bodyWriteKeys checks the write keys of a request that may carry them in
// its body and returns the key to charge the request to.
func (h *Handler) bodyWriteKeys(headerKey string, events []Event) (string, error) {
	if headerKey != "" {
		return headerKey, nil
	}
	if len(events) == 0 {
		return "", missingWriteKey()
	}
	checked := ""
	for _, ev := range events {
		if ev.WriteKey == checked && checked != "" {
			continue
		}
		if ev.WriteKey == "" {
			return "", missingWriteKey()
		}
		if !h.keys.Contains(ev.WriteKey) {
			return "", mapping.Errorf(mapping.CodeUnauthorized, "the write key is not accepted here; add it to BRIDGE_SEGMENT_WRITE_KEYS or use one listed there")
		}
		checked = ev.WriteKey
	}
	return events[0].WriteKey, nil
}

func missingWriteKey() error {
	return mapping.Errorf(mapping.CodeUnauthorized,
		`no write key: send Authorization: Basic base64(writeKey + ":"), or "writeKey" in the body`)
}

// messages builds the messages the store keeps from decoded events, with the
// outbox jobs the Jobs hook attaches.
func (h *Handler) messages(events []Event) []mapping.Message {
	msgs := make([]mapping.Message, len(events))
	for i, ev := range events {
		msgs[i] = ev.Message
		if h.jobs != nil {
			h.jobs(&msgs[i])
		}
	}
	return msgs
}

// submit counts the decoded events and stores their messages.
func (h *Handler) submit(ctx context.Context, source mapping.Source, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	h.metrics.Received(source, len(events))
	msgs := h.messages(events)
	for _, m := range msgs {
		if m.Rejected != "" {
			h.metrics.Rejected(source, m.Rejected)
			h.log.Debug("segment event rejected", "source", source, "message_id", m.ID, "reason", m.Rejected, "type", m.Type)
		}
	}
	if _, err := h.store.Submit(ctx, msgs); err != nil {
		var e *mapping.Error
		if errors.As(err, &e) || errors.Is(err, context.Canceled) {
			return err // already classified, or the client went away
		}
		return &mapping.Error{Code: mapping.CodeInternal, Err: fmt.Errorf("submit %d %s messages: %w", len(msgs), source, err),
			Message: "the events could not be stored; retry later"}
	}
	return nil
}

// counted counts a refused request by its error code and returns err.
// Failures of the bridge itself (internal, unavailable) are not refusals.
func (h *Handler) counted(source mapping.Source, err error) error {
	if err == nil {
		return nil
	}
	switch code := mapping.ErrorCode(err); code {
	case mapping.CodeInternal, mapping.CodeUnavailable:
	default:
		h.metrics.Rejected(source, string(code))
	}
	return err
}

// CORS answers cross-origin requests to the Tracking API from any origin, as
// analytics.js needs (browser write keys are public): it reflects the
// request's Origin, and answers a preflight (OPTIONS) itself with 204,
// allowing POST with the Authorization, Content-Type and Content-Encoding
// headers, cached for a day. Echo runs group middleware only for routes
// registered in the group, so register the preflight route too, e.g.
//
//	v1 := e.Group("/v1", segment.CORS())
//	v1.POST("/:route", h.TrackingAPI)
//	v1.OPTIONS("/:route", segment.Preflight)
func CORS() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if c.Request().Method == http.MethodOptions {
				return Preflight(c)
			}
			allowOrigin(c)
			return next(c)
		}
	}
}

// Preflight answers a CORS preflight for the Tracking API from any origin
// with 204 and the headers CORS describes.
func Preflight(c echo.Context) error {
	if allowOrigin(c) {
		h := c.Response().Header()
		h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Content-Encoding")
		h.Set("Access-Control-Max-Age", "86400")
	}
	return c.NoContent(http.StatusNoContent)
}

// allowOrigin reflects the request's Origin, if any, and reports whether there was one.
func allowOrigin(c echo.Context) bool {
	h := c.Response().Header()
	h.Add("Vary", "Origin")
	origin := c.Request().Header.Get("Origin")
	if origin == "" {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	return true
}
