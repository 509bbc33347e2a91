package main

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bridgeworks/bridge/mapping/store"
	"github.com/bridgeworks/bridge/mapping/testenv"
)

// postgresServerEnv names the variable that points the tests at another
// PostgreSQL server than the local one CI runs.
const postgresServerEnv = "BRIDGE_TEST_POSTGRES"

// postgresServer is the PostgreSQL server tests create their databases on:
// $BRIDGE_TEST_POSTGRES, else the local server (trust auth, user postgres).
func postgresServer() string {
	if u := os.Getenv(postgresServerEnv); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// newPostgresDB creates a database for t on postgresServer, named
// bridge_e2e_ and 12 random hex digits, drops it when t ends, and returns
// its URL. Without a reachable server t skips through testenv (it fails
// under BRIDGE_TEST_REQUIRE_ALL=1); any other failure fails t.
func newPostgresDB(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dbURL, drop, err := createPostgresDB(ctx, postgresServer(), "bridge_e2e_")
	if errors.Is(err, errPostgresUnreachable) {
		noPostgres(t, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := drop(ctx); err != nil {
			t.Errorf("drop the test database: %v", err)
		}
	})
	return dbURL
}

// noPostgres ends t, which needs the PostgreSQL server that err says is
// unreachable: a skip, or a failure under BRIDGE_TEST_REQUIRE_ALL=1.
func noPostgres(t *testing.T, err error) {
	t.Helper()
	t.Log(err)
	testenv.Lacks(t, "a PostgreSQL server at "+store.Redacted(postgresServer()),
		"apt-get install -y postgresql and trust user postgres on 127.0.0.1, or set "+postgresServerEnv+" to a server's URL")
}

// pgConnect opens a connection to dbURL for the test to look at what the
// bridges stored; it is closed when t ends.
func pgConnect(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
