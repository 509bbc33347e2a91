package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/segment"
)

func TestForwardingPolicy(t *testing.T) {
	derived := forwarding{toSegment: true, toJimo: true, jimoTrack: true, relay: true, mode: jimo.ModeDerived, tokenSecret: []byte("k"),
		blocklist: mapping.NewBlocklist([]string{"placeholder"})}
	shared := derived
	shared.mode = jimo.ModeShared
	noTrack := shared
	noTrack.jimoTrack = false
	noRelay := shared
	noRelay.relay = false
	ts := time.Date(2025, 11, 23, 12, 0, 0, 0, time.UTC)
	segmentMsg := func(source mapping.Source, typ, user string) *mapping.Message {
		m := &mapping.Message{Source: source, ID: "m-" + typ + "-" + user, Type: typ, UserID: user, AnonymousID: "anon-1", Timestamp: ts}
		if typ == "track" {
			m.Event = "Report Exported"
		}
		m.Raw, _ = json.Marshal(map[string]any{"type": typ, "userId": user, "anonymousId": "anon-1", "messageId": m.ID, "event": m.Event,
			"timestamp": ts.Format(time.RFC3339)})
		return m
	}
	identify := func(user string) *mapping.Message { return segmentMsg(mapping.SourceSegmentWebhook, "identify", user) }
	track := func(user string) *mapping.Message { return segmentMsg(mapping.SourceSegmentWebhook, "track", user) }
	session := &mapping.Message{Source: mapping.SourceJimoSession, ID: "s-1", Type: "session", UserID: "u-5b2e9d7c41a8f0e1", AnonymousID: "anon-1", Timestamp: ts}
	hook := &mapping.Message{Source: mapping.SourceJimoWebhook, ID: "h-1", Type: "tour.completed", Event: "tour.completed",
		JimoTokenOrUserID: "u-5b2e9d7c41a8f0e1", Timestamp: ts, Raw: json.RawMessage(`{"event":"tour.completed"}`)}
	with := func(m *mapping.Message, edit func(m *mapping.Message)) *mapping.Message {
		c := *m
		edit(&c)
		return &c
	}
	const good = "u-5b2e9d7c41a8f0e1"
	tests := []struct {
		name     string
		policy   forwarding
		msg      *mapping.Message
		wantJobs []string // destination/kind of each job, in order
	}{
		{"identify to Jimo", shared, identify(good), []string{"jimo/identify"}},
		{"track to Jimo", shared, track(good), []string{"jimo/track"}},
		{"track not forwarded to Jimo unless asked", noTrack, track(good), nil},
		{"echo of the bridge's own message", shared, with(identify(good), func(m *mapping.Message) { m.Forwarded = true }), nil},
		{"guessable user ID in shared mode: no identify", shared, identify("12345"), nil},
		{"guessable user ID in shared mode: no track either", shared, track("12345"), nil},
		{"guessable user ID with a warning already set: no track", shared, with(track("u_7f3a9c2b51d4"), func(m *mapping.Message) { m.UserIDWarning = "short" }), nil},
		{"guessable user ID in derived mode is fine", derived, identify("12345"), []string{"jimo/identify"}},
		{"guessable user ID in derived mode, track", derived, track("12345"), []string{"jimo/track"}},
		{"blocked user ID in derived mode", derived, identify("undefined"), nil},
		{"configured blocked value", derived, track("placeholder"), nil},
		{"rejected message", shared, with(identify(good), func(m *mapping.Message) { m.Rejected = "x" }), nil},
		{"impersonated: not to Jimo", shared, with(track(good), func(m *mapping.Message) { m.Impersonating = true }), nil},
		{"relayed from the Tracking API", noTrack, segmentMsg(mapping.SourceSegmentAPI, "track", good), []string{"segment/relay"}},
		{"guessable: relayed to Segment, withheld from Jimo", shared, segmentMsg(mapping.SourceSegmentAPI, "identify", "12345"), []string{"segment/relay"}},
		{"no relay unless asked", noRelay, segmentMsg(mapping.SourceSegmentAPI, "page", good), nil},
		{"session to Segment, never back to Jimo", shared, session, []string{"segment/identify"}},
		{"Jimo webhook to Segment", shared, hook, []string{"segment/track"}},
		{"session with a blocked token", shared, with(session, func(m *mapping.Message) { m.UserID = "undefined" }), nil},
		{"nothing to Segment without a write key", forwarding{toJimo: true, mode: jimo.ModeShared}, session, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := *tt.msg
			m.Jobs = nil
			tt.policy.attach(&m)
			var got []string
			for _, j := range m.Jobs {
				got = append(got, j.Destination+"/"+kindOf(t, m, j))
			}
			if !slices.Equal(got, tt.wantJobs) {
				t.Errorf("got jobs %v, want %v", got, tt.wantJobs)
			}
		})
	}
}

// kindOf reads the kind of job j, caused by m, from its payload: a Segment
// job for a Tracking API message is a relay.
func kindOf(t *testing.T, m mapping.Message, j mapping.Job) string {
	var p struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		t.Fatalf("job payload %s: %v", j.Payload, err)
	}
	if j.Destination == segment.Destination && m.Source == mapping.SourceSegmentAPI {
		return kindRelay
	}
	return p.Type
}

// TestForwardingWarnsWhereItWithholds: a Segment message whose user ID is
// too guessable for Jimo carries the reason (the store shows it on the
// identifier), for identifies always and for tracks when they would go to Jimo.
func TestForwardingWarnsWhereItWithholds(t *testing.T) {
	policy := forwarding{toJimo: true, jimoTrack: true, mode: jimo.ModeShared}
	for _, typ := range []string{"identify", "track"} {
		m := mapping.Message{Source: mapping.SourceSegmentAPI, ID: "m-" + typ, Type: typ, UserID: "12345", Event: "E"}
		policy.attach(&m)
		if !strings.Contains(m.UserIDWarning, "digits") || len(m.Jobs) != 0 {
			t.Errorf("%s: got warning %q and %d jobs, want the reason and none", typ, m.UserIDWarning, len(m.Jobs))
		}
	}
	policy.jimoTrack = false
	m := mapping.Message{Source: mapping.SourceSegmentAPI, ID: "m-t", Type: "track", UserID: "12345", Event: "E"}
	if policy.attach(&m); m.UserIDWarning != "" {
		t.Errorf("track not forwarded to Jimo anyway: got warning %q, want none", m.UserIDWarning)
	}
}
