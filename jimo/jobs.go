package jimo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/bridgeworks/bridge/mapping"
)

// Destination names the outbox destination of jobs sent to Jimo's
// server-side events API; the Client delivers them.
const Destination = "jimo"

// MaxAttributeLength is the most characters Jimo accepts in an attribute
// value (a string, or each element of an array).
const MaxAttributeLength = 700

// maxFlattenDepth bounds how deep CleanTraits follows nested objects.
const maxFlattenDepth = 32

// timestampLayout is ISO-8601 in UTC with milliseconds, as Jimo expects.
const timestampLayout = "2006-01-02T15:04:05.000Z"

// IdentifyEvent is the body of a server-side identify, exactly as Jimo's
// API takes it: {"userId","type":"identify","timestamp","traits"}.
type IdentifyEvent struct {
	// UserID is the Jimo identify token: the shared user ID, or in derived mode its derived token.
	UserID string `json:"userId"`
	// Type is always "identify".
	Type string `json:"type"`
	// Timestamp is the event time, ISO-8601 UTC with milliseconds.
	Timestamp string `json:"timestamp"`
	// Traits are the cleaned attributes (see CleanTraits); never null.
	Traits map[string]any `json:"traits"`
}

// TrackEvent is the body of a server-side track, exactly as Jimo's API takes
// it: {"userId","type":"track","timestamp","event","properties"}.
type TrackEvent struct {
	UserID string `json:"userId"`
	// Type is always "track".
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Event     string `json:"event"`
	// Properties are the cleaned properties (see CleanTraits); omitted when there are none.
	Properties map[string]any `json:"properties,omitempty"`
}

// IdentifyJob builds the Jimo server-side identify for a Segment identify
// (m.Type "identify") that names a user: no user ID, no forward (anonymous
// profiles would inflate Jimo's user count). The Jimo userId is m.UserID in
// shared mode and DeriveToken(tokenSecret, m.UserID) in derived mode; the
// traits are CleanTraits(m.Traits), with m.Email as "email" when they lack
// one. The job's MessageID (sent as Idempotency-Key) is "bridge-" and the
// first 32 hex digits of sha256("jimo|"+source+"|"+m.ID+"|identify"); its
// OrderingKey is m.UserID.
//
// It only translates: whether the message may be forwarded at all (echoes,
// rejected or impersonated messages, guessable user IDs) is the caller's
// forwarding policy to decide, once for every kind of job. ok is false when
// there is nothing to build: the message is not an identify, has no ID or no
// user ID, or derived mode has no token secret.
func IdentifyJob(m mapping.Message, mode Mode, tokenSecret []byte) (mapping.Job, bool) {
	if m.Type != "identify" {
		return mapping.Job{}, false
	}
	userID, ok := jimoUser(m, mode, tokenSecret)
	if !ok {
		return mapping.Job{}, false
	}
	traits := CleanTraits(m.Traits)
	if email := strings.TrimSpace(m.Email); email != "" {
		if _, ok := traits["email"]; !ok {
			traits["email"] = truncateRunes(email, MaxAttributeLength)
		}
	}
	return jimoJob(m, "identify", IdentifyEvent{
		UserID:    userID,
		Type:      "identify",
		Timestamp: formatTime(m),
		Traits:    traits,
	})
}

// TrackJob builds the Jimo server-side track for a Segment track (m.Type
// "track", with an event name) about a user: the event is m.Event, the
// properties CleanTraits of the "properties" object of m.Raw. The user,
// message ID (kind "track") and ordering key are as for IdentifyJob, and so
// are the cases where ok is false (and a track without an event name).
func TrackJob(m mapping.Message, mode Mode, tokenSecret []byte) (mapping.Job, bool) {
	event := strings.TrimSpace(m.Event)
	if m.Type != "track" || event == "" {
		return mapping.Job{}, false
	}
	userID, ok := jimoUser(m, mode, tokenSecret)
	if !ok {
		return mapping.Job{}, false
	}
	var body struct {
		Properties map[string]any `json:"properties"`
	}
	d := json.NewDecoder(bytes.NewReader(m.Raw))
	d.UseNumber()
	_ = d.Decode(&body) // no or malformed properties: none
	props := CleanTraits(body.Properties)
	if len(props) == 0 {
		props = nil
	}
	return jimoJob(m, "track", TrackEvent{
		UserID:     userID,
		Type:       "track",
		Timestamp:  formatTime(m),
		Event:      truncateRunes(event, MaxAttributeLength),
		Properties: props,
	})
}

// jimoUser returns the Jimo userId for m, or false when there is none: no
// user ID or message ID, or derived mode without a token secret.
func jimoUser(m mapping.Message, mode Mode, tokenSecret []byte) (string, bool) {
	userID := strings.TrimSpace(m.UserID)
	if userID == "" || m.ID == "" {
		return "", false
	}
	if mode == ModeDerived {
		if len(tokenSecret) == 0 {
			return "", false
		}
		return DeriveToken(tokenSecret, userID), true
	}
	return userID, true
}

