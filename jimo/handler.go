package jimo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
)

// Store is what the handlers need of mapping's store: Submit stores the
// messages durably (deduplicated on source and ID), applies them, and returns
// one receipt per message, in order. It returns only after commit.
type Store interface {
	Submit(ctx context.Context, msgs []mapping.Message) ([]mapping.Receipt, error)
}

// Config is what a Handler needs.
type Config struct {
	// Store keeps the messages; required.
	Store Store
	// Session is the token policy (mode, secrets, blocklist).
	Session SessionConfig
	// WebhookSecret authenticates Jimo's webhooks (BRIDGE_JIMO_WEBHOOK_SECRET);
	// empty refuses every webhook.
	WebhookSecret string
	// AllowedOrigins are the page origins allowed to call POST /jimo/session
	// cross-origin (BRIDGE_ALLOWED_ORIGINS), compared exactly ("https://app.example.com").
	AllowedOrigins []string
	// RateLimit bounds POST /jimo/session per client IP: echo.Context.RealIP
	// when the Echo instance has an IPExtractor (set it to trust exactly the
	// proxies in front of the bridge), else the peer address.
	RateLimit RateLimit
	// Logger receives one line per refused or stored request; nil discards.
	// Secrets, signatures and the webhook URL's query are never logged.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Jobs, if set, attaches the outbox jobs a message causes (forwarding).
	Jobs func(m *mapping.Message)
}

// Handler serves the Jimo routes. Register them as
//
//	e.GET("/jimo/bridge.js", h.Script)
//	e.HEAD("/jimo/bridge.js", h.Script)
//	e.Match([]string{http.MethodPost, http.MethodOptions}, "/jimo/session", h.Session, h.CORS())
//	e.POST("/jimo/webhook", h.Webhook)
//
// (OPTIONS must reach the route for CORS() to answer preflights).
type Handler struct {
	store         Store
	sessions      *Sessions
	blocklist     mapping.Blocklist
	webhookSecret string
	origins       map[string]bool
	limiter       *limiter
	log           *slog.Logger
	now           func() time.Time
	jobs          func(m *mapping.Message)
}

// NewHandler checks cfg and builds the Handler.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("jimo: a store is required")
	}
	sessions, err := NewSessions(cfg.Session)
	if err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	origins := map[string]bool{}
	for _, o := range cfg.AllowedOrigins {
		if o = strings.TrimRight(strings.TrimSpace(o), "/"); o != "" {
			origins[o] = true
		}
	}
	return &Handler{
		store:         cfg.Store,
		sessions:      sessions,
		blocklist:     cfg.Session.Blocklist,
		webhookSecret: cfg.WebhookSecret,
		origins:       origins,
		limiter:       newLimiter(cfg.RateLimit, cfg.Now),
		log:           cfg.Logger,
		now:           cfg.Now,
		jobs:          cfg.Jobs,
	}, nil
}

// Session handles POST /jimo/session: a session reset or identify reported
// by the page (see Sessions.Report). It answers 200 {"userId","jimoToken"}
// once the message is stored; 400 for a malformed body, 401 for a missing or
// wrong signature where one is required, 400 (too_large) over MaxSessionBody, 422 for a
// guessable token (the warning is stored all the same), 429 with Retry-After
// when the client IP is over its rate. Errors are *mapping.Error.
func (h *Handler) Session(c echo.Context) error {
	if ok, wait := h.limiter.allow(clientIP(c)); !ok {
		secs := int(math.Ceil(wait.Seconds()))
		if secs < 1 {
			secs = 1
		}
		c.Response().Header().Set(echo.HeaderRetryAfter, strconv.Itoa(secs))
		return mapping.Errorf(mapping.CodeRateLimited, "too many session reports from this address; retry after %d s", secs)
	}
	receivedAt := h.now().UTC()
	body, err := readBody(c, MaxSessionBody, "session report")
	if err != nil {
		return err
	}
	req, err := DecodeSession(body)
	if err != nil {
		return err
	}
	resp, msg, reportErr := h.sessions.Report(req, receivedAt)
	if msg.ID == "" {
		// Debug only: the server logs refusals once, rate-limited.
		h.log.Debug("jimo session refused", "code", mapping.ErrorCode(reportErr), "error", errorMessage(reportErr))
		return reportErr
	}
	receipt, err := h.submit(c.Request().Context(), msg)
	if err != nil {
		if reportErr != nil {
			// The refusal is the answer that helps the page; the failed store is logged here.
			h.log.Error("jimo session: store refused warning", "message_id", msg.ID, "error", err)
			return reportErr
		}
		return err
	}
	if reportErr != nil {
		h.log.Warn("jimo session refused: guessable token", "message_id", msg.ID, "reason", msg.UserIDWarning)
		return reportErr
	}
	h.log.Debug("jimo session stored", "message_id", msg.ID, "type", msg.Type,
		"mode", h.sessions.Mode(), "impersonating", msg.Impersonating, "duplicate", receipt.Duplicate)
	if receipt.NamesDeleted() {
		// A person a privacy deletion took is not identified to Jimo again
		// (in derived mode the page pushes Jimo's identify only with a token).
		resp.JimoToken = ""
	}
	return c.JSON(http.StatusOK, resp)
}

