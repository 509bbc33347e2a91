package segment

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// Destination names the outbox destination of jobs sent to Segment's
// Tracking API; the Forwarder delivers them.
const Destination = "segment"

// noJimo keeps Segment from sending a message that came from Jimo back to
// Jimo through its Jimo destinations (classic and Actions).
var noJimo = json.RawMessage(`{"Jimo":false,"Jimo (Actions)":false}`)

// Outgoing is the payload of a Segment job: one Tracking API call to send,
// encoded as JSON. Traits, Properties, Context and Integrations are JSON
// objects (kept encoded, so numbers and keys reach Segment as built); Context
// always holds the marker "bridge":{"forwarded":true}.
type Outgoing struct {
	// Type is identify, track, page, screen, group or alias.
	Type string `json:"type"`
	// MessageID is the outgoing messageId: deterministic, so a resend deduplicates in Segment.
	MessageID   string `json:"messageId"`
	UserID      string `json:"userId,omitempty"`
	AnonymousID string `json:"anonymousId,omitempty"`
	// JimoToken, set only when UserID is empty (derived token mode), is a Jimo
	// token the sender resolves to the user ID at send time; it is never sent
	// to Segment.
	JimoToken    string          `json:"jimoToken,omitempty"`
	Traits       json.RawMessage `json:"traits,omitempty"`
	Event        string          `json:"event,omitempty"`
	Properties   json.RawMessage `json:"properties,omitempty"`
	Name         string          `json:"name,omitempty"`
	GroupID      string          `json:"groupId,omitempty"`
	PreviousID   string          `json:"previousId,omitempty"`
	Timestamp    time.Time       `json:"timestamp"`
	Context      json.RawMessage `json:"context"`
	Integrations json.RawMessage `json:"integrations,omitempty"`
}

// Kinds of job a source message can cause; each kind gives a different
// deterministic message ID.
const (
	kindIdentify = "identify"
	kindTrack    = "track"
)

// JobMessageID returns the deterministic outgoing message ID of the job of
// the given kind ("identify", "track") that the message with sourceID from
// source causes: "bridge-" and the first 32 hex digits of
// sha256(destination|source|sourceID|kind). The same message always gives the
// same ID, so a resend deduplicates downstream.
func JobMessageID(destination string, source mapping.Source, sourceID, kind string) string {
	sum := sha256.Sum256([]byte(destination + "|" + string(source) + "|" + sourceID + "|" + kind))
	return "bridge-" + hex.EncodeToString(sum[:])[:32]
}

// fromSegment reports whether a message came from Segment: forwarding it to
// Segment would echo it.
func fromSegment(m mapping.Message) bool {
	return m.Source == mapping.SourceSegmentAPI || m.Source == mapping.SourceSegmentWebhook
}

// IdentifyJob builds the Segment identify for a Jimo session report (or any
// message not from Segment) that ties a browser's anonymous ID to a user: the
// user ID (or, when the message has none, its Jimo token, else
// JimoTokenOrUserID, resolved at send time), the anonymous ID, and the person's traits (m.Traits, with m.Email as
// "email" when the traits lack one). ok is false, and nothing is to be
// forwarded, when the message came from Segment (no echo), is rejected,
// impersonated, has no ID, no anonymous ID, or neither user ID nor token.
//
// The job's MessageID is JobMessageID(Destination, m.Source, m.ID,
// "identify"), its OrderingKey the user ID (or the token); the message carries
// the bridge marker and integrations that keep Segment from sending it on to Jimo.
func IdentifyJob(m mapping.Message) (mapping.Job, bool) {
	userID, token := jobUser(m)
	anonymousID := strings.TrimSpace(m.AnonymousID)
	if fromSegment(m) || m.Rejected != "" || m.Impersonating || m.ID == "" || anonymousID == "" || userID == "" && token == "" {
		return mapping.Job{}, false
	}
	traits := make(map[string]any, len(m.Traits)+1)
	for k, v := range m.Traits {
		traits[k] = v
	}
	if email := strings.TrimSpace(m.Email); email != "" {
		if _, ok := traits["email"]; !ok {
			traits["email"] = email
		}
	}
	out := Outgoing{
		Type:         "identify",
		MessageID:    JobMessageID(Destination, m.Source, m.ID, kindIdentify),
		UserID:       userID,
		AnonymousID:  anonymousID,
		Timestamp:    eventTime(m),
		Integrations: noJimo,
	}
	if userID == "" {
		out.JimoToken = token
	}
	if len(traits) > 0 {
		b, err := json.Marshal(traits)
		if err != nil {
			return mapping.Job{}, false
		}
		out.Traits = b
	}
	return encodeJob(out, orderingKey(userID, token, anonymousID))
}

// TrackJob builds the Segment track for a Jimo webhook event (or any message
// not from Segment) about a user: event is the Segment event name and
// properties its properties, as the message's own protocol names them (for
// a Jimo webhook, jimo.TrackName and jimo.WebhookProperties). The user is m.UserID,
// else the token m.JimoToken, else m.JimoTokenOrUserID (a Jimo webhook's
// identifyToken in shared mode: a legacy token or the user ID itself); a
// token is resolved to the user ID at send time (ForwarderConfig.ResolveUserID).
// ok is false when the message came from Segment (no echo), is rejected or
// impersonated, has no ID, no event name, or neither user ID nor token.
//
// The job's MessageID is JobMessageID(Destination, m.Source, m.ID, "track"),
// its OrderingKey the user ID (or the token); the message carries the bridge
// marker and integrations that keep Segment from sending it on to Jimo.
func TrackJob(m mapping.Message, event string, properties map[string]any) (mapping.Job, bool) {
	userID, token := jobUser(m)
	if fromSegment(m) || m.Rejected != "" || m.Impersonating || m.ID == "" || event == "" || userID == "" && token == "" {
		return mapping.Job{}, false
	}
	out := Outgoing{
		Type:         "track",
		MessageID:    JobMessageID(Destination, m.Source, m.ID, kindTrack),
		UserID:       userID,
		Event:        event,
		Timestamp:    eventTime(m),
		Integrations: noJimo,
	}
	if userID == "" {
		out.JimoToken = token
	}
	if len(properties) > 0 {
		b, err := json.Marshal(properties)
		if err != nil {
			return mapping.Job{}, false
		}
		out.Properties = b
	}
	return encodeJob(out, orderingKey(userID, token, ""))
}

