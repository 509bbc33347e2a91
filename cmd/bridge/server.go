package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/admin"
	"github.com/bridgeworks/bridge/mapping/httperror"
	"github.com/bridgeworks/bridge/mapping/outbox"
	"github.com/bridgeworks/bridge/mapping/store"
	"github.com/bridgeworks/bridge/segment"
)

// app is everything a running bridge holds.
type app struct {
	cfg     config
	store   *store.Store
	metrics *metrics
	echo    *echo.Echo
	senders map[string]outbox.Sender
	closers []func() error // senders to close after the outbox stops
	outbox  *outbox.Outbox // set by runOutbox, before the server starts
}

// buildSenders creates a sender per configured destination. The HTTP clients
// do not retry: the outbox does.
func (a *app) buildSenders() error {
	a.senders = map[string]outbox.Sender{}
	if a.cfg.JimoAPIKey != "" && a.cfg.JimoEndpoint != "" {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.MaxIdleConnsPerHost = a.cfg.DeliveryWorkers
		a.senders[jimo.Destination] = jimo.NewClient(a.cfg.JimoEndpoint, a.cfg.JimoAPIKey, &http.Client{Timeout: 30 * time.Second, Transport: transport})
	}
	if a.cfg.SegmentForwardWriteKey != "" {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.MaxIdleConnsPerHost = a.cfg.DeliveryWorkers // one request per delivery in flight
		fwd, err := segment.NewForwarder(segment.ForwarderConfig{
			Endpoint:      a.cfg.SegmentEndpoint,
			WriteKey:      a.cfg.SegmentForwardWriteKey,
			ResolveUserID: a.userIDOfToken,
			HTTPClient:    &http.Client{Timeout: segment.DefaultForwardTimeout, Transport: transport},
		})
		if err != nil {
			return err
		}
		a.senders[segment.Destination] = fwd
		a.closers = append(a.closers, fwd.Close)
	}
	return nil
}

// userIDOfToken translates a Jimo token to the user ID it belongs to: a
// derived or legacy token through its jimo_token identifier; otherwise, in
// shared mode, the token is the user ID.
func (a *app) userIDOfToken(ctx context.Context, token string) (string, error) {
	p, err := a.store.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindJimoToken, Value: token})
	if mapping.ErrorCode(err) == mapping.CodeNotFound && a.cfg.JimoTokenMode == "shared" {
		p, err = a.store.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: token})
	}
	if err != nil {
		return "", err
	}
	if p.UserID == "" {
		return "", fmt.Errorf("jimo token %.6s… has no user ID yet", token)
	}
	return p.UserID, nil
}

// runOutbox delivers outbox jobs and expires old message payloads until ctx
// ends; done is closed when both have stopped.
func (a *app) runOutbox(ctx context.Context, logger *slog.Logger) (done chan struct{}) {
	done = make(chan struct{})
	// On SQLite a claim waits behind ingestion's group commits, so it takes
	// jobs ahead of the free workers (the default). On PostgreSQL claims run
	// beside ingestion, and jobs claimed ahead would be kept from the other
	// replicas.
	claimAhead := 0
	if store.IsPostgres(a.cfg.DB) {
		claimAhead = -1
	}
	a.outbox = outbox.New(a.store, outbox.Options{
		Senders:     a.senders,
		MaxAttempts: a.cfg.MaxDeliveryAttempts,
		Workers:     a.cfg.DeliveryWorkers,
		KeepDone:    a.cfg.KeepDeliveredJobs,
		Lease:       a.cfg.OutboxLease,
		ClaimAhead:  claimAhead,
		// One process delivers from a SQLite file: what a crashed one held is
		// due at once. Replicas on PostgreSQL take over each other's claims
		// when their lease ends: one that starts must not steal live ones.
		ReleaseOnStart: !store.IsPostgres(a.cfg.DB),
		Logger:         logger,
		Observer:       a.metrics,
	})
	a.metrics.registerPaused(a.outbox.Destinations)
	retained := make(chan struct{})
	go func() {
		defer close(retained)
		a.store.RunRetention(ctx, store.RetentionOptions{KeepMessages: a.cfg.KeepMessages, Logger: logger})
	}()
	go func() {
		defer close(done)
		if err := a.outbox.Run(ctx); err != nil {
			logger.Error("outbox stopped", "err", err)
		}
		for _, c := range a.closers {
			if err := c(); err != nil {
				logger.Warn("close sender", "err", err)
			}
		}
		<-retained
	}()
	return done
}