// jimoJob encodes body as the payload of a Jimo job caused by m.
func jimoJob(m mapping.Message, kind string, body any) (mapping.Job, bool) {
	b, err := json.Marshal(body)
	if err != nil {
		return mapping.Job{}, false
	}
	return mapping.Job{
		Destination: Destination,
		OrderingKey: strings.TrimSpace(m.UserID),
		MessageID:   jobMessageID(m.Source, m.ID, kind),
		Payload:     b,
	}, true
}

// jobMessageID is the deterministic outgoing message ID of a Jimo job:
// "bridge-" + hex(sha256("jimo|source|sourceID|kind"))[:32].
func jobMessageID(source mapping.Source, sourceID, kind string) string {
	sum := sha256.Sum256([]byte(Destination + "|" + string(source) + "|" + sourceID + "|" + kind))
	return "bridge-" + hex.EncodeToString(sum[:])[:32]
}

// formatTime is the message's event time (else its receipt time) as Jimo expects it.
func formatTime(m mapping.Message) string {
	t := m.Timestamp
	if t.IsZero() {
		t = m.ReceivedAt
	}
	return t.UTC().Format(timestampLayout)
}

// CleanTraits returns traits reduced to what Jimo accepts as attributes:
// strings, numbers, booleans and arrays of those. Strings, and each string in
// an array, are cut to MaxAttributeLength characters (runes); nested objects
// are flattened with dotted keys ({"address":{"city":"Paris"}} gives
// "address.city"), down to 32 levels; nulls, NaN and infinities are dropped,
// and so are array elements that are not strings, numbers or booleans (an
// array left with none of its elements is dropped; an empty array stays
// empty). json.RawMessage values are decoded first. When two keys collide
// ("a.b" given as is and {"a":{"b":…}}), the one with fewer levels of
// flattening wins. The result is never nil; traits is not modified.
func CleanTraits(traits map[string]any) map[string]any {
	var entries []entry
	collect(&entries, "", traits, 0)
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].depth != entries[j].depth {
			return entries[i].depth < entries[j].depth
		}
		return entries[i].key < entries[j].key
	})
	out := make(map[string]any, len(entries))
	for _, e := range entries {
		if _, taken := out[e.key]; !taken {
			out[e.key] = e.value
		}
	}
	return out
}

// entry is one cleaned attribute and how many objects it was flattened out of.
type entry struct {
	key   string
	value any
	depth int
}

// collect appends the cleaned attributes of object o, whose keys get prefix.
func collect(entries *[]entry, prefix string, o map[string]any, depth int) {
	if depth > maxFlattenDepth {
		return
	}
	for k, v := range o {
		key := k
		if depth > 0 {
			key = prefix + "." + k
		}
		v = decodeRaw(v)
		if inner, ok := v.(map[string]any); ok {
			collect(entries, key, inner, depth+1)
			continue
		}
		if clean, ok := cleanValue(v); ok {
			*entries = append(*entries, entry{key: key, value: clean, depth: depth})
		}
	}
}

// cleanValue returns v as Jimo accepts it, or false when it must be dropped.
func cleanValue(v any) (any, bool) {
	if s, ok := scalar(v); ok {
		return s, true
	}
	var elems []any
	switch a := v.(type) {
	case []any:
		elems = a
	case []string:
		elems = make([]any, len(a))
		for i, s := range a {
			elems[i] = s
		}
	default:
		return nil, false
	}
	out := make([]any, 0, len(elems))
	for _, e := range elems {
		if s, ok := scalar(decodeRaw(e)); ok {
			out = append(out, s)
		}
	}
	if len(out) == 0 && len(elems) > 0 {
		return nil, false
	}
	return out, true
}

// scalar returns v cleaned if it is a string, a finite number or a boolean.
func scalar(v any) (any, bool) {
	switch x := v.(type) {
	case string:
		return truncateRunes(x, MaxAttributeLength), true
	case bool, json.Number,
		int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return x, true
	case float64:
		return x, !math.IsNaN(x) && !math.IsInf(x, 0)
	case float32:
		return x, !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0)
	}
	return nil, false
}

// decodeRaw decodes a json.RawMessage value (numbers as json.Number); other values are returned as they are.
func decodeRaw(v any) any {
	raw, ok := v.(json.RawMessage)
	if !ok {
		return v
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var out any
	if d.Decode(&out) != nil {
		return nil
	}
	return out
}

// truncateRunes cuts s to at most n runes, and to valid UTF-8.
func truncateRunes(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i, count := 0, 0
	for i = range s {
		if count == n {
			break
		}
		count++
	}
	return s[:i]
}
