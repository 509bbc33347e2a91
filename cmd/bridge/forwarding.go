package main

import (
	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/segment"
)

// forwarding is the policy that decides which outbox jobs a message causes.
// allow is the one place that decides: every job the bridge enqueues, to
// Jimo or to Segment, of every kind, is asked for there; the builders in
// segment and jimo only translate.
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

// The kinds of job a message can cause.
const (
	kindIdentify = "identify" // Segment identify → Jimo identify; Jimo session → Segment identify
	kindTrack    = "track"    // Segment track → Jimo track; Jimo webhook event → Segment track
	kindRelay    = "relay"    // Tracking API event → Segment, as received
)

// jobKind is one job a message may cause: its destination, its kind and its builder.
type jobKind struct {
	destination, kind string
	build             func(f forwarding, m mapping.Message) (mapping.Job, bool)
}

// jobKinds lists every job the bridge can enqueue.
var jobKinds = []jobKind{
	{jimo.Destination, kindIdentify, func(f forwarding, m mapping.Message) (mapping.Job, bool) {
		return jimo.IdentifyJob(m, f.mode, f.tokenSecret)
	}},
	{jimo.Destination, kindTrack, func(f forwarding, m mapping.Message) (mapping.Job, bool) {
		return jimo.TrackJob(m, f.mode, f.tokenSecret)
	}},
	{segment.Destination, kindIdentify, func(_ forwarding, m mapping.Message) (mapping.Job, bool) { return segment.IdentifyJob(m) }},
	{segment.Destination, kindTrack, func(_ forwarding, m mapping.Message) (mapping.Job, bool) {
		return segment.TrackJob(m, jimo.TrackName(m.Event), jimo.WebhookProperties(m.Raw))
	}},
	{segment.Destination, kindRelay, func(_ forwarding, m mapping.Message) (mapping.Job, bool) { return segment.RelayJob(m.Raw) }},
}

// segmentJobs attaches the jobs of a message received from Segment.
func (f forwarding) segmentJobs(m *mapping.Message) { f.attach(m) }

// jimoJobs attaches the jobs of a message received from Jimo or the page.
func (f forwarding) jimoJobs(m *mapping.Message) { f.attach(m) }

// attach records, in shared token mode, why a Segment message's user ID is
// too guessable to hand to Jimo (operators see it on the identifier), then
// attaches every job allow permits.
func (f forwarding) attach(m *mapping.Message) {
	if f.mode == jimo.ModeShared && fromSegment(m) && m.UserID != "" && m.UserIDWarning == "" && !m.Forwarded && m.Rejected == "" && f.usable(m) &&
		(m.Type == "identify" || f.toJimo && f.jimoTrack && m.Type == "track") {
		m.UserIDWarning = jimo.Guessable(m.UserID, f.blocklist)
	}
	for _, k := range jobKinds {
		if !f.allow(m, k.destination, k.kind) {
			continue
		}
		if j, ok := k.build(f, *m); ok {
			m.Jobs = append(m.Jobs, j)
		}
	}
}

// allow is the forwarding policy: whether message m may cause a job of kind
// for destination. Nothing is forwarded that is rejected, that the bridge
// sent itself (no loops), that names a placeholder user ID or token, or
// that goes back where it came from.
//
//   - To Jimo (an API key and endpoint configured), from Segment only, never
//     impersonated: an identify; a track when BRIDGE_JIMO_FORWARD_TRACK is
//     on. In shared token mode no kind is sent for a user ID too guessable
//     to be a Jimo token: the identify withheld, its tracks are too.
//   - To Segment (a forward write key configured): a Jimo session report as
//     an identify, a Jimo webhook event as a track, and, with
//     BRIDGE_SEGMENT_RELAY, every Tracking API event as received.
func (f forwarding) allow(m *mapping.Message, destination, kind string) bool {
	if m.Rejected != "" || m.Forwarded || !f.usable(m) {
		return false
	}
	switch destination {
	case jimo.Destination:
		if !f.toJimo || !fromSegment(m) || m.Impersonating {
			return false
		}
		switch {
		case kind == kindIdentify && m.Type == "identify":
		case kind == kindTrack && m.Type == "track" && f.jimoTrack:
		default:
			return false
		}
		return f.mode != jimo.ModeShared || f.guessable(m) == ""
	case segment.Destination:
		if !f.toSegment {
			return false
		}
		switch kind {
		case kindIdentify:
			return m.Source == mapping.SourceJimoSession
		case kindTrack:
			return m.Source == mapping.SourceJimoWebhook
		case kindRelay:
			return f.relay && m.Source == mapping.SourceSegmentAPI
		}
	}
	return false
}

// guessable returns why m's user ID is too guessable to be a Jimo token, or "".
func (f forwarding) guessable(m *mapping.Message) string {
	if m.UserIDWarning != "" {
		return m.UserIDWarning
	}
	return jimo.Guessable(m.UserID, f.blocklist)
}

// fromSegment reports whether m came from Segment (its Tracking API or webhook).
func fromSegment(m *mapping.Message) bool {
	return m.Source == mapping.SourceSegmentAPI || m.Source == mapping.SourceSegmentWebhook
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
