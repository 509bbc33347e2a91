package segment

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
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
		}
		events = append(events, ev)
	}
	return events, nil
}

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
	return coverage(secret, body, want, sign(secret, body))
}

// coverage is VerifySignature given want, the decoded signature, and
// whole, the HMAC of the whole body (computed while it was read).
func coverage(secret, body, want, whole []byte) Coverage {
	if hmac.Equal(want, whole) {
		return SignedAll
	}
	if first, ok := firstElement(body); ok && hmac.Equal(want, sign(secret, first)) {
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

// firstElement returns the raw bytes of element 0 of a JSON array, exactly as
// they appear in body, without decoding the array. body need not be valid
// JSON (the signature is checked before the body is parsed): the bytes found
// are then meaningless, and the delivery is refused when it is decoded.
func firstElement(body []byte) ([]byte, bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '[' {
		return nil, false
	}
	i = skipSpace(body, i+1)
	if i >= len(body) || body[i] == ']' {
		return nil, false
	}
	end := skipValue(body, i)
	return body[i:end], end > i
}
