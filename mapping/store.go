package mapping

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/mattn/go-sqlite3"
)

// The driver names the store opens SQLite with: go-sqlite3 with automatic
// WAL checkpoints off, because a checkpoint inside a commit would make the
// requests waiting on that commit pay for it; the store checkpoints from its
// own goroutine instead (see checkpointLoop). The writers' driver also never
// spills a transaction's pages to the log before its commit, which
// walBufferVFS requires: a rolled-back transaction then has written nothing.
// Its page cache grows with the transaction instead.
const (
	sqliteDriver = "sqlite3_bridge"
	writerDriver = "sqlite3_bridge_writer"
)

func init() {
	sql.Register(sqliteDriver, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		_, err := c.Exec("PRAGMA wal_autocheckpoint = 0", nil)
		return err
	}})
	sql.Register(writerDriver, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		_, err := c.Exec("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_spill = OFF", nil)
		return err
	}})
}

//go:embed migrations/*.sql
var migrations embed.FS

// Options configures a Store. Zero values mean the documented defaults.
type Options struct {
	Caps      Caps
	Blocklist Blocklist
	// MergeOnEmail makes an email address link profiles; by default it is only an attribute.
	MergeOnEmail bool
	// MaxGroup bounds how many messages one group commit holds; default 2000.
	MaxGroup int
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Observer receives commit figures for metrics; nil means none.
	Observer CommitObserver
	// DeletionGrace is how long identifiers a privacy deletion took are held
	// back (hidden, never forwarded) before they are erased, so that a
	// message older than the deletion arriving after it is still decided in
	// order (rule 6). 0 erases them in the deletion's own transaction.
	DeletionGrace time.Duration
}

// CommitObserver is told about every group commit.
type CommitObserver interface {
	// Committed reports one transaction: how many messages it held, how long it took, and its error.
	Committed(messages int, took time.Duration, err error)
}

// Store keeps messages, the identity graph and the outbox in one database.
// Writes go through one goroutine that commits concurrent submissions in
// groups; reads use their own connections. A Store is safe for concurrent use.
type Store struct {
	write *sqlx.DB
	read  *sqlx.DB
	opts  Options
	log   *slog.Logger

	// committer is the writer connection the commit goroutine holds for
	// its transactions; stmts are prepared on it and used by that goroutine only.
	committer *sqlx.Conn
	stmts     map[string]*sqlx.Stmt

	queue      chan *submission
	outboxWake chan struct{}
	// Committed groups wait in syncQueue until the log is on disk; synced
	// is closed when the last one was released.
	syncQueue chan []*submission
	synced    chan struct{}
	path      string
	mu        sync.RWMutex // guards closed; held shared while queueing
	closed    bool
	closing   chan struct{}
	stopped   chan struct{}
}

