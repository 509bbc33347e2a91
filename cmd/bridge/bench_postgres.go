package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"

	"github.com/jackc/pgx/v5"

	"github.com/bridgeworks/bridge/mapping/store"
)

// errPostgresUnreachable wraps the failure to connect to the server at all
// (as opposed to a refusal once connected), so that tests can tell a
// machine without PostgreSQL from a real failure.
var errPostgresUnreachable = errors.New("PostgreSQL server unreachable")

// createPostgresDB creates a database with a new random name (prefix and 12
// hex digits) on the PostgreSQL server serverURL connects to, and returns its
// URL: serverURL with the database name replaced. drop removes it, closing
// whatever connections are still open to it (a replica killed without
// closing them, a test's pool); it may be called more than once.
func createPostgresDB(ctx context.Context, serverURL, prefix string) (dbURL string, drop func(context.Context) error, err error) {
	u, err := url.Parse(serverURL)
	if err != nil || !store.IsPostgres(serverURL) {
		return "", nil, fmt.Errorf("%q is not a postgres:// URL", store.Redacted(serverURL))
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %w", errPostgresUnreachable, store.Redacted(serverURL), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop = func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// postgresCheckpoint asks the server to write every dirty page now
// (CHECKPOINT, which needs a superuser or pg_checkpoint), so that the next
// run does not pay for the last one's; the equivalent of settle for
// PostgreSQL. Without the privilege it does nothing.
func postgresCheckpoint(ctx context.Context, serverURL string) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	conn.Exec(ctx, "CHECKPOINT")
	return nil
}

// benchReplicas starts n bridges in this process on one PostgreSQL
// database, each with its own store and server, as n replicas behind a load
// balancer would run, each delivering from the outbox throughout, as the
// bridge of the SQLite runs does. They start one after another, so the
// first runs the migrations. It returns their URLs, the first one's store,
// and what stops them all.
func benchReplicas(ctx context.Context, n int, dbURL, writeKey, jimoURL string) (urls []string, first *store.Store, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	for range n {
		cfg, err := parseConfig("bench", []string{"-addr", "127.0.0.1:0", "-db", dbURL,
			"-segment-write-keys", writeKey, "-admin-password", "bench", "-jimo-api-key", "bench", "-jimo-endpoint", jimoURL},
			func(string) string { return "" }, io.Discard)
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		a, err := newApp(ctx, cfg, slog.New(slog.DiscardHandler), io.Discard)
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		u, stopServer, err := listen(a.echo)
		if err != nil {
			a.store.Close()
			stop()
			return nil, nil, nil, err
		}
		// Each replica delivers its share of the outbox throughout, as in production.
		outboxCtx, stopOutbox := context.WithCancel(ctx)
		outboxDone := a.runOutbox(outboxCtx, slog.New(slog.DiscardHandler))
		stops = append(stops, func() { stopServer(); stopOutbox(); <-outboxDone; a.store.Close() })
		urls = append(urls, u)
		if first == nil {
			first = a.store
		}
	}
	return urls, first, stop, nil
}
