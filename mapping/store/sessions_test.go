package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"pgregory.net/rapid"
)

// openReplicas opens two Store values on one fresh SQLite file, as two
// replicas on one database: what one writes, the other must see.
func openReplicas(t *testing.T) (*Store, *Store) {
	t.Helper()
	path := testDSN(t)
	var stores [2]*Store
	for i := range stores {
		s, err := Open(context.Background(), path, Options{})
		if err != nil {
			t.Fatalf("open store %d: %v", i+1, err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	return stores[0], stores[1]
}

var testLimits = SessionLimits{Idle: 2 * time.Hour, Max: 12 * time.Hour}

// mustSession reports whether the session id is live on s at now.
func mustSession(t *testing.T, s *Store, id string, now time.Time, lim SessionLimits) (AdminSession, bool) {
	t.Helper()
	got, ok, err := s.AdminSession(context.Background(), id, now, lim)
	if err != nil {
		t.Fatalf("AdminSession: %v", err)
	}
	return got, ok
}

func TestAdminSessionExpiry(t *testing.T) {
	tests := []struct {
		name string
		uses []time.Duration // requests after the login, each must find the session
		at   time.Duration   // the request checked last
		want bool
	}{
		{"fresh", nil, time.Second, true},
		{"idle just under the bound", nil, 2 * time.Hour, true},
		{"idle past the bound", nil, 2*time.Hour + time.Nanosecond, false},
		{"kept alive by use", []time.Duration{time.Hour, 2*time.Hour + 30*time.Minute}, 4 * time.Hour, true},
		{"idle after the last use", []time.Duration{time.Hour}, 3*time.Hour + time.Second, false},
		{"in use, past the maximum", []time.Duration{2 * time.Hour, 4 * time.Hour, 6 * time.Hour, 8 * time.Hour, 10 * time.Hour, 11 * time.Hour}, 12*time.Hour + time.Second, false},
		// The last use is recorded at most once per touchEvery: a use 30 s
		// after the previous one is not, so idle counts from that one.
		{"a use within a minute of the last is not recorded", []time.Duration{time.Hour, time.Hour + 30*time.Second}, 3*time.Hour + time.Second, false},
		{"a use a minute after the last is", []time.Duration{time.Hour, time.Hour + time.Minute}, 3*time.Hour + time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := openReplicas(t)
			ctx := context.Background()
			if err := a.CreateAdminSession(ctx, "id-1", "csrf-1", t0, testLimits); err != nil {
				t.Fatal(err)
			}
			for i, use := range tt.uses {
				// Alternate the replicas: a use on one counts on the other.
				s := []*Store{a, b}[i%2]
				if _, ok := mustSession(t, s, "id-1", t0.Add(use), testLimits); !ok {
					t.Fatalf("use at +%v: got no session, want it live", use)
				}
			}
			got, ok := mustSession(t, b, "id-1", t0.Add(tt.at), testLimits)
			if ok != tt.want {
				t.Fatalf("at +%v: got live %v, want %v", tt.at, ok, tt.want)
			}
			if ok && got.CSRF != "csrf-1" {
				t.Errorf("got CSRF %q, want csrf-1", got.CSRF)
			}
			if !ok {
				// An expired session is gone, not only refused: going back in time does not revive it.
				if _, ok := mustSession(t, a, "id-1", t0, testLimits); ok {
					t.Errorf("expired session: got it live again at the login time, want it deleted")
				}
			}
		})
	}
}

func TestAdminSessionTouchShortIdle(t *testing.T) {
	// With an idle bound of a minute, uses every 50 s keep the session:
	// the last use is recorded at a 60th of Idle, not once a minute.
	s := openTestStore(t, Options{})
	lim := SessionLimits{Idle: time.Minute, Max: time.Hour}
	if err := s.CreateAdminSession(context.Background(), "id-1", "c", t0, lim); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		if _, ok := mustSession(t, s, "id-1", t0.Add(time.Duration(i)*50*time.Second), lim); !ok {
			t.Fatalf("use %d, 50 s after the last: got no session, want it live", i)
		}
	}
}

func TestAdminSessionStoresOnlyTheHash(t *testing.T) {
	s := openTestStore(t, Options{})
	const id = "the-random-session-id"
	if err := s.CreateAdminSession(context.Background(), id, "csrf-x", t0, testLimits); err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		IDHash string `db:"id_hash"`
		CSRF   string `db:"csrf"`
		Flash  string `db:"flash"`
	}
	if err := s.read.Select(&rows, `SELECT id_hash, csrf, flash FROM admin_sessions`); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(id))
	if len(rows) != 1 || rows[0].IDHash != hex.EncodeToString(sum[:]) || rows[0].CSRF != "csrf-x" || rows[0].Flash != "" {
		t.Fatalf("got rows %+v, want one keyed by the SHA-256 of the ID with csrf-x and no flash", rows)
	}
	if _, ok := mustSession(t, s, hex.EncodeToString(sum[:]), t0, testLimits); ok {
		t.Errorf("the stored hash opened a session, want only the ID to")
	}
	if _, ok := mustSession(t, s, "", t0, testLimits); ok {
		t.Errorf("the empty ID opened a session")
	}
}

