package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
)

// PostgreSQL: several bridge processes (replicas) share one database.
//
// Every transaction of the group committer (a group of messages, a repair,
// a deletion, housekeeping) first takes one transaction-level advisory lock
// (pg_advisory_xact_lock), the same for every replica on this database's
// schema. Writes to the identity graph are therefore serialised exactly as
// SQLite's single writer serialises them, and every rule of the
// single-writer design holds across replicas: a message sees every message
// committed before it, no two groups decide the same link at once, and rows
// (messages, jobs) become visible in the order of their IDs, since they are
// inserted under the lock. Group commit keeps the lock's cost to one round
// trip per group, not per message. The outbox's claims and outcomes run
// outside it (see outboxTx); reads take no lock.
//
// A replica that loses the database in the middle of a transaction must not
// keep that lock: the server ends a session idle in a transaction after
// idle_in_transaction_session_timeout (set below), and the replica gives up
// on a transaction after postgresTxTimeout, closing its connection.

// IsPostgres reports whether dsn names a PostgreSQL database (a
// postgres:// or postgresql:// URL) rather than a SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Redacted is dsn fit for a log line or a page: a PostgreSQL URL without its
// password; a SQLite path as it is.
func Redacted(dsn string) string {
	if !IsPostgres(dsn) {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	return u.Redacted()
}

// The classes of the store's advisory locks; the second key is the hash of
// the schema, so that bridges on other schemas of one database do not wait
// for each other.
const (
	lockClassGraph     int32 = 0x62726467 // "brdg": every write transaction
	lockClassMigration int32 = 0x6d696772 // "migr": applying migrations, at start
)

// openPostgres opens the PostgreSQL database at dsn; see Open. Replicas that
// start together apply the missing migrations once: each waits for a
// session-level advisory lock, and finds them applied once it has it.
//
// Unless the URL sets them, each connection waits at most CommitTimeout for
// a lock (lock_timeout), so a group stuck behind another replica's long
// transaction answers 503 instead of hanging; its session ends when it idles
// in a transaction for twice that, at least 5 s
// (idle_in_transaction_session_timeout), so a replica cut off from the
// database does not hold the graph lock for the others; and it names itself
// "bridge" (application_name) in pg_stat_activity.
func openPostgres(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("BRIDGE_DB: %w", err)
	}
	if _, ok := cfg.RuntimeParams["lock_timeout"]; !ok {
		cfg.RuntimeParams["lock_timeout"] = fmt.Sprint(opts.CommitTimeout.Milliseconds())
	}
	if _, ok := cfg.RuntimeParams["idle_in_transaction_session_timeout"]; !ok {
		cfg.RuntimeParams["idle_in_transaction_session_timeout"] = fmt.Sprint(max(2*opts.CommitTimeout, 5*time.Second).Milliseconds())
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "bridge"
	}
	where := fmt.Sprintf("postgres://%s:%d/%s", cfg.Host, cfg.Port, cfg.Database) // no password
	open := func(conns int) (*sqlx.DB, error) {
		db := sqlx.NewDb(stdlib.OpenDB(*cfg), "pgx")
		db.SetMaxOpenConns(conns)
		db.SetMaxIdleConns(conns)
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("open %s: %w", where, err)
		}
		return db, nil
	}
	// The committer uses one connection at a time, the outbox's claims and
	// outcomes (see outboxTx) one each, and the few writes outside them
	// (secrets, sessions) the rest.
	write, err := open(6)
	if err != nil {
		return nil, err
	}
	read, err := open(8)
	if err != nil {
		write.Close()
		return nil, err
	}
	s := newStore(write, read, where, opts)
	s.postgres = true
	if err := s.write.GetContext(ctx, &s.lockKey, `SELECT hashtext(current_schema())`); err != nil {
		s.write.Close()
		s.read.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s.jobsChannel = fmt.Sprintf("bridge_jobs_%08x", uint32(s.lockKey))
	if err := s.migratePostgres(ctx); err != nil {
		s.write.Close()
		s.read.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s.listening = make(chan struct{})
	go s.listenLoop(cfg)
	s.start()
	return s, nil
}

// migratePostgres applies the missing migrations while holding the
// migration lock on a connection of its own.
func (s *Store) migratePostgres(ctx context.Context) error {
	conn, err := s.write.Connx(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// A session-level lock waits for whoever migrates, however long that takes.
	if _, err := conn.ExecContext(ctx, `SET lock_timeout = 0`); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1, $2)`, lockClassMigration, s.lockKey); err != nil {
		return fmt.Errorf("wait for the migration lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, lockClassMigration, s.lockKey)
	defer conn.ExecContext(context.WithoutCancel(ctx), `RESET lock_timeout`)
	return migrate(ctx, s.write.DB, true, s.opts.Now)
}

// postgresTxTimeout bounds a transaction on PostgreSQL, from its first
// statement to its commit: past it the driver cancels the statement under
// way and closes the connection, so a committer whose database stopped
// answering (a partition) fails its group instead of hanging.
func (s *Store) postgresTxTimeout() time.Duration { return max(3*s.opts.CommitTimeout, 15*time.Second) }

// beginPostgres starts a group's transaction on conn and takes the graph
// lock (see the top of this file).
func (s *Store) beginPostgres(ctx context.Context, conn *sqlx.Conn) error {
	if _, err := conn.ExecContext(ctx, `BEGIN`); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClassGraph, s.lockKey); err != nil {
		conn.ExecContext(ctx, `ROLLBACK`)
		return err
	}
	return nil
}

// jsonText is the SQL expression for the text at path in the JSON text
// column col (NULL where there is none): the dialects differ.
func (s *Store) jsonText(col string, path ...string) string {
	if s.postgres {
		return "(" + col + "::jsonb #>> '{" + strings.Join(path, ",") + "}')"
	}
	return "json_extract(" + col + ", '$." + strings.Join(path, ".") + "')"
}

// notifyJobs tells the other replicas, once the group's transaction
// commits, that it wrote outbox jobs: their workers claim at once rather
// than at their next poll.
func (s *Store) notifyJobs(ctx context.Context, w *writer) error {
	if _, err := w.exec(ctx, `SELECT pg_notify(?, '')`, s.jobsChannel); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// listenLoop wakes this replica's outbox worker whenever any replica
// commits outbox jobs (notifyJobs), on a connection of its own, until the
// store closes. Should the connection fail, it connects again, with growing
// waits, and wakes the worker once, for what it may have missed.
func (s *Store) listenLoop(cfg *pgx.ConnConfig) {
	defer close(s.listening)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	const firstWait, lastWait = time.Second, 30 * time.Second
	wait := firstWait
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			_, err = conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.jobsChannel}.Sanitize())
			if err == nil {
				wait = firstWait
				s.wakeOutbox()
			}
			for err == nil {
				if _, err = conn.WaitForNotification(ctx); err == nil {
					s.wakeOutbox()
				}
			}
			conn.Close(context.Background())
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("listen for outbox jobs of other replicas", "err", err, "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(2*wait, lastWait)
	}
}

// outboxTx runs fn, one of the outbox's claims or outcomes, in a
// transaction. On SQLite that is the next group commit (inTx). On
// PostgreSQL it is a transaction of its own, outside the group commit and
// its graph lock, so that delivery bookkeeping on any replica never waits
// for ingestion nor holds it up: claims lock the jobs they take (FOR UPDATE
// SKIP LOCKED, see skipLocked), and per-user order holds because a claim
// takes a job only when no older job of its key is pending or running, which
// a concurrent claim of that older job (locked, pending until it commits)
// still shows. A deadlock or serialization failure between replicas is
// retried.
func (s *Store) outboxTx(ctx context.Context, fn func(ctx context.Context, w *writer) error) error {
	if !s.postgres {
		return s.inTx(ctx, fn)
	}
	for attempt := 1; ; attempt++ {
		err := s.postgresTx(ctx, fn)
		var pe *pgconn.PgError
		if attempt < 5 && errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") {
			continue
		}
		if unavailable := s.storeFailed(err); unavailable != nil {
			return unavailable
		}
		return err
	}
}

// postgresTx runs fn in a transaction on a connection of the write pool.
func (s *Store) postgresTx(ctx context.Context, fn func(ctx context.Context, w *writer) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.postgresTxTimeout())
	defer cancel()
	conn, err := s.write.Connx(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN`); err != nil {
		return err
	}
	// No group: its messages' IDs and lookups are none of an outbox transaction's business.
	w := &writer{conn: conn, store: s, opts: &s.opts, now: s.opts.Now().UnixNano(), behind: &behind{}}
	if err := fn(ctx, w); err != nil {
		conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
		return err
	}
	_, err = w.exec(ctx, `COMMIT`) // after what fn wrote behind
	return err
}