// resolveSecrets resolves the secrets that must exist, generating (and printing
// once) the ones not configured.
func resolveSecrets(ctx context.Context, cfg *config, store *store.Store, stdout io.Writer) (tokenSecret string, err error) {
	generate := func(name string, target *string) error {
		v, created, err := store.Secret(ctx, name)
		if err != nil {
			return err
		}
		*target = v
		if created {
			fmt.Fprintf(stdout, "generated %s=%s (stored in the database; shown once)\n", name, v)
		}
		return nil
	}
	if cfg.AdminPassword == "" {
		if err := generate("BRIDGE_ADMIN_PASSWORD", &cfg.AdminPassword); err != nil {
			return "", err
		}
	}
	if len(cfg.SegmentWriteKeys) == 0 {
		var key string
		if err := generate("BRIDGE_SEGMENT_WRITE_KEYS", &key); err != nil {
			return "", err
		}
		cfg.SegmentWriteKeys = []string{key}
	}
	if cfg.SegmentSharedSecret == "" {
		// The webhook always verifies X-Signature: it is never open.
		if err := generate("BRIDGE_SEGMENT_SHARED_SECRET", &cfg.SegmentSharedSecret); err != nil {
			return "", err
		}
	}
	if cfg.JimoSigningSecret == "" {
		if err := generate("BRIDGE_JIMO_SIGNING_SECRET", &cfg.JimoSigningSecret); err != nil {
			return "", err
		}
	}
	if cfg.JimoWebhookSecret == "" {
		if err := generate("BRIDGE_JIMO_WEBHOOK_SECRET", &cfg.JimoWebhookSecret); err != nil {
			return "", err
		}
	}
	// The key that derives Jimo tokens never leaves the database.
	tokenSecret, _, err = store.Secret(ctx, "jimo_token_key")
	return tokenSecret, err
}

// newApp opens the store and builds the server with every route.
func newApp(ctx context.Context, cfg config, logger *slog.Logger, stdout io.Writer) (*app, error) {
	m := newMetrics()
	store, err := store.Open(ctx, cfg.DB, store.Options{
		Caps:          mapping.Caps{AnonymousIDs: cfg.MaxAnonymousIDs, Links: cfg.MaxLinks},
		Blocklist:     mapping.NewBlocklist(cfg.BlockedIDs),
		MergeOnEmail:  cfg.MergeOnEmail,
		WALLimit:      int64(cfg.WALLimit),
		CommitTimeout: cfg.CommitTimeout,
		SyncFile:      cfg.syncFile,
		Logger:        logger,
		Observer:      m,
		DeletionGrace: cfg.DeletionGrace,
	})
	if err != nil {
		return nil, err
	}
	tokenSecret, err := resolveSecrets(ctx, &cfg, store, stdout)
	if err != nil {
		store.Close()
		return nil, err
	}
	m.registerOutbox(store.Backlogs, time.Now, logger)
	m.registerStore(store.Stats)
	a := &app{cfg: cfg, store: store, metrics: m}
	if err := a.buildSenders(); err != nil {
		store.Close()
		return nil, err
	}
	if a.echo, err = a.routes(logger, tokenSecret); err != nil {
		store.Close()
		return nil, err
	}
	return a, nil
}

