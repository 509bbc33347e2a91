package segment

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"hash"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// Coverage is how much of a webhook delivery a verified credential
// authenticates. A delete is honoured only where the coverage reaches it.
type Coverage int

const (
	// Unsigned: nothing verified; no delete is honoured.
	Unsigned Coverage = iota
	// SignedFirst: X-Signature over element 0 of an array, as Segment signs
	// batched deliveries (or over the body of a single event). Only that
	// event is authentic; the other elements are as authentic as the channel.
	SignedFirst
	// SignedAll: the whole body is authentic: X-Signature over the whole
	// body, or Authorization: Bearer <shared secret>.
	SignedAll
)

// DecodeWebhook decodes a delivery signed as Segment signs it: it is
// DecodeDelivery(body, receivedAt, SignedFirst).
func DecodeWebhook(body []byte, receivedAt time.Time) ([]Event, error) {
	return DecodeDelivery(body, receivedAt, SignedFirst)
}

// DecodeDelivery decodes a delivery from Segment's webhook destination: one
// event object or a JSON array of up to MaxWebhookEvents event objects. Each
// becomes an Event with source mapping.SourceSegmentWebhook. Segment has
// already stamped and skew-corrected the timestamps, so Message.Timestamp is
// the event's timestamp as delivered and Raw keeps them; a missing messageId
// is assigned as in DecodeTrackingAPI.
//
// covered says what a verified credential authenticates: a delete is
// honoured in a single event with SignedFirst or SignedAll, at element 0 of
// an array with SignedFirst, anywhere with SignedAll; any other delete is
// returned with Message.Rejected = ReasonUnsignedDelete (it is stored, never
// applied). A delete is carried out whatever shape its optional fields take.
//
// It fails, with a *mapping.Error, on invalid JSON or UTF-8, nesting deeper
// than MaxDepth, a body or element that is not an object (CodeInvalid), and
// more than MaxWebhookEvents events (CodeTooLarge). Semantically invalid
// events are returned with Message.Rejected set.
func DecodeDelivery(body []byte, receivedAt time.Time, covered Coverage) ([]Event, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	t := translator{source: mapping.SourceSegmentWebhook, receivedAt: receivedAt, delivered: true}
	var elems [][]byte
	switch firstByte(body) {
	case '{':
		elems = [][]byte{body}
	case '[':
		raws, _ := splitArray(body)
		if len(raws) > MaxWebhookEvents {
			return nil, mapping.Errorf(mapping.CodeTooLarge, "the delivery holds %d events; the bridge accepts at most %d: lower the batch size in the webhook settings", len(raws), MaxWebhookEvents)
		}
		for i, raw := range raws {
			if !isObject(raw) {
				return nil, mapping.Errorf(mapping.CodeInvalid, "element %d of the delivery is not a JSON object; every element must be an event", i)
			}
			elems = append(elems, raw)
		}
	default:
		return nil, mapping.Errorf(mapping.CodeInvalid, "the delivery must be a JSON event object or an array of them")
	}
	events := make([]Event, 0, len(elems))
	for i, raw := range elems {
		ev := t.event(raw, "")
		signed := covered == SignedAll || covered == SignedFirst && i == 0
		if ev.Message.Type == "delete" && ev.Message.Rejected == "" && !signed {
			// Segment's signature covers element 0 only: a deletion
			// appended to a captured delivery must not delete anyone.
			ev.Message.Rejected = ReasonUnsignedDelete
			// Stored under an ID of its own, so that the same deletion,
			// delivered again where a signature covers it, is not taken
			// for a duplicate of this refusal.
			ev.Message.ID = unsignedDeletePrefix + ev.Message.ID
		}
		events = append(events, ev)
	}
	return events, nil
}

// unsignedDeletePrefix marks the message ID of a delete stored as refused
// because no signature covered it.
const unsignedDeletePrefix = "unsigned:"

// VerifySignature returns what signature (an X-Signature header: hex
// HMAC-SHA1 keyed with secret) authenticates of body: SignedAll when it is
// over the raw body; SignedFirst when body is a JSON array and it is over the
// raw bytes of element 0 exactly as they appear in the body (how Segment
// signs batches); Unsigned otherwise, and for an empty secret or signature.
// It compares in constant time.
func VerifySignature(secret, body []byte, signature string) Coverage {
	want, ok := parseSignature(secret, signature)
	if !ok {
		return Unsigned
	}
	s := newSigner(secret)
	s.Write(body)
	return s.coverage(want)
}

