package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// Payloads older than the retention period are emptied in batches, with
// ingestion committing between them; the rows, identifiers and links stay,
// and History says when each payload expired.
func TestExpireMessages(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	const keep = 90 * 24 * time.Hour
	var msgs []mapping.Message
	for i := range 250 {
		m := identify(fmt.Sprintf("old-%d", i), fmt.Sprintf("user-%d", i%10), fmt.Sprintf("anon-%d", i), time.Duration(i)*time.Second)
		m.Raw = []byte(`{"type":"identify","traits":{"email":"old@example.com"}}`)
		msgs = append(msgs, m)
	}
	submit(t, s, msgs...)
	recent := identify("recent", "user-0", "anon-recent", 80*24*time.Hour)
	recent.Raw = []byte(`{"type":"identify","traits":{"plan":"pro"}}`)
	submit(t, s, recent)

	clock.Advance(keep + time.Hour) // the 250 are older than keep; "recent" is not
	batches := 0
	n, err := s.expireMessages(context.Background(), keep, 100, func() {
		batches++
		submit(t, s, identify(fmt.Sprintf("during-%d", batches), "user-during", "", keep+time.Hour))
	})
	if err != nil || n != 250 {
		t.Fatalf("expire: got %d, %v; want 250", n, err)
	}
	if batches < 2 {
		t.Errorf("got %d pauses between batches, want at least 2 (250 messages, 100 a batch)", batches)
	}
	var left struct {
		Rows    int `db:"rows"`
		Raw     int `db:"raw"`
		Expired int `db:"expired"`
	}
	if err := s.read.Get(&left, `SELECT COUNT(*) AS rows, COUNT(CASE WHEN raw <> '' THEN 1 END) AS raw, COUNT(CASE WHEN raw_expired_at <> 0 THEN 1 END) AS expired FROM messages`); err != nil {
		t.Fatal(err)
	}
	if want := 250 + 1 + batches; left.Rows != want || left.Expired != 250 || left.Raw != 1+batches {
		t.Errorf("messages: got %+v, want %d rows, 250 expired, the others with their payload", left, want)
	}
	if again, err := s.ExpireMessages(context.Background(), keep); err != nil || again != 0 {
		t.Errorf("second pass: got %d, %v; want nothing left to expire", again, err)
	}

	p, err := s.ProfileOf(context.Background(), mapping.Identifier{Kind: mapping.KindUserID, Value: "user-0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Identifiers) != 27 { // user-0, 25 old anonymous IDs, anon-recent
		t.Errorf("profile of user-0: got %d identifiers, want 27 (the graph stays)", len(p.Identifiers))
	}
	h, err := s.History(context.Background(), p.ID)
	if err != nil {
		t.Fatal(err)
	}
	var sawOld, sawRecent bool
	for _, m := range h.Messages {
		switch m.MessageID {
		case "recent":
			sawRecent = true
			if m.RawExpiredAt != nil || m.Raw == "" {
				t.Errorf("recent message: got raw %q expired %v, want its payload", m.Raw, m.RawExpiredAt)
			}
		default:
			sawOld = true
			if m.RawExpiredAt == nil || !m.RawExpiredAt.Equal(clock.Now()) || m.Raw != "" {
				t.Errorf("old message %s: got raw %q expired %v, want no payload, expired at %v", m.MessageID, m.Raw, m.RawExpiredAt, clock.Now())
			}
		}
	}
	if !sawOld || !sawRecent {
		t.Errorf("history lacks old (%v) or recent (%v) messages", sawOld, sawRecent)
	}
	if len(h.Links) == 0 {
		t.Errorf("history lost its links")
	}
}

// With no retention (0), nothing expires.
func TestExpireMessagesKeepForever(t *testing.T) {
	clock := &testClock{now: t0}
	s := openTestStore(t, Options{Now: clock.Now})
	submit(t, s, identify("m1", "user-a", "", 0))
	clock.Advance(10 * 365 * 24 * time.Hour)
	if n, err := s.ExpireMessages(context.Background(), 0); err != nil || n != 0 {
		t.Errorf("got %d, %v; want nothing expired", n, err)
	}
}
