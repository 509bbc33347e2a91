package mapping

import (
	"encoding/json"
	"strings"
	"time"
)

// Source names where a message came from; it is recorded on every message and link.
type Source string

// The sources of messages and links.
const (
	SourceSegmentAPI     Source = "segment.api"     // Segment's HTTP Tracking API, from Segment's client libraries
	SourceSegmentWebhook Source = "segment.webhook" // Segment's webhook destination
	SourceJimoSession    Source = "jimo.session"    // a session reset reported by the page
	SourceJimoWebhook    Source = "jimo.webhook"    // Jimo's outgoing webhooks
	SourceAdmin          Source = "admin"           // an operator's repair
)

// MaxMessageIDLength is the longest message ID accepted, in bytes (Segment's limit).
const MaxMessageIDLength = 100

// Message is one input as a protocol package translated it. The store keeps it
// durably (deduplicated on Source and ID), applies the identity links it
// carries and enqueues its Jobs, all in one transaction.
//
// Identifier fields hold the values as received; the store normalises them
// and records every value it refuses (blocked, too long, control characters)
// in the message's notes instead of linking it.
type Message struct {
	Source Source
	// ID is the message ID, unique per source; a second message with the same
	// Source and ID is a duplicate and changes nothing.
	ID string
	// Type is the message type: identify, track, page, screen, group, alias,
	// delete, session, logout, or a Jimo webhook event name.
	Type string
	// Event is the event name of a track call or a Jimo webhook.
	Event       string
	UserID      string
	AnonymousID string
	// PreviousID is an alias call's previousId: an earlier user ID when a
	// user ID of that value is stored, otherwise an anonymous ID (see
	// writer.previousIDKind).
	PreviousID string
	// JimoToken is a Jimo session token that is not the user ID (derived mode, legacy tokens).
	JimoToken string
	// JimoTokenOrUserID is a Jimo session token as Jimo reports it (its
	// webhooks' identifyToken, shared mode): the user ID, or a legacy token
	// of another user. The store records it as a jimo_token linked to the
	// user_id of the same value; for a legacy token, the session report's
	// link to the real user wins by event time.
	JimoTokenOrUserID string
	// Email is the person's email address; it links only when merging on email is enabled.
	Email string
	// Traits are the person's traits or attributes, merged last-write-wins by Timestamp.
	Traits map[string]any
	// UserIDWarning, when set, is why UserID is unsafe to hand to Jimo as a
	// token (guessable); the store keeps it on the identifier so operators see it.
	UserIDWarning string
	// Forwarded marks a message the bridge itself sent (it came back bearing
	// the no-echo marker): it is stored and applied, never forwarded again.
	Forwarded bool
	// Impersonating marks a support session acting as the user: stored, links nothing.
	Impersonating bool
	// Timestamp is the event time, corrected for client clock skew; it orders links.
	Timestamp time.Time
	// ReceivedAt is when the bridge received the message.
	ReceivedAt time.Time
	// Raw is the message as received (for a batch: the event with the batch context merged in).
	Raw json.RawMessage
	// Rejected, when set, is why the message is stored but not applied (for example a missing identity).
	Rejected string
	// Notes are what the protocol package noticed while decoding a message it
	// still applies (for example a timestamp it could not read, so receivedAt
	// stands in); each begins with a fixed word that counters use as a label.
	Notes []string
	// Jobs are the outbox jobs this message causes; they are written only if the message is new.
	Jobs []Job
}

// Job is one outgoing delivery, written to the outbox in the same transaction
// as the message that causes it. Its payload is opaque to mapping.
type Job struct {
	// Destination names the sender that delivers the job ("segment", "jimo").
	Destination string
	// OrderingKey groups jobs that must be delivered in order (the user they concern).
	OrderingKey string
	// MessageID is the outgoing message ID; it is deterministic, so a resend deduplicates downstream.
	MessageID string
	// Payload is what the sender needs, as the protocol package encoded it.
	Payload json.RawMessage
}

