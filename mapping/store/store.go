// Package store keeps the bridge's state in one database (SQLite, WAL):
// messages as received, the identity graph (identifiers, links, profiles,
// clusters, the link log, tombstones), traits, secrets, and the outbox, so an
// identity change and the deliveries it causes commit in one transaction. It
// applies mapping's rules (Unify) in a single writer that commits concurrent
// submissions in groups, serves the outbox's worker as its Queue (claims,
// outcomes), and answers the admin page's and the API's reads.
package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/binary"
	"encoding/hex"
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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/mattn/go-sqlite3"
	"golang.org/x/time/rate"

	"github.com/bridgeworks/bridge/mapping"
)

// The driver names the store opens SQLite with: go-sqlite3 with automatic
// WAL checkpoints off, because a checkpoint inside a commit would make the
// requests waiting on that commit pay for it; the store checkpoints between
// groups and from its own goroutine instead (see boundLog, checkpointLoop).
// The writers' driver also commits with synchronous=NORMAL: SQLite does not
// sync the log at each commit, the store does (syncLoop), beside the
// committer, before it acknowledges; a new log header and every checkpoint
// are still synced by SQLite itself. Open checks this contract on the
// committer's connection and refuses to start without it.
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
		_, err := c.Exec("PRAGMA wal_autocheckpoint = 0; PRAGMA synchronous = NORMAL", nil)
		return err
	}})
}

//go:embed migrations/*.sql
var migrations embed.FS

// Options configures a Store. Zero values mean the documented defaults.
type Options struct {
	Caps      mapping.Caps
	Blocklist mapping.Blocklist
	// MergeOnEmail makes an email address link profiles; by default it is only an attribute.
	MergeOnEmail bool
	// MaxGroup bounds how many messages one group commit holds; default 2000.
	MaxGroup int
	// WALLimit bounds the write-ahead log, in bytes: see boundLog. A
	// single group larger than the last quarter can still overshoot it.
	// Default 64 MiB.
	WALLimit int64
	// CommitTimeout bounds how long Submit waits for its messages to be
	// queued and committed when the caller's context sets no earlier
	// deadline; past it Submit answers CodeUnavailable. Default 10 s.
	CommitTimeout time.Duration
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
	// SyncFile makes the write-ahead log durable; nil means fdatasync(2)
	// where the system has it (the log's contents and size, not its times),
	// else (*os.File).Sync.
	// It exists for tests to inject failures: an error from it is fatal.
	SyncFile func(*os.File) error
}

// DefaultWALLimit is the write-ahead log's bound when Options.WALLimit is 0.
const DefaultWALLimit = 64 << 20

// CommitObserver is told about every group commit.
type CommitObserver interface {
	// Committed reports one transaction: how many messages it held, how long it took, and its error.
	Committed(messages int, took time.Duration, err error)
}

// Store keeps messages, the identity graph and the outbox in one database.
// Writes go through one goroutine that commits concurrent submissions in
// groups; reads use their own connections. A Store is safe for concurrent use.
type Store struct {
	write pool
	read  pool
	opts  Options
	log   *slog.Logger

	// postgres is set when the database is PostgreSQL (see openPostgres);
	// what follows about files and the write-ahead log is SQLite's alone.
	postgres bool
	// lockKey names this database's locks on PostgreSQL: the schema's hash.
	lockKey int32
	// listening is closed when listenLoop has stopped; jobsChannel is the
	// channel on which a commit that wrote outbox jobs notifies every
	// replica on this schema (see notifyJobs). PostgreSQL only.
	listening   chan struct{}
	jobsChannel string

	// committer is, on SQLite, the writer connection the commit goroutine
	// holds for its transactions; stmts are prepared on it and used by
	// that goroutine only. On PostgreSQL each group takes a connection from
	// the pool, whose driver prepares and caches statements itself.
	committer *sqlx.Conn
	stmts     map[string]*sqlx.Stmt
	// bound caches queries rebound for the engine (see rebound).
	bound sync.Map

	// queue holds the callers' messages waiting for a group commit; ops
	// holds the functions run in a group (inTx: outbox claims and
	// outcomes, operators' repairs and deletions, erasure and retention
	// batches, the readiness probe), which join the next group ahead of
	// the messages queued (see gather).
	queue, ops chan *submission
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

	// walFile is the write-ahead log, opened once: every sync goes through
	// it, so an error the kernel reports for the file is seen here.
	walFile *os.File
	// shmFile is the log's index (-shm), read for how much of the log is in
	// use (see logInUse); nil if it could not be opened. pageSize is the
	// database's page size, which sizes the log's frames.
	shmFile  *os.File
	pageSize int64
	// dbInfo and walInfo identify the files opened, to notice when the
	// path names another file (or none) later.
	dbInfo, walInfo os.FileInfo

	health   health
	walBytes atomic.Int64
	walPeak  atomic.Int64
	walLast  int64 // the log's size after the last group; the committer's
	ckpts    atomic.Int64
	// ckptMu is held by whichever of the store's checkpoints runs: SQLite
	// refuses a second one at once (SQLITE_BUSY) rather than waiting.
	ckptMu sync.Mutex
	// ckptWake wakes checkpointLoop early: the committer sends on it when
	// the log has grown by ckptEvery since it last did (at ckptAsked).
	ckptWake  chan struct{}
	ckptAsked int64
	// logPerMessage is how much the last group grew the log per message
	// (the committer's; see gather).
	logPerMessage int64
	// phase is what the committer is doing: idle, waiting for the write
	// lock, or applying a group; phaseSince is when it started it.
	phase      atomic.Int32
	phaseSince atomic.Int64
}