func TestAdminSessionDelete(t *testing.T) {
	a, b := openReplicas(t)
	ctx := context.Background()
	for _, id := range []string{"id-1", "id-2"} {
		if err := a.CreateAdminSession(ctx, id, "c", t0, testLimits); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.DeleteAdminSession(ctx, "id-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := mustSession(t, a, "id-1", t0, testLimits); ok {
		t.Errorf("deleted through the other store: got the session live, want it gone")
	}
	if _, ok := mustSession(t, a, "id-2", t0, testLimits); !ok {
		t.Errorf("another session: got it gone, want it live")
	}
}

func TestAdminFlashShownOnce(t *testing.T) {
	a, b := openReplicas(t)
	ctx := context.Background()
	if err := a.CreateAdminSession(ctx, "id-1", "c", t0, testLimits); err != nil {
		t.Fatal(err)
	}
	if got, err := b.PopAdminFlash(ctx, "id-1"); err != nil || got != "" {
		t.Fatalf("pop before any flash: got %q, %v, want none", got, err)
	}
	if err := a.SetAdminFlash(ctx, "id-1", `{"Text":"first"}`); err != nil {
		t.Fatal(err)
	}
	if err := a.SetAdminFlash(ctx, "id-1", `{"Text":"second"}`); err != nil {
		t.Fatal(err)
	}
	if got, _ := mustSession(t, b, "id-1", t0, testLimits); got.Flash != `{"Text":"second"}` {
		t.Errorf("session as read: got flash %q, want the second", got.Flash)
	}
	if got, err := b.PopAdminFlash(ctx, "id-1"); err != nil || got != `{"Text":"second"}` {
		t.Errorf("first pop, on the other store: got %q, %v, want the second flash", got, err)
	}
	for i, s := range []*Store{a, b} {
		if got, err := s.PopAdminFlash(ctx, "id-1"); err != nil || got != "" {
			t.Errorf("pop again on store %d: got %q, %v, want none: a flash is shown once", i+1, got, err)
		}
	}
	if got, _ := mustSession(t, a, "id-1", t0, testLimits); got.Flash != "" {
		t.Errorf("session after the pop: got flash %q, want none", got.Flash)
	}
	// A flash for a session that does not exist goes nowhere.
	if err := a.SetAdminFlash(ctx, "no-such-id", `{"Text":"x"}`); err != nil {
		t.Fatal(err)
	}
	if got, err := a.PopAdminFlash(ctx, "no-such-id"); err != nil || got != "" {
		t.Errorf("pop without a session: got %q, %v, want none", got, err)
	}
}

func countRows(t *testing.T, s *Store, table string) int {
	t.Helper()
	var n int
	if err := s.read.Get(&n, `SELECT COUNT(*) FROM `+table); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAdminSessionsBounded(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	for i := range MaxAdminSessions {
		if err := s.CreateAdminSession(ctx, fmt.Sprintf("id-%d", i), "c", t0.Add(time.Duration(i)*time.Millisecond), testLimits); err != nil {
			t.Fatal(err)
		}
	}
	// id-0 is used again, so id-1 is the least recently used.
	now := t0.Add(time.Hour)
	if _, ok := mustSession(t, s, "id-0", now, testLimits); !ok {
		t.Fatal("id-0: got no session, want it live")
	}
	if err := s.CreateAdminSession(ctx, "id-new", "c", now, testLimits); err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, s, "admin_sessions"); got != MaxAdminSessions {
		t.Errorf("got %d sessions, want %d", got, MaxAdminSessions)
	}
	for id, want := range map[string]bool{"id-0": true, "id-1": false, "id-2": true, "id-new": true} {
		if _, ok := mustSession(t, s, id, now, testLimits); ok != want {
			t.Errorf("%s: got live %v, want %v", id, ok, want)
		}
	}
}

func TestCreateAdminSessionPrunes(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	lim := LoginLimit{Every: 30 * time.Second, Burst: 5}
	for _, id := range []string{"old-1", "old-2"} {
		if err := s.CreateAdminSession(ctx, id, "c", t0, testLimits); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.LoginFailed(ctx, "192.0.2.1", t0, lim); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(2*time.Hour + time.Second)
	if err := s.CreateAdminSession(ctx, "new", "c", now, testLimits); err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, s, "admin_sessions"); got != 1 {
		t.Errorf("got %d sessions, want 1: the expired ones pruned", got)
	}
	if got := countRows(t, s, "admin_login_failures"); got != 0 {
		t.Errorf("got %d login failure records, want 0: a full bucket pruned", got)
	}
}

func TestLoginLockoutAcrossStores(t *testing.T) {
	a, b := openReplicas(t)
	ctx := context.Background()
	lim := LoginLimit{Every: 30 * time.Second, Burst: 5}
	const ip = "198.51.100.7"
	lockout := func(s *Store, now time.Time) (time.Duration, bool) {
		t.Helper()
		wait, failed, err := s.LoginLockout(ctx, ip, now, lim)
		if err != nil {
			t.Fatal(err)
		}
		return wait, failed
	}
	fail := func(s *Store, now time.Time) time.Duration {
		t.Helper()
		wait, err := s.LoginFailed(ctx, ip, now, lim)
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	if wait, failed := lockout(a, t0); wait != 0 || failed {
		t.Fatalf("before any failure: got %v, %v, want 0, false", wait, failed)
	}
	// Five wrong passwords, alternating replicas: the fifth locks out on both.
	for i := 1; i < 5; i++ {
		if wait := fail([]*Store{a, b}[i%2], t0); wait != 0 {
			t.Fatalf("failure %d: got lockout %v, want none", i, wait)
		}
	}
	if wait := fail(a, t0); wait != 30*time.Second {
		t.Fatalf("failure 5: got lockout %v, want 30s", wait)
	}
	for i, s := range []*Store{a, b} {
		if wait, failed := lockout(s, t0.Add(time.Second)); wait != 29*time.Second || !failed {
			t.Errorf("store %d a second later: got %v, %v, want 29s, true", i+1, wait, failed)
		}
	}
	// A wrong password while locked out takes nothing and adds nothing.
	if wait := fail(b, t0.Add(10*time.Second)); wait != 20*time.Second {
		t.Errorf("failure while locked: got lockout %v, want 20s", wait)
	}
	// One token back after 30 s; a wrong password spends it.
	if wait := fail(b, t0.Add(31*time.Second)); wait != 29*time.Second {
		t.Errorf("failure after the wait: got lockout %v, want 29s", wait)
	}
	// A right password on one replica forgets them on the other.
	if err := a.LoginSucceeded(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if wait, failed := lockout(b, t0.Add(32*time.Second)); wait != 0 || failed {
		t.Errorf("after a success: got %v, %v, want 0, false", wait, failed)
	}
	// Another client is counted apart.
	if wait, failed, err := b.LoginLockout(ctx, "198.51.100.8", t0, lim); err != nil || wait != 0 || failed {
		t.Errorf("another client: got %v, %v, %v, want 0, false, nil", wait, failed, err)
	}
}

// TestLoginLockoutIsTheLimiter checks the stored lockout against
// golang.org/x/time/rate's Limiter, which kept it in memory before: for any
// sequence of wrong and right passwords, the same clients are locked out
// for the same time.
func TestLoginLockoutIsTheLimiter(t *testing.T) {
	// A period off whole seconds keeps request times (whole seconds) off
	// the instants a token comes back, where the Limiter's float arithmetic
	// and the stored integer nanoseconds could round to different sides.
	every := 30*time.Second + time.Millisecond
	lim := LoginLimit{Every: every, Burst: 5}
	a, b := openReplicas(t)
	ctx := context.Background()
	round := 0
	rapid.Check(t, func(rt *rapid.T) {
		round++
		ip := fmt.Sprintf("client-%d", round) // a fresh client per run
		limiter := rate.NewLimiter(rate.Every(every), lim.Burst)
		limiterWait := func(now time.Time) time.Duration {
			tokens := limiter.TokensAt(now)
			if tokens >= 1 {
				return 0
			}
			return time.Duration((1 - tokens) / float64(limiter.Limit()) * float64(time.Second))
		}
		now := t0
		n := rapid.IntRange(1, 40).Draw(rt, "requests")
		for i := range n {
			now = now.Add(time.Duration(rapid.IntRange(0, 90).Draw(rt, "seconds")) * time.Second)
			s := []*Store{a, b}[rapid.IntRange(0, 1).Draw(rt, "store")]
			right := rapid.IntRange(0, 5).Draw(rt, "right") == 0
			want := limiterWait(now)
			got, failed, err := s.LoginLockout(ctx, ip, now, lim)
			if err != nil {
				rt.Fatal(err)
			}
			if d := got - want; d < -time.Microsecond || d > time.Microsecond {
				rt.Fatalf("request %d at +%v: got lockout %v, want %v", i, now.Sub(t0), got, want)
			}
			// A locked-out client is refused without its password being
			// checked, unless a request that checked before it locked
			// was still going: its wrong password must take nothing.
			if got > 0 && (right || !rapid.Bool().Draw(rt, "racing")) {
				continue
			}
			if right {
				if failed {
					if err := s.LoginSucceeded(ctx, ip); err != nil {
						rt.Fatal(err)
					}
				}
				limiter = rate.NewLimiter(rate.Every(every), lim.Burst)
				continue
			}
			limiter.AllowN(now, 1)
			want = limiterWait(now)
			if got, err = s.LoginFailed(ctx, ip, now, lim); err != nil {
				rt.Fatal(err)
			}
			if d := got - want; d < -time.Microsecond || d > time.Microsecond {
				rt.Fatalf("wrong password %d at +%v: got lockout %v, want %v", i, now.Sub(t0), got, want)
			}
		}
	})
}
