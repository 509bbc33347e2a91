package jimo

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// MaxWebhookBody is the largest POST /jimo/webhook body accepted, in bytes.
const MaxWebhookBody = 64 << 10

// TypeJimoEvent is the Message.Type of every Jimo webhook; the event name
// ("tour.completed") is in Message.Event.
const TypeJimoEvent = "jimo_event"

// Reasons a webhook is stored but not applied (Message.Rejected). Such a
// webhook is still acknowledged with 200: Jimo retries any status ≥ 400, and
// a retry cannot add what is missing.
const (
	RejectedMissingIdentifyToken = "missing_identify_token"
	RejectedMissingEvent         = "missing_event"
)

// Webhook is one outgoing webhook of Jimo's:
// {"event","version","time":<ms>,"experience":{...},"jimer":{"uid","identifyToken","username","email",...}}.
type Webhook struct {
	Event   string
	Version string
	// Time is the event time; zero when the body has no usable "time".
	Time time.Time
	// TimeMillis is "time" as sent, in milliseconds since the epoch; 0 when absent.
	TimeMillis int64
	// ExperienceID is experience.id (a string or a number in the body).
	ExperienceID string
	Jimer        Jimer
	// Raw is the body as received.
	Raw json.RawMessage
}

// Jimer is Jimo's user in a webhook.
type Jimer struct {
	// UID is Jimo's own ID of the user.
	UID string
	// IdentifyToken is the token the page identified the user with: the shared
	// user ID in shared mode, the derived token in derived mode.
	IdentifyToken string
	Username      string
	Email         string
}

// DecodeWebhook reads a Jimo webhook body. Only a body that is not a JSON
// object is an error (a *mapping.Error with CodeInvalid). Jimo retries
// refused deliveries, so every other field is read leniently: a field of an
// unexpected type counts as absent, and strings and numbers are both accepted
// for IDs and tokens.
func DecodeWebhook(body []byte) (Webhook, error) {
	fields, err := decodeObject(body, "webhook")
	if err != nil {
		return Webhook{}, err
	}
	w := Webhook{
		Event:   strings.TrimSpace(scalarString(fields["event"])),
		Version: scalarString(fields["version"]),
		Raw:     json.RawMessage(append([]byte(nil), body...)),
	}
	if ms, ok := millis(fields["time"]); ok {
		w.TimeMillis = ms
		w.Time = time.UnixMilli(ms).UTC()
	}
	var experience map[string]json.RawMessage
	if json.Unmarshal(fields["experience"], &experience) == nil {
		w.ExperienceID = scalarString(experience["id"])
	}
	var jimer map[string]json.RawMessage
	if json.Unmarshal(fields["jimer"], &jimer) == nil {
		w.Jimer = Jimer{
			UID:           scalarString(jimer["uid"]),
			IdentifyToken: strings.TrimSpace(scalarString(jimer["identifyToken"])),
			Username:      scalarString(jimer["username"]),
			Email:         strings.TrimSpace(scalarString(jimer["email"])),
		}
	}
	return w, nil
}

// maxMillis bounds accepted times to before the year 10000.
const maxMillis = 253402300799999

// millis reads a positive time in milliseconds, as a number or a numeric string.
func millis(raw json.RawMessage) (int64, bool) {
	s := scalarString(raw)
	if s == "" {
		return 0, false
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, ms > 0 && ms <= maxMillis
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f <= 0 || f > maxMillis {
		return 0, false
	}
	return int64(f), true
}

// Message translates the webhook for the store. Its ID is "jimo-webhook-"
// and a hash of (event, time, jimer.uid, jimer.identifyToken, experience id),
// so a delivery Jimo retries deduplicates; without a time, of the whole body.
// Its Timestamp is the webhook's time, or receivedAt when there is none. The
// identify token is the user ID in shared mode (with UserIDWarning set when
// Guessable finds it unsafe) and the Jimo token in derived mode, which the
// store translates to the user through its links. A webhook without an
// identify token or without an event is Rejected: stored, applied to nothing.
func (w Webhook) Message(mode Mode, blocklist mapping.Blocklist, receivedAt time.Time) mapping.Message {
	msg := mapping.Message{
		Source:     mapping.SourceJimoWebhook,
		ID:         w.messageID(),
		Type:       TypeJimoEvent,
		Event:      w.Event,
		Email:      w.Jimer.Email,
		Timestamp:  w.Time,
		ReceivedAt: receivedAt,
		Raw:        w.Raw,
	}
	if msg.Timestamp.IsZero() {
		msg.Timestamp = receivedAt
	}
	token := w.Jimer.IdentifyToken
	switch {
	case token == "":
		msg.Rejected = RejectedMissingIdentifyToken
	case mode == ModeDerived:
		msg.JimoToken = token
	default:
		// Shared mode: the token is the user ID, unless the store knows it as
		// a legacy token (session:reset with set user:id), which it resolves.
		msg.JimoTokenOrUserID = token
		msg.UserIDWarning = Guessable(token, blocklist)
	}
	if msg.Rejected == "" && w.Event == "" {
		msg.Rejected = RejectedMissingEvent
	}
	return msg
}

func (w Webhook) messageID() string {
	h := sha256.New()
	if w.TimeMillis == 0 {
		h.Write([]byte("body\x00"))
		h.Write(w.Raw)
	} else {
		for _, part := range []string{w.Event, strconv.FormatInt(w.TimeMillis, 10), w.Jimer.UID, w.Jimer.IdentifyToken, w.ExperienceID} {
			h.Write([]byte(part))
			h.Write([]byte{0})
		}
	}
	return "jimo-webhook-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// CheckWebhookSecret authenticates a webhook delivery: the secret comes from
// the URL (?secret=, passed as query) or from authorization
// ("Bearer <secret>"), and must equal configured, compared in constant time.
// An empty configured secret refuses every delivery: the endpoint is never
// open. Errors are *mapping.Error with CodeUnauthorized; they never contain
// the secret.
func CheckWebhookSecret(configured, query, authorization string) error {
	if configured == "" {
		return mapping.Errorf(mapping.CodeUnauthorized,
			"Jimo webhooks are refused until a webhook secret is configured: set BRIDGE_JIMO_WEBHOOK_SECRET and add ?secret=<it> to the webhook URL in Jimo")
	}
	got := query
	if got == "" {
		if scheme, value, ok := strings.Cut(strings.TrimSpace(authorization), " "); ok && strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(value)
		}
	}
	if got == "" {
		return mapping.Errorf(mapping.CodeUnauthorized,
			"webhook secret missing: configure the webhook URL in Jimo with ?secret=<BRIDGE_JIMO_WEBHOOK_SECRET>, or send Authorization: Bearer <secret>")
	}
	// Hashing first makes the comparison constant-time in the length too.
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(configured))
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return mapping.Errorf(mapping.CodeUnauthorized, "webhook secret is wrong: it must equal BRIDGE_JIMO_WEBHOOK_SECRET")
	}
	return nil
}
