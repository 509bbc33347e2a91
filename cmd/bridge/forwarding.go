package main

import (
	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/segment"
)

// forwarding is the policy that decides which outbox jobs a message causes.
// The builders in segment and jimo refuse what must never be sent (echoes,
// rejected or impersonated messages, anonymous users for Jimo); this policy
// decides what is sent at all, from the configuration.
type forwarding struct {
	toSegment   bool // a forward write key is configured
	relay       bool // relay Tracking API traffic to Segment as received
	toJimo      bool // a Jimo API key and endpoint are configured
	jimoTrack   bool // forward Segment tracks to Jimo
	mode        jimo.Mode
	tokenSecret []byte
	blocklist   mapping.Blocklist
}

func newForwarding(cfg config, mode jimo.Mode, tokenSecret string) forwarding {
	return forwarding{
		toSegment:   cfg.SegmentForwardWriteKey != "",
		relay:       cfg.SegmentRelay,
		toJimo:      cfg.JimoAPIKey != "" && cfg.JimoEndpoint != "",
		jimoTrack:   cfg.JimoForwardTrack,
		mode:        mode,
		tokenSecret: []byte(tokenSecret),
		blocklist:   mapping.NewBlocklist(cfg.BlockedIDs),
	}
}

// segmentJobs attaches the jobs of a message received from Segment. An event
// the bridge itself sent (Forwarded) is stored but causes nothing: no loops.
func (f forwarding) segmentJobs(m *mapping.Message) {
	if m.Forwarded || m.Rejected != "" || !f.usable(m) {
		return
	}
	// In shared mode the user ID is what Jimo sees as the token: a guessable
	// one is not handed to Jimo, and operators are warned.
	if f.mode == jimo.ModeShared && m.UserID != "" && m.Type == "identify" {
		m.UserIDWarning = jimo.Guessable(m.UserID, f.blocklist)
	}
	if f.toJimo {
		if j, ok := jimo.IdentifyJob(*m, f.mode, f.tokenSecret); ok {
			m.Jobs = append(m.Jobs, j)
		}
		if f.jimoTrack {
			if j, ok := jimo.TrackJob(*m, f.mode, f.tokenSecret); ok {
				m.Jobs = append(m.Jobs, j)
			}
		}
	}
	if f.relay && f.toSegment && m.Source == mapping.SourceSegmentAPI {
		if j, ok := segment.RelayJob(m.Raw); ok {
			m.Jobs = append(m.Jobs, j)
		}
	}
}

// jimoJobs attaches the jobs of a message received from Jimo or the page:
// a session that ties an anonymous ID to a user becomes a Segment identify,
// a Jimo webhook event a Segment track. Nothing goes back to Jimo.
func (f forwarding) jimoJobs(m *mapping.Message) {
	if !f.toSegment || m.Rejected != "" || !f.usable(m) {
		return
	}
	switch m.Source {
	case mapping.SourceJimoSession:
		if j, ok := segment.IdentifyJob(*m); ok {
			m.Jobs = append(m.Jobs, j)
		}
	case mapping.SourceJimoWebhook:
		if j, ok := segment.TrackJob(*m, "", nil); ok {
			m.Jobs = append(m.Jobs, j)
		}
	}
}

// usable reports whether the user ID and token a message names are real
// identifiers: a placeholder ("undefined", "null", a nil UUID, a configured
// blocked value) is never forwarded, in any token mode, or every person
// sending it would become one user downstream.
func (f forwarding) usable(m *mapping.Message) bool {
	for _, v := range []string{m.UserID, m.JimoToken, m.JimoTokenOrUserID} {
		if v == "" {
			continue
		}
		if _, reason := f.blocklist.Check(v); reason != "" {
			return false
		}
	}
	return true
}
