package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// The admin page's login sessions and its login lockout live in the
// database, so that every replica on it agrees: a session started through
// one replica is accepted by the others, and wrong passwords count against
// a client whichever replica they reach. These are small writes outside the
// group commit, on the writer pool; they are not synced before they return
// (a crash may forget a login or a wrong password, nothing more).

// MaxAdminSessions bounds the stored admin sessions: creating one beyond it
// ends the least recently used (last seen to within SessionLimits.touchEvery).
const MaxAdminSessions = 1000

// SessionLimits bound an admin session's life: it ends after Idle without
// a request, or Max after it was created, whichever comes first.
type SessionLimits struct {
	Idle, Max time.Duration
}

// touchEvery is how stale a session's recorded last use may grow before a
// request records it again: a minute, or a 60th of Idle when that is
// shorter, so that a page view is not a write. Idle is measured from the
// recorded time, so a session may end up to touchEvery early, never late.
func (l SessionLimits) touchEvery() time.Duration {
	return min(time.Minute, l.Idle/60)
}

// expired reports whether a session created at created and last seen at
// lastSeen (Unix nanoseconds) has ended at now.
func (l SessionLimits) expired(created, lastSeen int64, now time.Time) bool {
	t := now.UnixNano()
	return t-lastSeen > int64(l.Idle) || t-created > int64(l.Max)
}

// AdminSession is a live admin session.
type AdminSession struct {
	// CSRF is the session's token for the forms of its pages.
	CSRF string
	// Flash is the message waiting for the next page (opaque to the
	// store), "" when there is none, as read: take it with PopAdminFlash.
	Flash string
}

// sessionKey is what a session is stored under: the SHA-256 (hex) of its
// ID, so that the database never holds an ID that opens a session.
func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// CreateAdminSession stores a new session with this ID (a random token
// the caller made, which only the cookie holds) and CSRF token, started at
// now. It first ends the sessions that expired under lim, and, when
// MaxAdminSessions are left, the least recently used ones.
func (s *Store) CreateAdminSession(ctx context.Context, id, csrf string, now time.Time, lim SessionLimits) error {
	if err := s.PruneAdminSessions(ctx, now, lim); err != nil {
		return err
	}
	// Make room: when MaxAdminSessions are left, the one last seen longest
	// ago goes (with any last seen at that same instant); with fewer, the
	// subquery is NULL and nothing goes.
	if _, err := s.write.ExecContext(ctx, s.write.Rebind(`DELETE FROM admin_sessions WHERE last_seen_at <=
		(SELECT last_seen_at FROM admin_sessions ORDER BY last_seen_at DESC LIMIT 1 OFFSET ?)`), MaxAdminSessions-1); err != nil {
		return fmt.Errorf("create admin session: bound the sessions: %w", err)
	}
	t := now.UnixNano()
	if _, err := s.write.ExecContext(ctx, s.write.Rebind(`INSERT INTO admin_sessions (id_hash, csrf, created_at, last_seen_at, flash) VALUES (?, ?, ?, ?, '')`),
		sessionKey(id), csrf, t, t); err != nil {
		return fmt.Errorf("create admin session: %w", err)
	}
	return nil
}

// AdminSession returns the live session with this ID and records its use
// (at most once per touchEvery), or ok false when there is none: never
// created, ended, or expired under lim at now (then it is deleted).
func (s *Store) AdminSession(ctx context.Context, id string, now time.Time, lim SessionLimits) (_ AdminSession, ok bool, err error) {
	if id == "" {
		return AdminSession{}, false, nil
	}
	key := sessionKey(id)
	var row struct {
		CSRF     string `db:"csrf"`
		Created  int64  `db:"created_at"`
		LastSeen int64  `db:"last_seen_at"`
		Flash    string `db:"flash"`
	}
	err = s.read.GetContext(ctx, &row, s.read.Rebind(`SELECT csrf, created_at, last_seen_at, flash FROM admin_sessions WHERE id_hash = ?`), key)
	if errors.Is(err, sql.ErrNoRows) {
		return AdminSession{}, false, nil
	}
	if err != nil {
		return AdminSession{}, false, fmt.Errorf("read admin session: %w", err)
	}
	if lim.expired(row.Created, row.LastSeen, now) {
		if _, err := s.write.ExecContext(ctx, s.write.Rebind(`DELETE FROM admin_sessions WHERE id_hash = ?`), key); err != nil {
			return AdminSession{}, false, fmt.Errorf("delete expired admin session: %w", err)
		}
		return AdminSession{}, false, nil
	}
	if t := now.UnixNano(); t-row.LastSeen >= int64(lim.touchEvery()) {
		// Never backwards: another replica may have recorded a later use.
		if _, err := s.write.ExecContext(ctx, s.write.Rebind(`UPDATE admin_sessions SET last_seen_at = ? WHERE id_hash = ? AND last_seen_at < ?`), t, key, t); err != nil {
			return AdminSession{}, false, fmt.Errorf("touch admin session: %w", err)
		}
	}
	return AdminSession{CSRF: row.CSRF, Flash: row.Flash}, true, nil
}

// DeleteAdminSession ends the session with this ID, if there is one.
func (s *Store) DeleteAdminSession(ctx context.Context, id string) error {
	if _, err := s.write.ExecContext(ctx, s.write.Rebind(`DELETE FROM admin_sessions WHERE id_hash = ?`), sessionKey(id)); err != nil {
		return fmt.Errorf("delete admin session: %w", err)
	}
	return nil
}

