package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// TestTraitsKeepLargeIntegers: an integer beyond 2^53 keeps every digit
// when traits are stored, merged with a later message's and read back.
func TestTraitsKeepLargeIntegers(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testDSN(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2025, 11, 23, 12, 0, 0, 0, time.UTC)
	const user = "0f8fad5b-d9cb-469f-a165-70867728950e"
	msgs := []mapping.Message{
		{Source: mapping.SourceSegmentAPI, ID: "m1", Type: "identify", UserID: user, Timestamp: t0, ReceivedAt: t0,
			Traits: map[string]any{"snowflake": json.Number("1593412345678901234")}},
		{Source: mapping.SourceSegmentAPI, ID: "m2", Type: "identify", UserID: user, Timestamp: t0.Add(time.Second), ReceivedAt: t0,
			Traits: map[string]any{"big": json.Number("1234567890123456789012")}},
	}
	for _, m := range msgs { // one at a time: the second merges into what the first stored
		if _, err := s.Submit(ctx, []mapping.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.ProfileOf(ctx, mapping.Identifier{Kind: mapping.KindUserID, Value: user})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(p.Traits)
	if want := `{"big":1234567890123456789012,"snowflake":1593412345678901234}`; string(b) != want {
		t.Errorf("got traits %s, want %s", b, want)
	}
}