// signer computes, as a body streams through it (Write), the two HMACs
// Segment may have sent: over the whole body, and over the bytes of element
// 0 when the body is a JSON array. It needs no copy of the body, so a
// delivery can be refused before it is assembled. Element 0 is delimited as
// skipValue delimits a value of valid JSON (the body is validated only later,
// once authenticated); hand-written because it runs on every byte of every
// delivery before authentication.
type signer struct {
	whole, first hash.Hash

	state    int  // one of the signer states below
	depth    int  // nesting inside element 0
	inString bool // inside a string in element 0
	escaped  bool // after a backslash in that string
	scalar   bool // element 0 is a number, true, false or null
}

const (
	beforeArray = iota // skipping space before the body's first byte
	beforeFirst        // after '[', skipping space before element 0
	inFirst            // inside element 0
	firstDone          // element 0 complete: first holds its HMAC
	noFirst            // the body is not an array, or it is empty
)

func newSigner(secret []byte) *signer {
	return &signer{whole: hmac.New(sha1.New, secret), first: hmac.New(sha1.New, secret)}
}

// Write hashes p; it never fails.
func (s *signer) Write(p []byte) (int, error) {
	s.whole.Write(p)
	start := -1 // where element 0's bytes begin in p
	for i := 0; i < len(p) && s.state < firstDone; i++ {
		c := p[i]
		switch s.state {
		case beforeArray, beforeFirst:
			switch {
			case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			case s.state == beforeArray && c == '[':
				s.state = beforeFirst
			case s.state == beforeFirst && c != ']' && c != ',' && c != '}':
				s.state, start = inFirst, i
				s.scalar = c != '{' && c != '[' && c != '"'
				s.inString = c == '"'
				if c == '{' || c == '[' {
					s.depth = 1
				}
			default:
				s.state = noFirst
			}
		case inFirst:
			if start < 0 {
				start = i
			}
			switch {
			case s.scalar:
				if c == ',' || c == ']' || c == '}' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
					s.first.Write(p[start:i])
					s.state, start = firstDone, -1
				}
			case s.inString:
				switch {
				case s.escaped:
					s.escaped = false
				case c == '\\':
					s.escaped = true
				case c == '"':
					s.inString = false
					if s.depth == 0 { // element 0 is a string
						s.first.Write(p[start : i+1])
						s.state, start = firstDone, -1
					}
				}
			case c == '"':
				s.inString = true
			case c == '{' || c == '[':
				s.depth++
			case c == '}' || c == ']':
				if s.depth--; s.depth == 0 {
					s.first.Write(p[start : i+1])
					s.state, start = firstDone, -1
				}
			}
		}
	}
	if s.state == inFirst && start >= 0 {
		s.first.Write(p[start:])
	}
	return len(p), nil
}

// coverage compares want, a decoded X-Signature, with both HMACs in
// constant time. At the end of a body inside a number, element 0 ends with
// the body, as skipValue ends it.
func (s *signer) coverage(want []byte) Coverage {
	if hmac.Equal(want, s.whole.Sum(nil)) {
		return SignedAll
	}
	if (s.state == firstDone || s.state == inFirst) && hmac.Equal(want, s.first.Sum(nil)) {
		return SignedFirst
	}
	return Unsigned
}

// parseSignature decodes an X-Signature value; ok is false for an empty
// secret or a value that is not the hex of an HMAC-SHA1.
func parseSignature(secret []byte, signature string) ([]byte, bool) {
	want, err := hex.DecodeString(strings.TrimSpace(signature))
	if len(secret) == 0 || err != nil || len(want) != sha1.Size {
		return nil, false
	}
	return want, true
}

// bearerMatches reports, in constant time, whether an Authorization header
// value is "Bearer <secret>". Both sides are hashed first, so neither the
// length nor any prefix of the secret shows in the timing.
func bearerMatches(authorization string, secret []byte) bool {
	scheme, token, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	if !strings.EqualFold(scheme, "Bearer") || len(secret) == 0 {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	want := sha256.Sum256(secret)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// Sign returns the lowercase hex HMAC-SHA1 of b keyed with secret: the
// X-Signature Segment sends for a delivery whose signed bytes are b.
func Sign(secret, b []byte) string { return hex.EncodeToString(sign(secret, b)) }

func sign(secret, b []byte) []byte {
	mac := hmac.New(sha1.New, secret)
	mac.Write(b)
	return mac.Sum(nil)
}