// routes registers every route of the bridge, in one place.
func (a *app) routes(logger *slog.Logger, tokenSecret string) (*echo.Echo, error) {
	cfg := a.cfg
	counted := countingStore{Store: a.store, m: a.metrics}
	mode, err := jimo.ParseMode(cfg.JimoTokenMode)
	if err != nil {
		return nil, err
	}
	fwd := newForwarding(cfg, mode, tokenSecret)
	seg, err := segment.NewHandler(segment.Config{
		Jobs:         fwd.segmentJobs,
		Store:        counted,
		WriteKeys:    segment.NewWriteKeys(cfg.SegmentWriteKeys),
		SharedSecret: []byte(cfg.SegmentSharedSecret),
		RateLimit:    segment.RateLimit{PerSecond: cfg.SegmentRateLimit, Burst: cfg.SegmentRateBurst},
		Logger:       logger,
		Metrics:      segmentMetrics{a.metrics},
	})
	if err != nil {
		return nil, err
	}
	jim, err := jimo.NewHandler(jimo.Config{
		Store: counted,
		Jobs:  fwd.jimoJobs,
		Session: jimo.SessionConfig{
			Mode:             mode,
			SigningSecret:    []byte(cfg.JimoSigningSecret),
			RequireSignature: cfg.jimoRequireSignature(),
			Blocklist:        mapping.NewBlocklist(cfg.BlockedIDs),
			TokenSecret:      []byte(tokenSecret),
		},
		WebhookSecret:  cfg.JimoWebhookSecret,
		AllowedOrigins: cfg.AllowedOrigins,
		RateLimit:      jimo.RateLimit{PerSecond: cfg.JimoSessionRate},
		Logger:         logger,
	})
	if err != nil {
		return nil, err
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = httperror.Handler(logger)
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)
	refused := newRefusals(a.metrics, logger, time.Now, time.Second, cfg.SegmentSharedSecret != "")
	e.Use(observeRequests(a.metrics, refused, logger))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		logger.Error("panic serving request", "path", c.Request().URL.Path, "err", err, "stack", string(stack))
		return err
	}}))

	v1 := e.Group("/v1", segment.CORS())
	v1.POST("/:call", seg.TrackingAPI)
	v1.OPTIONS("/:call", segment.Preflight)
	e.Match([]string{http.MethodPost, http.MethodPut, http.MethodPatch}, "/segment/webhook", seg.Webhook)

	e.GET("/jimo/bridge.js", jim.Script)
	e.HEAD("/jimo/bridge.js", jim.Script)
	e.Match([]string{http.MethodPost, http.MethodOptions}, "/jimo/session", jim.Session, jim.CORS())
	e.POST("/jimo/webhook", jim.Webhook)

	// Derived mode always requires signatures.
	unsigned := mode == jimo.ModeShared && !cfg.jimoRequireSignature()
	if unsigned {
		logger.Warn("jimo session reports are accepted without a signature: anyone who knows a user ID can join a browser to it",
			"fix", "configure BRIDGE_JIMO_SIGNING_SECRET (shared with your backend) or set BRIDGE_JIMO_REQUIRE_SIGNATURE=true")
	}
	adm, err := admin.New(admin.Config{
		Store:            a.store,
		Password:         cfg.AdminPassword,
		LoginRate:        cfg.AdminLoginRate,
		Logger:           logger,
		Counters:         a.metrics.adminCounters,
		UnsignedSessions: unsigned,
		Forwarding:       adminForwarding(cfg),
		// The outbox starts before the server serves; until then no state.
		Destinations: func() []outbox.DestinationStatus {
			if a.outbox == nil {
				return nil
			}
			return a.outbox.Destinations()
		},
	})
	if err != nil {
		return nil, err
	}
	adm.Register(e.Group("/admin"))
	e.GET("/favicon.ico", adm.Favicon)
	adm.RegisterAPI(e.Group("/api/v1", adm.RequireAPI()))

	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	// Not ready while the store cannot store: a full disk, a write lock
	// held elsewhere, an overloaded writer, its file removed or replaced,
	// a failed sync. The reason is in the body (no paths, no secrets).
	e.GET("/readyz", func(c echo.Context) error {
		if err := a.store.Ready(c.Request().Context()); err != nil {
			var me *mapping.Error
			if errors.As(err, &me) {
				return me
			}
			return &mapping.Error{Code: mapping.CodeUnavailable, Message: "not ready", Err: err, RetryAfter: 5 * time.Second}
		}
		return c.String(http.StatusOK, "ready\n")
	})
	e.GET("/metrics", a.metrics.handler(logger))
	return e, nil
}