// SetAdminFlash leaves flash (not "") for the next page of the session
// with this ID, replacing one not yet shown. Without such a session it does nothing.
func (s *Store) SetAdminFlash(ctx context.Context, id, flash string) error {
	if _, err := s.write.ExecContext(ctx, s.write.Rebind(`UPDATE admin_sessions SET flash = ? WHERE id_hash = ?`), flash, sessionKey(id)); err != nil {
		return fmt.Errorf("set admin flash: %w", err)
	}
	return nil
}

// PopAdminFlash takes the flash waiting for the session with this ID: it
// returns it and clears it, so that exactly one page shows it, whichever
// replica serves it; "" when there is none (or another request took it).
func (s *Store) PopAdminFlash(ctx context.Context, id string) (string, error) {
	key := sessionKey(id)
	var flash string
	err := s.write.GetContext(ctx, &flash, s.write.Rebind(`SELECT flash FROM admin_sessions WHERE id_hash = ?`), key)
	if errors.Is(err, sql.ErrNoRows) || err == nil && flash == "" {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read admin flash: %w", err)
	}
	// Compare and clear: of two requests that read it, one clears it.
	// (UPDATE … RETURNING would return the cleared value, not the old one.)
	res, err := s.write.ExecContext(ctx, s.write.Rebind(`UPDATE admin_sessions SET flash = '' WHERE id_hash = ? AND flash = ?`), key, flash)
	if err != nil {
		return "", fmt.Errorf("clear admin flash: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return "", fmt.Errorf("clear admin flash: %w", err)
	}
	if n == 0 {
		return "", nil // another request took it first
	}
	return flash, nil
}

// PruneAdminSessions deletes the sessions that expired under lim at now,
// and the login failures that are as good as none (see LoginLimit).
func (s *Store) PruneAdminSessions(ctx context.Context, now time.Time, lim SessionLimits) error {
	t := now.UnixNano()
	if _, err := s.write.ExecContext(ctx, s.write.Rebind(`DELETE FROM admin_sessions WHERE last_seen_at < ? OR created_at < ?`),
		t-int64(lim.Idle), t-int64(lim.Max)); err != nil {
		return fmt.Errorf("prune admin sessions: %w", err)
	}
	if _, err := s.write.ExecContext(ctx, s.write.Rebind(`DELETE FROM admin_login_failures WHERE due_at <= ?`), t); err != nil {
		return fmt.Errorf("prune admin login failures: %w", err)
	}
	return nil
}

// LoginLimit is the login lockout: a token bucket per client of Burst wrong
// passwords, one coming back every Every. Only wrong passwords take a token;
// a client with none left is locked out until one comes back, and a right
// password forgets its wrong ones. This is golang.org/x/time/rate's Limiter
// (burst Burst, rate 1/Every) kept in the database as the time the bucket is
// next full, which any replica can read and advance in one statement.
type LoginLimit struct {
	Every time.Duration
	Burst int
}

// span is how far past now a bucket may be next full while it still has a token.
func (l LoginLimit) span() int64 { return int64(l.Burst-1) * int64(l.Every) }

// wait is how long a client whose bucket is next full at due must wait at now for a token, or 0.
func (l LoginLimit) wait(due int64, now time.Time) time.Duration {
	return max(0, time.Duration(due-now.UnixNano()-l.span()))
}

// LoginLockout returns how long the client must wait before its password
// is checked (0: not locked out), and whether it has wrong passwords on
// record (so that a right one should call LoginSucceeded).
func (s *Store) LoginLockout(ctx context.Context, client string, now time.Time, lim LoginLimit) (wait time.Duration, failed bool, err error) {
	var due int64
	err = s.read.GetContext(ctx, &due, s.read.Rebind(`SELECT due_at FROM admin_login_failures WHERE client = ?`), client)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read login failures: %w", err)
	}
	return lim.wait(due, now), due > now.UnixNano(), nil
}

// LoginFailed records a wrong password from the client at now, which takes
// a token if it has one (a locked-out client's does not count), and
// returns the lockout it is under after it (0: none yet). It also deletes
// a few records that are as good as none, so they do not pile up.
func (s *Store) LoginFailed(ctx context.Context, client string, now time.Time, lim LoginLimit) (time.Duration, error) {
	t, every := now.UnixNano(), int64(lim.Every)
	var due int64
	err := s.write.GetContext(ctx, &due, s.write.Rebind(`INSERT INTO admin_login_failures (client, due_at) VALUES (?, ?)
		ON CONFLICT (client) DO UPDATE SET due_at = CASE
			WHEN admin_login_failures.due_at - ? > ? THEN admin_login_failures.due_at
			WHEN admin_login_failures.due_at > ? THEN admin_login_failures.due_at + ?
			ELSE ? END
		RETURNING due_at`), client, t+every, t, lim.span(), t, every, t+every)
	if err != nil {
		return 0, fmt.Errorf("record login failure: %w", err)
	}
	if _, err := s.write.ExecContext(ctx, s.write.Rebind(`DELETE FROM admin_login_failures WHERE client IN
		(SELECT client FROM admin_login_failures WHERE due_at <= ? ORDER BY due_at LIMIT 8)`), t); err != nil {
		return 0, fmt.Errorf("prune login failures: %w", err)
	}
	return lim.wait(due, now), nil
}

// LoginSucceeded forgets the client's wrong passwords.
func (s *Store) LoginSucceeded(ctx context.Context, client string) error {
	if _, err := s.write.ExecContext(ctx, s.write.Rebind(`DELETE FROM admin_login_failures WHERE client = ?`), client); err != nil {
		return fmt.Errorf("forget login failures: %w", err)
	}
	return nil
}
