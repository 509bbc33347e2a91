package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/admin"
	"github.com/bridgeworks/bridge/segment"
)

// app is everything a running bridge holds.
type app struct {
	cfg     config
	store   *mapping.Store
	metrics *metrics
	echo    *echo.Echo
	senders map[string]mapping.Sender
	closers []func() error // senders to close after the outbox stops
}

// buildSenders creates a sender per configured destination. The HTTP clients
// do not retry: the outbox does.
func (a *app) buildSenders(logger *slog.Logger) error {
	a.senders = map[string]mapping.Sender{}
	if a.cfg.JimoAPIKey != "" && a.cfg.JimoEndpoint != "" {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.MaxIdleConnsPerHost = a.cfg.DeliveryWorkers
		a.senders[jimo.Destination] = jimo.NewClient(a.cfg.JimoEndpoint, a.cfg.JimoAPIKey, &http.Client{Timeout: 30 * time.Second, Transport: transport})
	}
	if a.cfg.SegmentForwardWriteKey != "" {
		fwd, err := segment.NewForwarder(segment.ForwarderConfig{
			Endpoint:      a.cfg.SegmentEndpoint,
			WriteKey:      a.cfg.SegmentForwardWriteKey,
			ResolveUserID: a.userIDOfToken,
			BatchSize:     a.cfg.DeliveryWorkers, // one batch can carry every delivery in flight
			Logger:        logger,
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

// runOutbox delivers outbox jobs until ctx ends; done is closed when it has stopped.
func (a *app) runOutbox(ctx context.Context, logger *slog.Logger) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		a.store.RunOutbox(ctx, mapping.OutboxOptions{
			Senders:     a.senders,
			MaxAttempts: a.cfg.MaxDeliveryAttempts,
			Workers:     a.cfg.DeliveryWorkers,
			KeepDone:    a.cfg.KeepDeliveredJobs,
			// One process delivers from a SQLite file: what a crashed one held is due at once.
			ReleaseOnStart: true,
			Logger:         logger,
			Observer:       a.metrics,
		})
		for _, c := range a.closers {
			if err := c(); err != nil {
				logger.Warn("close sender", "err", err)
			}
		}
	}()
	return done
}

// secrets resolves the secrets that must exist, generating (and printing
// once) the ones not configured.
func resolveSecrets(ctx context.Context, cfg *config, store *mapping.Store, stdout io.Writer) (tokenSecret string, err error) {
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
	if strings.HasPrefix(cfg.DB, "postgres://") || strings.HasPrefix(cfg.DB, "postgresql://") {
		return nil, fmt.Errorf("BRIDGE_DB: PostgreSQL is not supported by this version yet; give a SQLite file path")
	}
	m := newMetrics()
	describeMetrics(m)
	store, err := mapping.Open(ctx, cfg.DB, mapping.Options{
		Caps:          mapping.Caps{AnonymousIDs: cfg.MaxAnonymousIDs, Links: cfg.MaxLinks},
		Blocklist:     mapping.NewBlocklist(cfg.BlockedIDs),
		MergeOnEmail:  cfg.MergeOnEmail,
		WALLimit:      int64(cfg.WALLimit),
		CommitTimeout: cfg.CommitTimeout,
		SyncFile:      cfg.syncFile,
		Logger:        logger,
		Observer:      m,
	})
	if err != nil {
		return nil, err
	}
	tokenSecret, err := resolveSecrets(ctx, &cfg, store, stdout)
	if err != nil {
		store.Close()
		return nil, err
	}
	a := &app{cfg: cfg, store: store, metrics: m}
	if err := a.buildSenders(logger); err != nil {
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
		RateLimit:    segment.RateLimit{PerSecond: cfg.SegmentRateLimit},
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
			RequireSignature: cfg.JimoRequireSigned,
			Blocklist:        mapping.NewBlocklist(cfg.BlockedIDs),
			TokenSecret:      []byte(tokenSecret),
		},
		WebhookSecret:  cfg.JimoWebhookSecret,
		AllowedOrigins: cfg.AllowedOrigins,
		RateLimit:      jimo.RateLimit{PerSecond: sessionRate(cfg.JimoSessionRate)},
		Logger:         logger,
	})
	if err != nil {
		return nil, err
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(logger)
	e.IPExtractor = echo.ExtractIPDirect()
	if cfg.TrustProxy {
		e.IPExtractor = echo.ExtractIPFromXFFHeader()
	}
	e.Use(observeRequests(a.metrics, logger))
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

	adm, err := admin.New(admin.Config{
		Store:    a.store,
		Password: cfg.AdminPassword,
		Logger:   logger,
		Counters: a.adminCounters,
	})
	if err != nil {
		return nil, err
	}
	adm.Register(e.Group("/admin"))
	api := e.Group("/api/v1", adm.RequireAPI())
	api.GET("/profiles", getProfile(a.store))
	api.GET("/warnings", listWarnings(a.store))
	adm.RegisterAPI(api)

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
	a.outboxGauges(logger)
	a.storeGauges()
	e.GET("/metrics", func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderContentType, "text/plain; version=0.0.4; charset=utf-8")
		a.metrics.write(c.Response())
		return nil
	})
	return e, nil
}

// storeGauges publishes the store's figures: the write-ahead log's size,
// peak and bound, the checkpoints that bound it, and whether (and since
// when) the store cannot store, by reason.
func (a *app) storeGauges() {
	a.metrics.gauge("bridge_wal_bytes", "Size of the SQLite write-ahead log: now (state=current), largest since start (state=peak), and its bound (state=limit).", func() map[string]float64 {
		st := a.store.Stats()
		return map[string]float64{`{state="current"}`: float64(st.WALBytes), `{state="peak"}`: float64(st.WALPeak), `{state="limit"}`: float64(st.WALLimit)}
	})
	a.metrics.gauge("bridge_wal_checkpoints", "Checkpoints the writer ran to keep the write-ahead log under its bound.", func() map[string]float64 {
		return map[string]float64{"": float64(a.store.Stats().Checkpoints)}
	})
	reasons := []string{mapping.ReasonDiskFull, mapping.ReasonLocked, mapping.ReasonOverloaded, mapping.ReasonFileReplaced, mapping.ReasonSyncFailed}
	a.metrics.gauge("bridge_store_unavailable_seconds", "How long the store has been unable to store, by reason (0: it can).", func() map[string]float64 {
		st := a.store.Stats()
		m := map[string]float64{}
		for _, r := range reasons {
			v := 0.0
			if st.Unavailable == r {
				v = time.Since(st.UnavailableSince).Seconds()
			}
			m[`{reason="`+r+`"}`] = v
		}
		return m
	})
	a.metrics.gauge("bridge_store_refused", "Writes answered 503 because the store could not store, by reason, since start.", func() map[string]float64 {
		st := a.store.Stats()
		m := map[string]float64{}
		for _, r := range reasons {
			m[`{reason="`+r+`"}`] = float64(st.Refused[r])
		}
		return m
	})
}

// sessionRate maps the configured rate to jimo's: 0 means no limit, as for the Tracking API.
func sessionRate(perSecond float64) float64 {
	if perSecond <= 0 {
		return -1
	}
	return perSecond
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
	logger.Info("bridge started", "addr", ln.Addr().String(), "db", cfg.DB, "jimo_token_mode", cfg.JimoTokenMode)

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