// skipLocked is the clause that makes a claim's SELECT lock the jobs it
// takes and pass over those another replica's claim holds; SQLite, whose
// writer is alone, has none.
func (s *Store) skipLocked() string {
	if s.postgres {
		return ` FOR UPDATE OF j SKIP LOCKED`
	}
	return ""
}

// What postgresDDL rewrites: SQLite's row IDs become identity columns
// (BY DEFAULT, since clusters and traits take their IDs from other rows),
// every integer 64 bits wide as SQLite's are, text compared byte by byte as
// SQLite compares it (order keys are compared in SQL: a locale's collation
// would reorder them), and SQLite's table options go.
var (
	ddlRowID   = regexp.MustCompile(`\bINTEGER PRIMARY KEY( AUTOINCREMENT)?`)
	ddlInteger = regexp.MustCompile(`\bINTEGER\b`)
	ddlText    = regexp.MustCompile(`\bTEXT\b`)
	ddlNoRowID = regexp.MustCompile(`\)\s*WITHOUT ROWID`)
)

// postgresDDL rewrites a migration written for SQLite for PostgreSQL: the
// dialect override of the migrations (see the variables above).
func postgresDDL(ddl string) string {
	ddl = ddlRowID.ReplaceAllString(ddl, "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
	ddl = ddlInteger.ReplaceAllString(ddl, "BIGINT")
	ddl = ddlText.ReplaceAllString(ddl, `TEXT COLLATE "C"`)
	return ddlNoRowID.ReplaceAllString(ddl, ")")
}

// cannotStorePostgres tells why a PostgreSQL error keeps the store from
// storing (one of the Reason constants), or "".
func cannotStorePostgres(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "53100": // disk_full
			return ReasonDiskFull
		case pe.Code == "55P03", pe.Code == "57014": // lock_not_available, query_canceled (lock_timeout)
			return ReasonLocked
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "57P"), // connection exceptions, shutdowns
			pe.Code == "25006", // read_only_sql_transaction: connected to a standby, as after a failover
			pe.Code == "25P03": // idle_in_transaction_session_timeout ended the session
			return ReasonUnreachable
		case strings.HasPrefix(pe.Code, "53"): // insufficient resources: too many connections, out of memory
			return ReasonOverloaded
		}
		return ""
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	// A connection the server closed reads as EOF; a transaction past
	// postgresTxTimeout ends with its context's deadline.
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) || pgconn.Timeout(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) {
		return ReasonUnreachable
	}
	return ""
}