// Webhook handles POST /jimo/webhook: one of Jimo's outgoing webhooks,
// authenticated with the webhook secret (?secret= or Authorization: Bearer;
// 401 without it, and always while none is configured). It answers 200
// {"success":true} once the message is stored, also for a webhook stored as
// Rejected (Jimo retries every status ≥ 400); 400 for a body that is not a
// JSON object, 400 (too_large) over MaxWebhookBody. Errors are *mapping.Error,
// answered with the status of mapping/httperror's table.
func (h *Handler) Webhook(c echo.Context) error {
	r := c.Request()
	if err := CheckWebhookSecret(h.webhookSecret, r.URL.Query().Get("secret"), r.Header.Get(echo.HeaderAuthorization)); err != nil {
		return err // the server logs refusals once, rate-limited
	}
	receivedAt := h.now().UTC()
	body, err := readBody(c, MaxWebhookBody, "webhook")
	if err != nil {
		return err
	}
	w, err := DecodeWebhook(body)
	if err != nil {
		h.log.Info("jimo webhook refused", "error", errorMessage(err))
		return err
	}
	msg := w.Message(h.sessions.Mode(), h.blocklist, receivedAt)
	receipt, err := h.submit(r.Context(), msg)
	if err != nil {
		return err
	}
	h.log.Debug("jimo webhook stored", "message_id", msg.ID, "event", msg.Event,
		"rejected", msg.Rejected, "duplicate", receipt.Duplicate)
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

// CORS answers cross-origin requests to POST /jimo/session for the configured
// origins only, compared exactly. For an allowed Origin, a preflight (OPTIONS)
// gets 204 with Access-Control-Allow-Origin echoing it, Allow-Methods POST and
// Allow-Headers Content-Type, and other requests get Allow-Origin; a
// disallowed origin gets no CORS headers, and its preflight, like any request
// it sends, is refused with a *mapping.Error of code forbidden (403 through
// the server's error handler). Every answer carries Vary: Origin.
func (h *Handler) CORS() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			origin := c.Request().Header.Get(echo.HeaderOrigin)
			header := c.Response().Header()
			header.Add(echo.HeaderVary, echo.HeaderOrigin)
			allowed := origin != "" && h.origins[origin]
			// A browser sends Origin on every cross-origin POST; a text/plain
			// one needs no preflight, so a disallowed origin is refused here
			// too, not only left without CORS headers. Requests without an
			// Origin (servers, same-origin navigations) pass.
			if !allowed && (origin != "" || c.Request().Method == http.MethodOptions) {
				return mapping.Errorf(mapping.CodeForbidden, "origin %q may not call the bridge; add it to BRIDGE_ALLOWED_ORIGINS", origin)
			}
			if c.Request().Method == http.MethodOptions {
				header.Set(echo.HeaderAccessControlAllowOrigin, origin)
				header.Set(echo.HeaderAccessControlAllowMethods, http.MethodPost)
				header.Set(echo.HeaderAccessControlAllowHeaders, echo.HeaderContentType)
				header.Set(echo.HeaderAccessControlMaxAge, "600")
				return c.NoContent(http.StatusNoContent)
			}
			if allowed {
				header.Set(echo.HeaderAccessControlAllowOrigin, origin)
			}
			return next(c)
		}
	}
}

// submit stores one message and returns its receipt. A store error that is
// a *mapping.Error (for example unavailable while shutting down) is returned
// as it is; any other becomes an internal error whose cause is logged by the
// server's error handler.
func (h *Handler) submit(ctx context.Context, msg mapping.Message) (mapping.Receipt, error) {
	if h.jobs != nil {
		h.jobs(&msg)
	}
	receipts, err := h.store.Submit(ctx, []mapping.Message{msg})
	if err != nil {
		var me *mapping.Error
		if errors.As(err, &me) {
			return mapping.Receipt{}, err
		}
		return mapping.Receipt{}, &mapping.Error{Code: mapping.CodeInternal, Message: "could not store the message; retry later", Err: fmt.Errorf("store %s message %s: %w", msg.Source, msg.ID, err)}
	}
	if len(receipts) == 0 {
		return mapping.Receipt{}, nil
	}
	return receipts[0], nil
}

// readBody reads at most limit bytes; a longer body is a CodeTooLarge error.
// The body is read through http.MaxBytesReader, so past the limit the
// server closes the connection instead of draining what the client still
// sends: an unauthenticated client costs at most limit bytes.
func readBody(c echo.Context, limit int64, what string) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > limit {
		return nil, mapping.Errorf(mapping.CodeTooLarge, "%s body is %d bytes, over the limit of %d", what, r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, mapping.Errorf(mapping.CodeTooLarge, "%s body is over the limit of %d bytes", what, limit)
		}
		return nil, &mapping.Error{Code: mapping.CodeInvalid, Message: "could not read the " + what + " body", Err: err}
	}
	return body, nil
}

// clientIP is the address rate limits count against: Echo's IPExtractor when
// the server configured one (it decides which proxies' X-Forwarded-For to
// believe), else the peer address. Without an extractor Echo's RealIP would
// believe any client's X-Forwarded-For, so it is not used.
func clientIP(c echo.Context) string {
	if c.Echo().IPExtractor != nil {
		return c.RealIP()
	}
	host, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		return c.Request().RemoteAddr
	}
	return host
}

// errorMessage is the client-facing message of err, safe to log.
func errorMessage(err error) string {
	var me *mapping.Error
	if errors.As(err, &me) {
		return me.Message
	}
	if err == nil {
		return ""
	}
	return err.Error()
}