// Receipt says what the store did with a message.
type Receipt struct {
	// Duplicate is true when a message with the same source and ID was already stored.
	Duplicate bool
	// Notes lists the message's decoding notes (Message.Notes) first, then
	// the rules that fired (refused values, impersonation, conflicts), for
	// the client and the admin page.
	Notes []string
}

// Notes the store records on messages (and returns in receipts) when a rule fires.
const (
	NoteImpersonating = "impersonating: stored, links nothing"
	// NoteDeletedID follows the field that named an identifier a privacy deletion erased.
	NoteDeletedID = "identifier was deleted (privacy request); not linked"
	// NoteHeldBack marks a message that names an identifier a privacy deletion holds back.
	NoteHeldBack = "names an identifier deleted by a privacy request: payload not kept, nothing forwarded"
)

// NamesDeleted reports whether the message the receipt is for names someone
// a privacy deletion took: nothing about them may be handed on.
func (r Receipt) NamesDeleted() bool {
	for _, n := range r.Notes {
		if n == NoteHeldBack || strings.HasSuffix(n, NoteDeletedID) {
			return true
		}
	}
	return false
}

// WithoutNUL returns m with every NUL character (U+0000) in its text other
// than its identifiers replaced by U+FFFD: its ID, type, event, email,
// notes, rejection, traits (keys and values, at any depth) and its jobs'
// keys. PostgreSQL's text cannot hold NUL, and a message that could never
// be stored would be retried by its sender forever; the store applies this
// to every message on either engine, so both store the same. Identifier
// fields are left as they are: a NUL in one is a control character, which
// the store refuses (and notes) as before.
func (m Message) WithoutNUL() Message {
	if !m.HasNUL() {
		return m
	}
	fix := func(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }
	m.ID, m.Type, m.Event, m.Email, m.Rejected, m.UserIDWarning = fix(m.ID), fix(m.Type), fix(m.Event), fix(m.Email), fix(m.Rejected), fix(m.UserIDWarning)
	notes := make([]string, len(m.Notes))
	for i, n := range m.Notes {
		notes[i] = fix(n)
	}
	m.Notes = notes
	jobs := make([]Job, len(m.Jobs))
	for i, j := range m.Jobs {
		j.Destination, j.OrderingKey, j.MessageID = fix(j.Destination), fix(j.OrderingKey), fix(j.MessageID)
		jobs[i] = j
	}
	m.Jobs = jobs
	if m.Traits != nil {
		m.Traits = withoutNUL(m.Traits, fix).(map[string]any)
	}
	return m
}

// HasNUL reports whether WithoutNUL would change m. It runs for every
// message stored, so it only reads (no string is built).
func (m Message) HasNUL() bool {
	return containsNUL(m.ID, m.Type, m.Event, m.Email, m.Rejected, m.UserIDWarning) || containsNUL(m.Notes...) ||
		anyNUL(m.Traits) || jobsHaveNUL(m.Jobs)
}

// containsNUL reports whether any of ss holds a NUL.
func containsNUL(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

func jobsHaveNUL(jobs []Job) bool {
	for _, j := range jobs {
		if containsNUL(j.Destination, j.OrderingKey, j.MessageID) {
			return true
		}
	}
	return false
}

// anyNUL reports whether a decoded JSON value holds a NUL in a string or key.
func anyNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return containsNUL(v)
	case map[string]any:
		for k, e := range v {
			if containsNUL(k) || anyNUL(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if anyNUL(e) {
				return true
			}
		}
	}
	return false
}

// withoutNUL copies a decoded JSON value with fix applied to its strings and keys.
func withoutNUL(v any, fix func(string) string) any {
	switch v := v.(type) {
	case string:
		return fix(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[fix(k)] = withoutNUL(e, fix)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = withoutNUL(e, fix)
		}
		return out
	}
	return v
}