// Open opens (creating if needed) the SQLite database at path, applies the
// migrations it lacks, and starts the group committer. Close releases it.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxGroup <= 0 {
		opts.MaxGroup = 2000
	}
	opts.Caps = opts.Caps.withDefaults()
	if opts.Blocklist.extra == nil {
		opts.Blocklist = NewBlocklist(nil)
	}

	if err := migrateFile(ctx, path, opts.Now); err != nil {
		return nil, err
	}
	write, err := openSQLite(path, true)
	if err != nil {
		return nil, err
	}
	read, err := openSQLite(path, false)
	if err != nil {
		write.Close()
		return nil, err
	}
	committer, err := write.Connx(ctx)
	if err != nil {
		read.Close()
		write.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	closeAll := func() { committer.Close(); read.Close(); write.Close() }
	s := &Store{
		committer:  committer,
		write:      write,
		read:       read,
		opts:       opts,
		log:        opts.Logger,
		stmts:      map[string]*sqlx.Stmt{},
		queue:      make(chan *submission, 4096),
		outboxWake: make(chan struct{}, 1),
		syncQueue:  make(chan []*submission, 64),
		synced:     make(chan struct{}),
		path:       path,
		closing:    make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	// What the migrations (and an earlier process) wrote is durable before anything is acknowledged.
	if err := errors.Join(s.syncLog(), syncDir(path)); err != nil {
		closeAll()
		return nil, err
	}
	go s.commitLoop()
	go s.syncLoop()
	go s.checkpointLoop()
	go s.eraseLoop()
	return s, nil
}

// SQLiteDSN is the data source name the store opens path with: WAL mode,
// foreign keys, a busy timeout and fully synchronous commits (a commit that
// returned is on disk). The writer takes the write lock at BEGIN.
func SQLiteDSN(path string, writer bool) string {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", "10000")
	q.Set("_synchronous", "FULL")
	q.Set("_cache_size", "-65536") // 64 MiB of page cache per connection
	if writer {
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

// openSQLite opens path with SQLiteDSN. The writer opens it through
// walBufferVFS, whose sync of the write-ahead log at each commit writes the
// commit out without waiting for the disk: the store makes each commit
// durable itself, by syncing the log beside the committer before it
// acknowledges (see syncLoop), so the next group can be applied meanwhile.
func openSQLite(path string, writer bool) (*sqlx.DB, error) {
	dsn, driver := SQLiteDSN(path, writer), sqliteDriver
	if writer {
		if err := registerWALBuffer(); err != nil {
			return nil, err
		}
		dsn, driver = dsn+"&vfs="+walBufferVFS, writerDriver
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if writer {
		// The committer holds one connection for its transactions; the
		// second serves the few writes outside them (stored secrets).
		db.SetMaxOpenConns(2)
	} else {
		db.SetMaxOpenConns(8)
	}
	db.SetMaxIdleConns(8)
	db.SetConnMaxLifetime(0)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// migrateFile applies the migrations path lacks on a connection of its own,
// through the default VFS and fully synchronous: a migration may be one
// large transaction, which that connection may spill to the log as it goes.
func migrateFile(ctx context.Context, path string, now func() time.Time) error {
	db, err := sqlx.Open(sqliteDriver, SQLiteDSN(path, true))
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	return migrate(ctx, db, now)
}

// migrate applies the embedded migrations that are not yet recorded, in order, each in its own transaction.
func migrate(ctx context.Context, db *sqlx.DB, now func() time.Time) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with a number", base)
		}
		var applied int
		if err := db.GetContext(ctx, &applied, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if applied > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, now().UnixNano()); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return nil
}

// syncLog makes every commit so far durable: it syncs the write-ahead log
// (any descriptor of a file syncs all of it), or the database file when
// there is no log.
func (s *Store) syncLog() error {
	for _, name := range []string{s.path + "-wal", s.path} {
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", name, err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("sync %s: neither the database nor its log exists", s.path)
}

// syncDir makes the database's and log's directory entries durable.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("sync directory of %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory of %s: %w", path, err)
	}
	return nil
}

// syncLoop releases committed groups once their commits are on disk: it
// takes every group waiting, syncs the log once for all of them, and only
// then lets their callers acknowledge. Meanwhile the committer applies the
// next group. If the sync fails, every caller gets the error (their data is
// committed but maybe not durable; a client's retry deduplicates).
func (s *Store) syncLoop() {
	defer close(s.synced)
	for group := range s.syncQueue {
		groups := [][]*submission{group}
	gather:
		for {
			select {
			case g, ok := <-s.syncQueue:
				if !ok {
					break gather
				}
				groups = append(groups, g)
			default:
				break gather
			}
		}
		err := s.syncLog()
		if err != nil {
			s.log.Error("sync the write-ahead log", "err", err)
			err = &Error{Code: CodeUnavailable, Message: "the bridge could not make the data durable; retry", Err: err}
		}
		for _, g := range groups {
			for _, sub := range g {
				if err != nil && sub.err == nil {
					sub.err = err
				}
				close(sub.done)
			}
		}
	}
}

// checkpointLoop copies the write-ahead log into the database file every
// second, beside the committer rather than inside its commits, and once more
// (truncating the log) when the store closes.
func (s *Store) checkpointLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if _, err := s.read.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
				s.log.Warn("checkpoint", "err", err)
			}
		case <-s.stopped:
			return
		}
	}
}

// Checkpoint copies the whole write-ahead log into the database file and
// truncates the log, waiting for the committer's transaction in progress.
// It runs on a reader connection, which syncs fully: the database file is
// durable when it returns. The store also checkpoints by itself.
func (s *Store) Checkpoint(ctx context.Context) error {
	if _, err := s.read.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// Ready reports whether the database answers and every migration is applied.
func (s *Store) Ready(ctx context.Context) error {
	var applied int
	if err := s.read.GetContext(ctx, &applied, `SELECT COUNT(*) FROM schema_migrations`); err != nil {
		return fmt.Errorf("database not ready: %w", err)
	}
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	if applied < len(names) {
		return fmt.Errorf("database has %d of %d migrations", applied, len(names))
	}
	return nil
}

// Close stops accepting submissions, commits what is queued, and closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	<-s.stopped
	<-s.synced
	if err := s.Checkpoint(context.Background()); err != nil {
		s.log.Warn("final checkpoint", "err", err)
	}
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
	return errors.Join(s.committer.Close(), s.read.Close(), s.write.Close())
}
