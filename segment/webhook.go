package segment

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// DecodeWebhook decodes a delivery from Segment's webhook destination: one
// event object or a JSON array of up to MaxWebhookEvents event objects. Each
// becomes an Event with source mapping.SourceSegmentWebhook. Segment has
// already stamped and skew-corrected the timestamps, so Message.Timestamp is
// the event's timestamp as delivered and Raw keeps them; a missing messageId
// is assigned as in DecodeTrackingAPI.
//
// It fails, with a *mapping.Error, on invalid JSON or UTF-8, nesting deeper
// than MaxDepth, a body or element that is not an object (CodeInvalid), and
// more than MaxWebhookEvents events (CodeTooLarge). Semantically invalid
// events are returned with Message.Rejected set.
func DecodeWebhook(body []byte, receivedAt time.Time) ([]Event, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	t := translator{source: mapping.SourceSegmentWebhook, receivedAt: receivedAt, delivered: true}
	switch firstByte(body) {
	case '{':
		return []Event{t.event(body, "")}, nil
	case '[':
		elems, _ := splitArray(body)
		if len(elems) > MaxWebhookEvents {
			return nil, mapping.Errorf(mapping.CodeTooLarge, "the delivery holds %d events; the bridge accepts at most %d: lower the batch size in the webhook settings", len(elems), MaxWebhookEvents)
		}
		events := make([]Event, 0, len(elems))
		for i, raw := range elems {
			if !isObject(raw) {
				return nil, mapping.Errorf(mapping.CodeInvalid, "element %d of the delivery is not a JSON object; every element must be an event", i)
			}
			ev := t.event(raw, "")
			if i > 0 && ev.Message.Type == "delete" && ev.Message.Rejected == "" {
				// Segment's signature covers element 0 only: a deletion
				// appended to a captured delivery must not delete anyone.
				ev.Message.Rejected = ReasonUnsignedDelete
			}
			events = append(events, ev)
		}
		return events, nil
	default:
		return nil, mapping.Errorf(mapping.CodeInvalid, "the delivery must be a JSON event object or an array of them")
	}
}

// VerifySignature reports whether signature (an X-Signature header: hex
// HMAC-SHA1 keyed with secret) authenticates body, the way Segment signs
// webhook deliveries: over the raw body, or, for a JSON array, over the raw
// bytes of its first element exactly as they appear in the body. It compares
// in constant time and is false for an empty secret or signature.
//
// Note that a signature over the first element authenticates only that
// element; VerifySignature also accepts a signature over the whole array.
func VerifySignature(secret, body []byte, signature string) bool {
	want, err := hex.DecodeString(strings.TrimSpace(signature))
	if len(secret) == 0 || err != nil || len(want) != sha1.Size {
		return false
	}
	if hmac.Equal(want, sign(secret, body)) {
		return true
	}
	first, ok := firstElement(body)
	return ok && hmac.Equal(want, sign(secret, first))
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
// they appear in body, without decoding the rest of the array.
func firstElement(body []byte) ([]byte, bool) {
	if firstByte(body) != '[' {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') || !dec.More() {
		return nil, false
	}
	var first json.RawMessage
	if err := dec.Decode(&first); err != nil {
		return nil, false
	}
	return first, true
}
