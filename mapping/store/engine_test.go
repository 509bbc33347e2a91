package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/bridgeworks/bridge/mapping/testenv"
)

// The store's tests run on both engines: on SQLite in the test binary's own
// run, and again on PostgreSQL in a child process (TestPostgres), where
// BRIDGE_TEST_ENGINE=postgres makes testDSN hand out fresh PostgreSQL
// schemas instead of files. To run some tests on PostgreSQL alone:
//
//	BRIDGE_TEST_ENGINE=postgres go test ./mapping/store -run 'TestName'
//
// The server is BRIDGE_TEST_POSTGRES, by default the local one CI starts.
const (
	engineVar   = "BRIDGE_TEST_ENGINE"
	postgresVar = "BRIDGE_TEST_POSTGRES"
)

// onPostgres is whether this run's tests use PostgreSQL.
var onPostgres = os.Getenv(engineVar) == "postgres"

// sqliteOnly are the tests about SQLite's files alone (its write-ahead log,
// file modes, syncs, a file removed or a disk full under it, migrations
// edited in a file): the child run on PostgreSQL leaves them out.
var sqliteOnly = []string{
	"TestPostgres",
	"TestEditedMigrationIsRefused", "TestMigrationReferencesStoredMessages",
	"TestWALStaysBounded", "TestFailedSyncIsFatal", "TestDiskFullRefusesThenRecovers", "TestLockedPastDeadline",
	"TestDatabaseRemovedUnderTheStore", "TestMissingDatabaseBesideItsLog", "TestDatabaseFilesOwnerOnly",
	"TestWriterContractChecked", "TestLogRestartsInPlace", "TestGroupsKeepToAnEighthOfTheLog",
	// and those that use PostgreSQL whatever the run's engine: they ran in the parent.
	"TestPostgresUnreachableThenBack", "TestPostgresLockedPastDeadline", "TestJobsWakeOtherStores", "TestPostgresConnectionLostMidGroup", "TestPartitionedReplicaReleasesTheLock",
	"TestConcurrentStartMigratesOnce",
}

// postgresServer is the PostgreSQL server the tests use.
func postgresServer() string {
	if v := os.Getenv(postgresVar); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// testDSN returns a fresh, empty database for one test: a file in a
// temporary directory on SQLite, a schema of its own on PostgreSQL, dropped
// when t ends.
func testDSN(t testing.TB) string {
	t.Helper()
	dsn, drop := freshDatabase(t)
	t.Cleanup(drop)
	return dsn
}

// postgresDatabase is testDSN on PostgreSQL whatever the run's engine, for
// the tests about PostgreSQL alone: they run in the parent run, and
// TestPostgres's child leaves them out (see sqliteOnly).
func postgresDatabase(t *testing.T) string {
	t.Helper()
	requirePostgres(t)
	dsn, drop := freshDatabaseOn(t, true)
	t.Cleanup(drop)
	return dsn
}

// freshDatabase returns a new, empty database (see testDSN) and the
// function that removes it, to call once every store on it is closed.
func freshDatabase(t testing.TB) (dsn string, drop func()) {
	t.Helper()
	return freshDatabaseOn(t, onPostgres)
}

func freshDatabaseOn(t testing.TB, postgres bool) (dsn string, drop func()) {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name := hex.EncodeToString(b)
	if !postgres {
		dir := t.TempDir()
		return filepath.Join(dir, name+".db"), func() { os.RemoveAll(dir) }
	}
	admin, err := sql.Open("pgx", postgresServer())
	if err != nil {
		t.Fatal(err)
	}
	schema := "bridge_test_" + name
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		admin.Close()
		t.Fatalf("create a schema for the test on %s: %v", postgresServer(), err)
	}
	drop = func() {
		defer admin.Close()
		if _, err := admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			t.Errorf("drop the test's schema: %v", err)
		}
	}
	sep := "?"
	if strings.Contains(postgresServer(), "?") {
		sep = "&"
	}
	return postgresServer() + sep + "search_path=" + schema, drop
}

// requirePostgres ends t unless the PostgreSQL server the tests use answers
// (see testenv.Missing) or the run is -short.
func requirePostgres(t *testing.T) {
	t.Helper()
	if testing.Short() {
		testenv.Lacks(t, "a full run", "run without -short")
	}
	db, err := sql.Open("pgx", postgresServer())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
		db.Close()
	}
	if err != nil {
		testenv.Missing(t, "PostgreSQL at "+postgresServer(), "apt-get install -y postgresql, started, or set "+postgresVar)
	}
}

// TestPostgres runs this package's tests again with PostgreSQL as the
// engine (see testDSN), but for those about SQLite's files alone, and fails
// with the child's failures. It needs the server at BRIDGE_TEST_POSTGRES.
func TestPostgres(t *testing.T) {
	requirePostgres(t)
	skip := make([]string, len(sqliteOnly))
	for i, name := range sqliteOnly {
		skip[i] = "^" + name + "$"
	}
	args := []string{"-test.skip", strings.Join(skip, "|"), "-test.count=1"}
	for _, a := range os.Args[1:] {
		// The parent's selection and output format are not the child's.
		if strings.HasPrefix(a, "-test.run") || strings.HasPrefix(a, "-test.skip") ||
			strings.HasPrefix(a, "-test.v") || strings.HasPrefix(a, "-test.count") {
			continue
		}
		args = append(args, a)
	}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), engineVar+"=postgres")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if testing.Verbose() || err != nil {
		sc := bufio.NewScanner(&out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
		}
	}
	if err != nil {
		t.Fatalf("the store's tests on PostgreSQL failed (%v); rerun them with %s=postgres go test ./mapping/store", err, engineVar)
	}
}

// TestRedacted: a PostgreSQL URL is logged without its password; a SQLite path as it is.
func TestRedacted(t *testing.T) {
	for dsn, want := range map[string]string{
		"postgres://bridge:s3cret@db.internal:5432/bridge?sslmode=require": "postgres://bridge:xxxxx@db.internal:5432/bridge?sslmode=require",
		"postgresql://bridge@db.internal/bridge":                           "postgresql://bridge@db.internal/bridge",
		"data/bridge.db":                                                   "data/bridge.db",
	} {
		if got := Redacted(dsn); got != want || strings.Contains(got, "s3cret") {
			t.Errorf("Redacted(%q) = %q, want %q", dsn, got, want)
		}
	}
}