// The committer's phases.
const (
	phaseIdle int32 = iota
	phaseLocking
	phaseApplying
)

// Open opens the store at dsn: a PostgreSQL database when dsn is a
// postgres:// (or postgresql://) URL (see openPostgres), otherwise the
// SQLite database file at that path, created if needed. It applies the
// migrations the database lacks and starts the group committer. Close
// releases it.
//
// A new SQLite database is created readable and writable by its owner only;
// its log and shared-memory files take the same mode. Open refuses to create
// a database where a log (-wal) or shared-memory file (-shm) of a missing one
// is left: that database was moved or deleted, and starting empty would
// hide it (and generate new secrets).
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxGroup <= 0 {
		opts.MaxGroup = 2000
	}
	if opts.WALLimit <= 0 {
		opts.WALLimit = DefaultWALLimit
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = 10 * time.Second
	}
	if opts.SyncFile == nil {
		opts.SyncFile = syncData
	}
	opts.Caps = opts.Caps.WithDefaults()
	if IsPostgres(dsn) {
		return openPostgres(ctx, dsn, opts)
	}
	return openSQLiteStore(ctx, dsn, opts)
}

// newStore returns a Store on its pools, not yet started (see start).
func newStore(write, read *sqlx.DB, path string, opts Options) *Store {
	s := &Store{
		write:      pool{write},
		read:       pool{read},
		opts:       opts,
		log:        opts.Logger,
		stmts:      map[string]*sqlx.Stmt{},
		queue:      make(chan *submission, 4096),
		ops:        make(chan *submission, 256),
		outboxWake: make(chan struct{}, 1),
		ckptWake:   make(chan struct{}, 1),
		syncQueue:  make(chan []*submission, 64),
		synced:     make(chan struct{}),
		path:       path,
		closing:    make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	s.health.init(opts.Logger, opts.Now)
	return s
}

// start starts the store's goroutines.
func (s *Store) start() {
	go s.commitLoop()
	go s.syncLoop()
	if !s.postgres {
		go s.checkpointLoop()
	}
	go s.eraseLoop()
}

// openSQLiteStore opens the SQLite database file at path; see Open.
func openSQLiteStore(ctx context.Context, path string, opts Options) (*Store, error) {
	if err := createFile(path); err != nil {
		return nil, err
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
	s := newStore(write, read, path, opts)
	s.committer = committer
	closeAll := func() {
		committer.Close()
		read.Close()
		write.Close()
		if s.walFile != nil {
			s.walFile.Close()
		}
		if s.shmFile != nil {
			s.shmFile.Close()
		}
	}
	if err := s.checkContract(ctx); err != nil {
		closeAll()
		return nil, err
	}
	// The log exists once a connection has read in WAL mode, and stays while the committer is open.
	var migrated int
	if err := committer.GetContext(ctx, &migrated, `SELECT COUNT(*) FROM schema_migrations`); err != nil {
		closeAll()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if s.walFile, err = os.OpenFile(path+"-wal", os.O_RDWR, 0); err != nil {
		closeAll()
		return nil, fmt.Errorf("open %s: its write-ahead log: %w", path, err)
	}
	if err := committer.GetContext(ctx, &s.pageSize, `PRAGMA page_size`); err != nil {
		closeAll()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if s.shmFile, err = os.Open(path + "-shm"); err != nil {
		s.log.Warn("the log's index cannot be read; the log's size is taken as its file's", "err", err)
		s.shmFile = nil
	}
	if s.walInfo, err = s.walFile.Stat(); err == nil {
		s.dbInfo, err = os.Stat(path)
	}
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// What the migrations (and an earlier process) wrote is durable before anything is acknowledged.
	if err := errors.Join(s.syncLog(), syncDir(path)); err != nil {
		closeAll()
		return nil, err
	}
	s.sampleLog()
	s.start()
	return s, nil
}

// createFile creates path, readable and writable by its owner only, unless
// it exists; it refuses when path is missing but its log or shared-memory
// file is there.
func createFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("open %s: %w", path, err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			return fmt.Errorf("open %s: the database file is missing but %s is present: the database was moved or deleted, "+
				"and starting empty would lose what that file holds; restore the database file, or remove %s-wal and %s-shm to start with an empty database",
				path, path+suffix, path, path)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil // another process created it meanwhile
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return f.Close()
}

// checkContract verifies on the committer's connection what the store's
// durability relies on: the log is a write-ahead log, SQLite does not
// checkpoint inside commits, and commits are synced by the store
// (synchronous=NORMAL: a commit SQLite syncs itself would only be slower).
func (s *Store) checkContract(ctx context.Context) error {
	var got struct {
		Journal    string `db:"journal_mode"`
		Sync       int    `db:"synchronous"`
		Checkpoint int    `db:"wal_autocheckpoint"`
	}
	for _, p := range []struct {
		name string
		dest any
	}{{"journal_mode", &got.Journal}, {"synchronous", &got.Sync}, {"wal_autocheckpoint", &got.Checkpoint}} {
		if err := s.committer.GetContext(ctx, p.dest, `PRAGMA `+p.name); err != nil {
			return fmt.Errorf("open %s: read PRAGMA %s: %w", s.path, p.name, err)
		}
	}
	if got.Journal != "wal" || got.Sync != 1 || got.Checkpoint != 0 {
		return fmt.Errorf("open %s: the writer connection has journal_mode=%s, synchronous=%d, wal_autocheckpoint=%d; the store requires wal, 1 (NORMAL) and 0",
			s.path, got.Journal, got.Sync, got.Checkpoint)
	}
	return nil
}

// SQLiteDSN is the data source name of a fully synchronous connection to
// path (a commit that returned is on disk): WAL mode, foreign keys and a
// busy timeout. A writer takes the write lock at BEGIN. The store's own
// writer connections commit with synchronous=NORMAL and sync the log
// themselves (see writerDriver).
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

// openSQLite opens path with SQLiteDSN; the writer through writerDriver,
// whose commits the store syncs itself (see syncLoop), so the next group
// can be applied while the last one syncs.
func openSQLite(path string, writer bool) (*sqlx.DB, error) {
	dsn, driver := SQLiteDSN(path, writer), sqliteDriver
	if writer {
		dsn = strings.Replace(dsn, "_synchronous=FULL", "_synchronous=NORMAL", 1)
		driver = writerDriver
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
	return migrate(ctx, db, false, now)
}

// migrate applies the embedded migrations that are not yet recorded, in
// order, each in its own transaction. On PostgreSQL (postgres set) each is
// rewritten by postgresDDL first; its checksum is the file's all the same.
func migrate(ctx context.Context, sdb *sqlx.DB, postgres bool, now func() time.Time) error {
	db := pool{sdb}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Each applied migration's checksum is kept, so that one edited after it
	// was applied is noticed instead of silently diverging from the schema.
	hasChecksumQuery := `SELECT COUNT(*) > 0 FROM pragma_table_info('schema_migrations') WHERE name = 'checksum'`
	if postgres {
		hasChecksumQuery = `SELECT COUNT(*) > 0 FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = 'schema_migrations' AND column_name = 'checksum'`
	}
	var hasChecksum bool
	if err := db.GetContext(ctx, &hasChecksum, hasChecksumQuery); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if !hasChecksum {
		if _, err := db.ExecContext(ctx, `ALTER TABLE schema_migrations ADD COLUMN checksum TEXT NOT NULL DEFAULT ''`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
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
		body, err := migrations.ReadFile(name)
		if err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		sum := sha256.Sum256(body)
		checksum := hex.EncodeToString(sum[:])
		// The check is inside the migration's transaction, which takes the
		// write lock first on SQLite (the connection begins IMMEDIATE): of
		// several processes starting at once on a new database, one applies
		// each migration and the others find it applied.
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		defer tx.Rollback()
		if postgres {
			// A migration waits for the tables it alters however long that takes.
			if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = 0`); err != nil {
				return fmt.Errorf("migration %s: %w", base, err)
			}
		}
		var applied []string
		if err := tx.SelectContext(ctx, &applied, tx.Rebind(`SELECT checksum FROM schema_migrations WHERE version = ?`), version); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if len(applied) > 0 {
			switch applied[0] {
			case checksum:
			case "":
				// Applied by a version that kept no checksums: adopt this one.
				if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE schema_migrations SET checksum = ? WHERE version = ?`), checksum, version); err != nil {
					return fmt.Errorf("migration %s: %w", base, err)
				}
			default:
				return fmt.Errorf("migration %s differs from the one applied to this database (checksum %.12s, applied %.12s): a released migration must never change; run the release that applied it, and add a new migration for any change", base, checksum, applied[0])
			}
			if err := tx.Commit(); err != nil {
				return fmt.Errorf("migration %s: %w", base, err)
			}
			continue
		}
		ddl := string(body)
		if postgres {
			ddl = postgresDDL(ddl)
		}
		if _, err := tx.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO schema_migrations (version, applied_at, checksum) VALUES (?, ?, ?)`), version, now().UnixNano(), checksum); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return nil
}

// syncLog makes every commit so far durable: it syncs the write-ahead log
// through the descriptor held since Open.
func (s *Store) syncLog() error {
	if s.postgres {
		return nil // a commit PostgreSQL acknowledged is durable (synchronous_commit)
	}
	if err := s.opts.SyncFile(s.walFile); err != nil {
		return fmt.Errorf("sync %s: %w", s.walFile.Name(), err)
	}
	return nil
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
// next group.
//
// A failed sync is fatal: the kernel may have dropped the pages it could
// not write and report success for the next sync, so nothing committed
// since the last good sync can be known durable. The groups of that sync,
// and every group after it, are refused (never acknowledged), and the store
// becomes fatal (see Fatal): its process must stop.
func (s *Store) syncLoop() {
	defer close(s.synced)
	var failed error
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
		if failed == nil {
			if err := s.syncLog(); err != nil {
				s.fail(err)
				failed = s.health.refusal()
			}
		}
		for _, g := range groups {
			for _, sub := range g {
				if failed != nil {
					sub.err = failed
				}
				close(sub.done)
			}
		}
	}
}

// sampleLog records the size of the log in use (see logInUse); only the
// committer calls it (and Open).
func (s *Store) sampleLog() int64 {
	n := s.logInUse()
	s.walBytes.Store(n)
	for {
		peak := s.walPeak.Load()
		if n <= peak || s.walPeak.CompareAndSwap(peak, n) {
			return n
		}
	}
}

// logInUse is how many bytes of the write-ahead log hold frames of the
// current log: after a checkpoint that restarted the log, the file keeps
// its size while the next commits write it over from its start. SQLite
// keeps the number of valid frames (mxFrame) at byte 16 of the log's index,
// in the machine's byte order (https://www.sqlite.org/walformat.html); a
// log in use is its 32-byte header and that many frames of a page and a
// 24-byte header each. Without the index, it is the file's size, which is
// never less.
func (s *Store) logInUse() int64 {
	fi, err := s.walFile.Stat()
	if err != nil {
		return 0
	}
	n := fi.Size()
	if s.shmFile == nil {
		return n
	}
	var b [4]byte
	if _, err := s.shmFile.ReadAt(b[:], 16); err != nil {
		return n
	}
	frames := int64(binary.NativeEndian.Uint32(b[:]))
	return min(n, 32+frames*(24+s.pageSize))
}

// boundLog keeps the write-ahead log under WALLimit: between groups, once
// the log has passed three quarters of the limit (or would pass the limit
// should the next group grow it twice as much as the last did: the outbox's
// claims and outcomes join groups unannounced, see gather), the committer
// checkpoints it to completion (RESTART), so the next group starts it over.
// Most of the copying is done by then: every ckptEvery of growth, it asks
// checkpointLoop to copy the log beside it. The file is not truncated: the
// next groups write over it, and a sync of a file whose size did not change
// records no new size (see syncData); the file stays as large as the log in
// use ever was. The checkpoint syncs the log and then the database file.
// The groups waiting meanwhile pay for it, inside any measurement of the
// store's throughput.
func (s *Store) boundLog(group []*submission) {
	if s.postgres {
		return // PostgreSQL bounds its own log
	}
	n := s.sampleLog()
	grew := max(n-s.walLast, 0)
	s.walLast = n
	messages := 0
	for _, sub := range group {
		messages += len(sub.msgs)
	}
	if messages > 0 && grew > 0 {
		s.logPerMessage = grew / int64(messages)
	}
	if n < s.ckptAsked {
		s.ckptAsked = 0 // the log started over
	}
	if n-s.ckptAsked >= s.ckptEvery() {
		s.ckptAsked = n
		select {
		case s.ckptWake <- struct{}{}:
		default:
		}
	}
	// Never after a failed sync: what the log holds may not be what was
	// written, and must not reach the database.
	soon := n >= s.opts.WALLimit/4*3
	now := n+2*grew > s.opts.WALLimit || n >= s.opts.WALLimit/8*7
	if !soon && !now || s.FatalError() != nil {
		return
	}
	var res struct {
		Busy         int `db:"busy"`
		Log          int `db:"log"`
		Checkpointed int `db:"checkpointed"`
	}
	// Waiting for a long reader would stall every request behind the
	// committer: the checkpoint waits briefly, and is tried again after the
	// next group if a reader kept it from completing; only when the next
	// group could pass the bound does it wait as long as it takes. The same
	// goes for the passive checkpoint beside it.
	ctx := context.Background()
	wait := 200
	if now {
		wait = 10000
		s.ckptMu.Lock()
	} else if !s.ckptMu.TryLock() {
		return // the passive checkpoint is copying the log meanwhile
	}
	s.committer.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, wait))
	err := s.committer.GetContext(ctx, &res, `PRAGMA wal_checkpoint(RESTART)`)
	s.committer.ExecContext(ctx, `PRAGMA busy_timeout = 10000`)
	s.ckptMu.Unlock()
	s.ckpts.Add(1)
	switch {
	case err != nil && cannotStore(err) != ReasonLocked:
		s.storeFailed(fmt.Errorf("checkpoint: %w", err))
	case err != nil:
		s.log.Debug("checkpoint incomplete: the database is locked", "err", err)
	case res.Busy != 0:
		// A reader still uses the log's end; the next group tries again.
		s.log.Debug("checkpoint incomplete: a reader uses the log", "log_frames", res.Log, "checkpointed_frames", res.Checkpointed)
	}
	if err == nil && res.Busy == 0 {
		// All of the log is in the database: the next group starts it over
		// (its index counts the old frames until then).
		s.walLast = 0
		s.walBytes.Store(0)
	} else {
		s.walLast = s.sampleLog()
	}
}

// ckptEvery is how much the log grows between the checkpoints that
// checkpointLoop runs at the committer's request: an eighth of WALLimit.
func (s *Store) ckptEvery() int64 { return s.opts.WALLimit / 8 }

// checkpointLoop copies the write-ahead log into the database file beside
// the committer rather than inside its commits, every second and whenever
// the committer says the log grew by ckptEvery, so that the checkpoint that
// bounds the log (boundLog, which the writer waits for) has little left to
// copy. It also checks, every second, that the database's path still names
// the file the store has open.
func (s *Store) checkpointLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.checkFiles()
		case <-s.ckptWake:
		case <-s.stopped:
			return
		}
		if s.FatalError() != nil || !s.ckptMu.TryLock() {
			continue // the committer is checkpointing
		}
		_, err := s.read.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
		s.ckptMu.Unlock()
		if err != nil && !s.health.unavailable() {
			s.log.Warn("checkpoint", "err", err)
		}
	}
}

// checkFiles compares the files at the database's and log's paths with the
// files the store has open. Should either be removed or replaced, what the
// store commits would be lost with the unlinked file: it refuses to store
// (and Ready fails) until the path names its file again.
func (s *Store) checkFiles() error {
	if s.postgres {
		return nil
	}
	var problem error
	var what string
	for _, f := range []struct {
		name, what string
		info       os.FileInfo
	}{{s.path, "database file", s.dbInfo}, {s.path + "-wal", "database's write-ahead log", s.walInfo}} {
		now, err := os.Stat(f.name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			what = "the " + f.what + " was removed or renamed"
		case err != nil:
			what = "the " + f.what + " cannot be checked"
		case !os.SameFile(now, f.info):
			what = "the " + f.what + " was replaced by another file"
		default:
			continue
		}
		problem = fmt.Errorf("%s (%s) while the bridge had it open", what, f.name)
		if err != nil {
			problem = fmt.Errorf("%w: %w", problem, err)
		}
		break
	}
	if problem != nil {
		s.health.set(ReasonFileReplaced, problem, true)
		return &mapping.Error{Code: mapping.CodeUnavailable, Message: "not ready (" + ReasonFileReplaced + "): " + what, Err: problem, RetryAfter: 60 * time.Second}
	}
	s.health.clear(ReasonFileReplaced)
	return nil
}

// Checkpoint copies the whole write-ahead log into the database file and
// truncates the log, waiting for the committer's transaction in progress.
// It runs on a reader connection, which syncs fully: the database file is
// durable when it returns. The store also checkpoints by itself.
func (s *Store) Checkpoint(ctx context.Context) error {
	if s.postgres {
		return nil // PostgreSQL checkpoints by itself
	}
	if _, err := s.read.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// Ready reports whether the store can store: nil when the database answers,
// every migration is applied, its files are the ones opened, and nothing
// keeps it from committing (a full disk, a write lock held elsewhere past
// CommitTimeout, an overloaded writer, a failed sync). Otherwise it returns
// an *Error with CodeUnavailable whose message names the reason (one of the
// Reason constants) and no file paths, fit for an unauthenticated client;
// the details are in its cause.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.checkFiles(); err != nil {
		return err
	}
	notReady := func(reason, what string, cause error) error {
		return &mapping.Error{Code: mapping.CodeUnavailable, Message: "not ready (" + reason + "): " + what, Err: cause, RetryAfter: 5 * time.Second}
	}
	// Whether a condition that a commit clears has gone is found out here
	// too: a load balancer sends no submission to a replica that is not
	// ready. The database answering clears database_down; an empty
	// transaction that commits clears a lock or an overload that is over.
	switch reason, _ := s.health.current(); {
	case reason == ReasonUnreachable && s.write.PingContext(ctx) == nil:
		s.health.clear(ReasonUnreachable)
	case (reason == ReasonLocked || reason == ReasonOverloaded) && s.phase.Load() == phaseIdle:
		probe, cancel := context.WithTimeout(ctx, time.Second)
		s.inTx(probe, func(context.Context, *writer) error { return nil })
		cancel()
	}
	if reason, since := s.health.current(); reason != "" {
		return notReady(reason, "cannot store since "+since.UTC().Format(time.RFC3339), s.health.refusal())
	}
	if p, at := s.phase.Load(), time.Unix(0, s.phaseSince.Load()); p != phaseIdle && s.opts.Now().Sub(at) > s.opts.CommitTimeout {
		reason := ReasonOverloaded
		if p == phaseLocking {
			reason = ReasonLocked
		}
		return notReady(reason, "the group commit in progress started "+s.opts.Now().Sub(at).Round(time.Millisecond).String()+" ago", nil)
	}
	var applied int
	if err := s.read.GetContext(ctx, &applied, `SELECT COUNT(*) FROM schema_migrations`); err != nil {
		return notReady("database", "the database does not answer", err)
	}
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	if applied < len(names) {
		return notReady("database", fmt.Sprintf("the database has %d of %d migrations", applied, len(names)), nil)
	}
	return nil
}

// Stats are the store's figures for metrics.
type Stats struct {
	// WALBytes is the size of the write-ahead log in use at the last sample
	// (after each group; 0 right after a complete checkpoint), WALPeak the
	// largest sampled since Open, WALLimit its bound. The log's file, written
	// over in place after each checkpoint, stays as large as WALPeak.
	WALBytes, WALPeak, WALLimit int64
	// Checkpoints counts the checkpoints the committer ran to bound the log.
	Checkpoints int64
	// Unavailable is why the store cannot store (one of the Reason
	// constants), or empty; UnavailableSince is when that began.
	Unavailable      string
	UnavailableSince time.Time
	// Refused counts submissions answered CodeUnavailable because the store could not store, by reason.
	Refused map[string]int64
}

// Stats returns the store's current figures.
func (s *Store) Stats() Stats {
	reason, since := s.health.current()
	return Stats{
		WALBytes:         s.walBytes.Load(),
		WALPeak:          s.walPeak.Load(),
		WALLimit:         s.opts.WALLimit,
		Checkpoints:      s.ckpts.Load(),
		Unavailable:      reason,
		UnavailableSince: since,
		Refused:          s.health.refusedCounts(),
	}
}

// Fatal is closed when the store met a failure it cannot recover from (a
// failed sync of the log): it refuses every write from then on, and its
// process should stop with a non-zero status so that its supervisor
// restarts it, recovering from what is on disk. FatalError tells why.
func (s *Store) Fatal() <-chan struct{} { return s.health.fatal }

// FatalError returns the failure that closed Fatal, or nil.
func (s *Store) FatalError() error {
	select {
	case <-s.health.fatal:
		return s.health.fatalErr
	default:
		return nil
	}
}

// Close stops accepting submissions, commits what is queued, and closes the
// database. After a fatal failure (see Fatal) it leaves SQLite's connections
// open, since closing the last one would checkpoint a log whose sync failed
// into the database: the process is to exit, and SQLite recovers from what
// is on disk when it starts again.
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	<-s.stopped
	<-s.synced
	if err := s.FatalError(); err != nil {
		return fmt.Errorf("close %s: not checkpointed after a failed sync: %w", s.path, err)
	}
	if s.postgres {
		<-s.listening
		return errors.Join(s.read.Close(), s.write.Close())
	}
	if err := s.Checkpoint(context.Background()); err != nil {
		s.log.Warn("final checkpoint", "err", err)
	}
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
	var shmErr error
	if s.shmFile != nil {
		shmErr = s.shmFile.Close()
	}
	return errors.Join(s.committer.Close(), s.read.Close(), s.write.Close(), s.walFile.Close(), shmErr)
}

// Why the store cannot store, as Stats.Unavailable and metrics report it.
const (
	ReasonDiskFull     = "disk_full"         // SQLite answered SQLITE_FULL; probed until a tiny write succeeds
	ReasonLocked       = "locked"            // another connection held the write lock past the busy timeout or CommitTimeout
	ReasonOverloaded   = "overloaded"        // submissions waited past CommitTimeout for the writer
	ReasonFileReplaced = "database_replaced" // the database's path no longer names the file open
	ReasonSyncFailed   = "sync_failed"       // the log could not be synced: fatal
	ReasonUnreachable  = "database_down"     // PostgreSQL cannot be reached, or refuses connections
)

// unavailable is the error a caller gets while the store cannot store for reason.
func unavailable(reason string, stored bool) *mapping.Error {
	e := &mapping.Error{Code: mapping.CodeUnavailable}
	switch reason {
	case ReasonDiskFull:
		e.Message, e.RetryAfter = "the bridge cannot store: its disk is full; retry later", 30*time.Second
	case ReasonLocked:
		e.Message, e.RetryAfter = "the bridge cannot store: its database is locked by another process; retry shortly", 5*time.Second
	case ReasonFileReplaced:
		e.Message, e.RetryAfter = "the bridge cannot store: its database file was removed or replaced; retry later", 60*time.Second
	case ReasonSyncFailed:
		e.Message, e.RetryAfter = "the bridge could not make the data durable and is restarting; retry shortly", 5*time.Second
	case ReasonUnreachable:
		e.Message, e.RetryAfter = "the bridge cannot reach its database; retry shortly", 5*time.Second
	default:
		e.Message, e.RetryAfter = "the bridge is overloaded; retry shortly", 2*time.Second
	}
	if stored {
		e.Message += " (the request may have been stored all the same; retrying it is safe)"
	}
	return e
}

// health is whether the store can store, and why not: the state behind
// Ready, Stats and the refusals. It logs a change of state once (should
// conditions come and go, at most one line every 10 seconds on average,
// refusals always), and while one lasts, at most one line every 30 seconds.
type health struct {
	log *slog.Logger
	now func() time.Time

	any      atomic.Bool                   // reason != ""; read on every commit
	refusing atomic.Pointer[mapping.Error] // non-nil: submissions are refused with it at once
	fatal    chan struct{}
	fatalMu  sync.Once
	fatalErr error // set before fatal is closed

	mu       sync.Mutex
	reason   string
	since    time.Time
	refused  map[string]int64
	unlogged int64
	every    *rate.Limiter // "still" lines while a condition lasts
	changes  *rate.Limiter // lines about a condition starting or ending, should it come and go
}

func (h *health) init(log *slog.Logger, now func() time.Time) {
	h.log, h.now = log, now
	h.fatal = make(chan struct{})
	h.refused = map[string]int64{}
	h.every = rate.NewLimiter(rate.Every(30*time.Second), 1)
	h.changes = rate.NewLimiter(rate.Every(10*time.Second), 3)
}

// set records that the store cannot store for reason; refuse makes
// submissions fail at once rather than attempt doomed commits.
func (h *health) set(reason string, cause error, refuse bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reason == ReasonSyncFailed {
		return // fatal: nothing else matters
	}
	if h.refusing.Load() != nil && !refuse {
		h.logStill(cause) // a refusal outranks a slow commit
		return
	}
	if reason != h.reason {
		if h.changes.Allow() || refuse {
			h.log.Error("cannot store; answering 503 until it clears", "reason", reason, "err", cause, "refused_before", h.unlogged)
			h.unlogged = 0
		}
		h.reason, h.since = reason, h.now()
		h.every.Allow() // the line just logged counts
		h.any.Store(true)
		if refuse {
			h.refusing.Store(unavailable(reason, false))
		} else {
			h.refusing.Store(nil)
		}
		return
	}
	h.logStill(cause)
}

// logStill logs, rate-limited, that the condition lasts. h.mu is held.
func (h *health) logStill(cause error) {
	if h.every.Allow() {
		h.log.Warn("still cannot store", "reason", h.reason, "since", h.since, "refused", h.unlogged, "err", cause)
		h.unlogged = 0
	}
}

// clear records that reason no longer holds, if it is the current one.
func (h *health) clear(reasons ...string) {
	if !h.any.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range reasons {
		if h.reason == r {
			if h.changes.Allow() {
				h.log.Info("storing again", "reason", r, "after", h.now().Sub(h.since).Round(time.Millisecond), "refused", h.unlogged)
				h.unlogged = 0
			}
			h.reason, h.since = "", time.Time{}
			h.any.Store(false)
			h.refusing.Store(nil)
			return
		}
	}
}

// countRefused records n submissions answered unavailable for the current reason.
func (h *health) countRefused(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	reason := h.reason
	if reason == "" {
		reason = ReasonOverloaded
	}
	h.refused[reason] += int64(n)
	h.unlogged += int64(n)
	if h.reason != "" {
		h.logStill(nil)
	}
}

// refusal is the error submissions are refused with at once, or nil.
func (h *health) refusal() error {
	if e := h.refusing.Load(); e != nil {
		return e
	}
	return nil
}

func (h *health) unavailable() bool { return h.any.Load() }

func (h *health) current() (string, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reason, h.since
}

func (h *health) refusedCounts() map[string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[string]int64, len(h.refused))
	for k, v := range h.refused {
		m[k] = v
	}
	return m
}

// fail makes the store fatal: it refuses every submission from now on, and Fatal is closed.
func (s *Store) fail(cause error) {
	s.health.fatalMu.Do(func() {
		s.health.fatalErr = cause
		s.health.set(ReasonSyncFailed, cause, true)
		s.log.Error("the write-ahead log could not be synced: data may be lost; refusing all writes, the process must restart", "err", cause)
		close(s.health.fatal)
	})
}

// storeFailed classifies a failed commit or checkpoint. For a failure that
// keeps the store from storing it records the state and returns the error
// the callers get; otherwise (a bug, bad data) it returns nil.
func (s *Store) storeFailed(err error) error {
	reason := cannotStore(err)
	switch reason {
	case "":
		return nil
	case ReasonSyncFailed:
		s.fail(err)
		return s.health.refusal()
	case ReasonDiskFull:
		s.health.set(reason, err, true)
	default:
		s.health.set(reason, err, false)
	}
	return unavailable(reason, false)
}

// cannotStore tells why err keeps the store from storing: one of the
// Reason constants, or "" for any other failure.
func cannotStore(err error) string {
	if reason := cannotStorePostgres(err); reason != "" {
		return reason
	}
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return ""
	}
	switch {
	case se.Code == sqlite3.ErrFull, errors.Is(se.SystemErrno, syscall.ENOSPC), errors.Is(se.SystemErrno, syscall.EDQUOT):
		return ReasonDiskFull
	case se.Code == sqlite3.ErrBusy, se.Code == sqlite3.ErrLocked:
		return ReasonLocked
	case se.ExtendedCode == sqlite3.ErrIoErrFsync, se.ExtendedCode == sqlite3.ErrIoErrDirFsync:
		return ReasonSyncFailed
	}
	return ""
}
