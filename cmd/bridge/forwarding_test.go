package main

import (
	"testing"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
)

func TestForwardingPolicy(t *testing.T) {
	derived := forwarding{toSegment: true, toJimo: true, mode: jimo.ModeDerived, tokenSecret: []byte("k"), blocklist: mapping.NewBlocklist([]string{"placeholder"})}
	shared := derived
	shared.mode = jimo.ModeShared
	identify := func(user string) *mapping.Message {
		return &mapping.Message{Source: mapping.SourceSegmentAPI, ID: "m-" + user, Type: "identify", UserID: user, AnonymousID: "anon-1"}
	}
	tests := []struct {
		name      string
		policy    forwarding
		msg       *mapping.Message
		forwarded bool
		wantJobs  []string
	}{
		{"identify to Jimo", shared, identify("u-5b2e9d7c41a8f0e1"), false, []string{jimo.Destination}},
		{"echo of the bridge's own message", shared, identify("u-5b2e9d7c41a8f0e1"), true, nil},
		{"guessable user ID in shared mode", shared, identify("12345"), false, nil},
		{"guessable user ID in derived mode is fine", derived, identify("12345"), false, []string{jimo.Destination}},
		{"blocked user ID in derived mode", derived, identify("undefined"), false, nil},
		{"configured blocked value", derived, identify("placeholder"), false, nil},
		{"rejected message", shared, &mapping.Message{Source: mapping.SourceSegmentAPI, ID: "r", Type: "identify", UserID: "u-5b2e9d7c41a8f0e1", Rejected: "x"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.msg.Forwarded = tt.forwarded
			tt.policy.segmentJobs(tt.msg)
			var got []string
			for _, j := range tt.msg.Jobs {
				got = append(got, j.Destination)
			}
			if len(got) != len(tt.wantJobs) || (len(got) > 0 && got[0] != tt.wantJobs[0]) {
				t.Errorf("got jobs %v, want %v", got, tt.wantJobs)
			}
		})
	}
}