// jobUser is who a job concerns: the user ID, or else a Jimo token (derived,
// or a shared-mode webhook's identifyToken) that the Forwarder resolves to
// the user ID at send time.
func jobUser(m mapping.Message) (userID, token string) {
	userID, token = strings.TrimSpace(m.UserID), strings.TrimSpace(m.JimoToken)
	if userID == "" && token == "" {
		token = strings.TrimSpace(m.JimoTokenOrUserID)
	}
	return userID, token
}

// RelayJob builds the job that relays one Tracking API event to Segment as
// received: raw is the stored event (mapping.Message.Raw, as
// DecodeTrackingAPI wrote it). Call it only for messages from the Tracking
// API (mapping.SourceSegmentAPI): a webhook delivery came from Segment, and
// relaying it would echo it. The outgoing call keeps the event's type,
// messageId, timestamp, user and anonymous IDs, traits, event, properties,
// name, groupId, previousId, context and integrations; the context gains the
// bridge marker. Fields analytics-go cannot send (originalTimestamp, sentAt,
// receivedAt, channel, category…) are left out; Segment sets its own.
//
// ok is false when raw is not a JSON object, already carries the marker (the
// bridge sent it: no echo), has a type other than identify, track, page,
// screen, group or alias, no messageId or one over 100 bytes, no usable
// timestamp, or lacks what the call needs (a user or anonymous ID; an event
// for track; a groupId for group; userId and previousId for alias).
// OrderingKey is the user ID, else the anonymous ID.
func RelayJob(raw json.RawMessage) (mapping.Job, bool) {
	if !json.Valid(raw) {
		return mapping.Job{}, false
	}
	f, ok := splitObject(raw)
	if !ok {
		return mapping.Job{}, false
	}
	ctx, ok := decodeObject(f["context"])
	if !ok || forwardedContext(ctx) {
		return mapping.Job{}, false
	}
	str := func(name string) string { s, _ := stringValue(f[name]); return s }
	out := Outgoing{
		Type:        str("type"),
		MessageID:   str("messageId"),
		UserID:      str("userId"),
		AnonymousID: str("anonymousId"),
		Event:       str("event"),
		Name:        str("name"),
		GroupID:     str("groupId"),
		PreviousID:  str("previousId"),
	}
	if v, _, ok := idValue(f["userId"]); ok {
		out.UserID = v
	}
	if v, _, ok := idValue(f["anonymousId"]); ok {
		out.AnonymousID = v
	}
	if v, _, ok := idValue(f["previousId"]); ok {
		out.PreviousID = v
	}
	if out.MessageID == "" || len(out.MessageID) > mapping.MaxMessageIDLength {
		return mapping.Job{}, false
	}
	var stamp string
	for _, name := range []string{"timestamp", "originalTimestamp", "receivedAt"} {
		if stamp = str(name); stamp != "" {
			break
		}
	}
	ts, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil {
		return mapping.Job{}, false
	}
	out.Timestamp = ts
	identified := out.UserID != "" || out.AnonymousID != ""
	switch out.Type {
	case "identify", "page", "screen":
		ok = identified
	case "track":
		ok = identified && out.Event != ""
	case "group":
		ok = identified && out.GroupID != ""
	case "alias":
		ok = out.UserID != "" && out.PreviousID != ""
	default:
		ok = false
	}
	if !ok {
		return mapping.Job{}, false
	}
	for name, dst := range map[string]*json.RawMessage{"traits": &out.Traits, "properties": &out.Properties, "integrations": &out.Integrations} {
		if o, ok := decodeObject(f[name]); ok && len(o) > 0 {
			*dst = encodeObject(o)
		}
	}
	out.Context = withMarker(ctx)
	return encodeJob(out, orderingKey(out.UserID, "", out.AnonymousID))
}

// withMarker returns ctx encoded with "bridge":{"forwarded":true} set.
func withMarker(ctx object) json.RawMessage {
	c := make(object, len(ctx)+1)
	for k, v := range ctx {
		c[k] = v
	}
	bridge, ok := decodeObject(c["bridge"])
	if !ok || bridge == nil {
		bridge = object{}
	}
	bridge["forwarded"] = json.RawMessage("true")
	c["bridge"] = encodeObject(bridge)
	return encodeObject(c)
}

// encodeJob encodes out as the payload of a Segment job; the marker is added to
// its context when missing.
func encodeJob(out Outgoing, key string) (mapping.Job, bool) {
	if out.Context == nil {
		out.Context = json.RawMessage(`{"bridge":{"forwarded":true}}`)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return mapping.Job{}, false
	}
	return mapping.Job{Destination: Destination, OrderingKey: key, MessageID: out.MessageID, Payload: b}, true
}

// orderingKey is the first of the user ID, the token and the anonymous ID that is set.
func orderingKey(ids ...string) string {
	for _, id := range ids {
		if id != "" {
			return id
		}
	}
	return ""
}

// eventTime is the message's event time, else when it was received, in UTC.
func eventTime(m mapping.Message) time.Time {
	t := m.Timestamp
	if t.IsZero() {
		t = m.ReceivedAt
	}
	return t.UTC()
}
