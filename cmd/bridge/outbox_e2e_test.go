package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/bridgeworks/bridge/jimo/jimotest"
)

// TestDeliveryAfterFaults: a transient failure is retried until delivered
// once; a permanent one leaves a dead job with its error, which the
// operator's `bridge outbox` commands list and retry.
func TestDeliveryAfterFaults(t *testing.T) {
	fakeJimo := jimotest.NewServer(t, jimoKey)
	b := startBridge(t, "", "-jimo-api-key", jimoKey, "-jimo-endpoint", fakeJimo.URL)
	identify := func(user string) {
		client := newClient(t, b, nil)
		must(t, client.Enqueue(analytics.Identify{UserId: user, AnonymousId: "anon-" + user}))
		must(t, client.Close())
	}

	fakeJimo.FailWith(500, 2)
	identify("user-flaky-3e8a1c5d7f92")
	reqs, err := fakeJimo.WaitFor(1, deliveryDeadline)
	if err != nil {
		t.Fatal(err)
	}
	if got := fakeJimo.Attempts(); got != 3 {
		t.Errorf("got %d attempts, want 3 (two 500s, then delivered)", got)
	}

	fakeJimo.FailWith(400, 1)
	identify("user-refused-9d2b4f6a8c13")
	outbox := func(args ...string) string {
		var out bytes.Buffer
		if err := run(context.Background(), append([]string{"outbox"}, append(args, "-db", b.DB)...), func(string) string { return "" }, &out); err != nil {
			t.Fatalf("bridge outbox %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	var listing string
	deadline := time.Now().Add(deliveryDeadline)
	for !strings.Contains(listing, "dead") {
		if time.Now().After(deadline) {
			t.Fatalf("no dead job after a 400:\n%s", listing)
		}
		time.Sleep(100 * time.Millisecond)
		listing = outbox("list")
	}
	if !strings.Contains(listing, "permanent") || !strings.Contains(listing, "400") {
		t.Errorf("dead job listing lacks the error:\n%s", listing)
	}
	if got := outbox("retry", "-all"); !strings.Contains(got, "1 job(s)") {
		t.Errorf("retry: got %q, want 1 job", got)
	}
	if reqs, err = fakeJimo.WaitFor(2, deliveryDeadline); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range reqs {
		seen[r.Event.UserID]++
	}
	if fmt.Sprint(seen) != "map[user-flaky-3e8a1c5d7f92:1 user-refused-9d2b4f6a8c13:1]" {
		t.Errorf("deliveries: got %v, want each user exactly once", seen)
	}
	if got := outbox("list"); strings.Contains(got, "dead") {
		t.Errorf("dead jobs left after the retry:\n%s", got)
	}
}