// adminForwarding is the forwarding configuration the admin pages show:
// plain values (on or off, endpoint hosts, modes), never a key.
func adminForwarding(cfg config) *admin.Forwarding {
	f := &admin.Forwarding{
		Segment:   admin.Destination{Name: segment.Destination, On: cfg.SegmentForwardWriteKey != "", Host: endpointHost(cfg.SegmentEndpoint)},
		Jimo:      admin.Destination{Name: jimo.Destination, On: cfg.JimoAPIKey != "" && cfg.JimoEndpoint != "", Host: endpointHost(cfg.JimoEndpoint)},
		Relay:     cfg.SegmentRelay,
		JimoTrack: cfg.JimoForwardTrack,
		TokenMode: cfg.JimoTokenMode,
	}
	if !f.Segment.On {
		f.Segment.Off = "BRIDGE_SEGMENT_FORWARD_WRITE_KEY is not set"
	}
	switch {
	case cfg.JimoAPIKey == "":
		f.Jimo.Off = "BRIDGE_JIMO_API_KEY is not set"
	case cfg.JimoEndpoint == "":
		f.Jimo.Off = "BRIDGE_JIMO_ENDPOINT is not set"
	}
	return f
}

// endpointHost is the host (and port) of an endpoint URL, without its
// scheme, path or any credentials in it; "" when it has none.
func endpointHost(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}
	return u.Host
}

// ipExtractor decides who the client is, for every limit keyed by client IP
// (login lockout, session rate, Tracking API). With no trusted proxies it is
// the peer address. Otherwise X-Forwarded-For is read from the right and the
// first address outside the trusted ranges is the client; a request whose peer
// is not a trusted proxy is taken at its peer address, whatever it claims.
// Loopback, link-local and private addresses are trusted only when listed.
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, r := range trusted {
		opts = append(opts, echo.TrustIPRange(r))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// serve runs the bridge until ctx ends, then shuts down gracefully: stop
// accepting, finish in-flight requests and their commits, close the database.
func serve(ctx context.Context, cfg config, logger *slog.Logger, stdout io.Writer) error {
	a, err := newApp(ctx, cfg, logger, stdout)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		a.store.Close()
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           a.echo,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "bridge listening on http://%s\n", ln.Addr())
	logger.Info("bridge started", "addr", ln.Addr().String(), "db", store.Redacted(cfg.DB), "jimo_token_mode", cfg.JimoTokenMode)

	outboxCtx, stopOutbox := context.WithCancel(context.Background())
	outboxDone := a.runOutbox(outboxCtx, logger)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var serveErr error
	select {
	case err := <-served:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		logger.Info("shutting down")
	case <-a.store.Fatal():
		// The store refuses every write from now on; a restart recovers from what is on disk.
		logger.Error("stopping: the database can no longer be written safely", "err", a.store.FatalError())
		serveErr = fmt.Errorf("the database can no longer be written safely: %w", a.store.FatalError())
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(shutdownCtx)
	// Requests are finished and their commits durable; now the deliveries.
	stopOutbox()
	<-outboxDone
	closeErr := a.store.Close()
	logger.Info("stopped")
	return errors.Join(serveErr, shutdownErr, closeErr)
}
