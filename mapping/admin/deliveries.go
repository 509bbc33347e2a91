package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

// What the profile page shows of each delivery, and its "Jimo's view".
// Payloads are read generically: every payload the protocol packages build
// is a Segment-spec call ({"type","userId","traits",...}), so the kind, the
// user and what was sent are read from those fields, without knowing which
// package built it.

// maxSentFields bounds the sent traits or properties a delivery lists; the
// whole payload is in its collapsed raw JSON.
const maxSentFields = 40

// sentField is one trait or property a delivery sent.
type sentField struct {
	Key, Value string
}

// deliveryView is one outbox job as the profile page shows it.
type deliveryView struct {
	store.JobInfo
	// Kind is the payload's "type" (identify, track, ...); "" when it has none.
	Kind string
	// To is who the payload names: its userId, else its jimoToken, else its
	// anonymousId; ToField names which ("userId", ...).
	To, ToField string
	// Event is a track's event name.
	Event string
	// Fields are the traits (identify) or properties (track) sent, by key;
	// FieldsOf says which, More how many were left out.
	Fields   []sentField
	FieldsOf string
	More     int
	// Cause is the message that caused the job.
	Cause messageRef
	// Payload is the payload as sent, redacted and capped.
	Payload shown
}

// messageRef names a stored message and where the page shows it.
type messageRef struct {
	// Label is "source:message_id".
	Label string
	// Href is the message's anchor on a profile page; "" when the page does not show it.
	Href string
}

// messageAnchor is the id of a message's entry on the profile page: short,
// and safe in an id and a URL fragment whatever the message ID holds.
func messageAnchor(source mapping.Source, messageID string) string {
	sum := sha256.Sum256([]byte(string(source) + ":" + messageID))
	return "msg-" + hex.EncodeToString(sum[:6])
}

// sourceAnchor is messageAnchor of a job's source_message ("source:message_id").
func sourceAnchor(sourceMessage string) string {
	source, id, _ := strings.Cut(sourceMessage, ":")
	return messageAnchor(mapping.Source(source), id)
}

// payloadFields are the fields of a job payload the pages read.
type payloadFields struct {
	Type        string                     `json:"type"`
	UserID      string                     `json:"userId"`
	AnonymousID string                     `json:"anonymousId"`
	JimoToken   string                     `json:"jimoToken"`
	Event       string                     `json:"event"`
	Traits      map[string]json.RawMessage `json:"traits"`
	Properties  map[string]json.RawMessage `json:"properties"`
}

// readPayload decodes what the pages show of a job payload; a payload that
// is not a JSON object gives the zero value.
func readPayload(payload string) payloadFields {
	var p payloadFields
	_ = json.Unmarshal([]byte(payload), &p)
	return p
}

// newDelivery describes job j; shownMessages are the anchors of the
// messages the page lists.
func newDelivery(j store.JobInfo, shownMessages map[string]bool) deliveryView {
	p := readPayload(j.Payload)
	d := deliveryView{JobInfo: j, Kind: p.Type, Event: p.Event, Payload: showRaw(j.Payload), Cause: messageRef{Label: j.SourceMessage}}
	switch {
	case p.UserID != "":
		d.To, d.ToField = p.UserID, "userId"
	case p.JimoToken != "":
		d.To, d.ToField = p.JimoToken, "jimoToken"
	case p.AnonymousID != "":
		d.To, d.ToField = p.AnonymousID, "anonymousId"
	}
	fields, of := p.Traits, "traits"
	if len(fields) == 0 && len(p.Properties) > 0 {
		fields, of = p.Properties, "properties"
	}
	if len(fields) > 0 {
		d.FieldsOf = of
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i == maxSentFields {
				d.More = len(keys) - i
				break
			}
			f := sentField{Key: k, Value: string(fields[k])}
			if k != "" && secretKey(k) {
				f.Value = Redacted
			} else if v, ok := decodeRaw(f.Value); ok {
				redact(v)
				f.Value = traitValue(v)
			}
			d.Fields = append(d.Fields, f)
		}
	}
	if a := sourceAnchor(j.SourceMessage); shownMessages[a] {
		d.Cause.Href = "#" + a
	}
	return d
}

// destinationView is one destination's deliveries on the profile page.
type destinationView struct {
	Destination string
	Jobs        []deliveryView
	Dead        int
	Pending     int
}

// jimoView is the profile page's "Jimo's view": whether Jimo was given this
// person, under which token and when, or why not.
type jimoView struct {
	// Given: a delivery to Jimo succeeded.
	Given bool
	// Tokens are the userIds Jimo was given, the latest first.
	Tokens []string
	// LastAt, LastKind and LastJob describe the latest successful delivery.
	LastAt   time.Time
	LastKind string
	LastJob  int64
	// Delivered counts successful deliveries; Pending and Dead the others.
	Delivered, Pending, Dead int
	// LastError is the last error of the newest dead delivery.
	LastError string
	// NextAt is when the next waiting delivery is due.
	NextAt *time.Time
	// Reasons say why Jimo was not given the person, or what stands in the
	// way of what it has; each is one sentence.
	Reasons []string
	// Webhooks counts the messages Jimo's webhooks sent about this person
	// (among those the page lists); LastWebhook is the newest.
	Webhooks    int
	LastWebhook *messageView
}

// jimoSummary works out Jimo's view of profile p from its deliveries and messages.
func (a *Admin) jimoSummary(p store.Profile, jobs []store.JobInfo, msgs []messageView) jimoView {
	var v jimoView
	dest := "jimo"
	if a.fwd != nil && a.fwd.Jimo.Name != "" {
		dest = a.fwd.Jimo.Name
	}
	seen := map[string]bool{}
	var deadAt time.Time
	for _, j := range jobs { // newest first
		if j.Destination != dest {
			continue
		}
		switch j.State {
		case store.JobDone:
			v.Delivered++
			pl := readPayload(j.Payload)
			if !v.Given || j.UpdatedAt.After(v.LastAt) {
				v.LastAt, v.LastKind, v.LastJob = j.UpdatedAt, pl.Type, j.ID
			}
			v.Given = true
			if pl.UserID != "" && !seen[pl.UserID] {
				seen[pl.UserID] = true
				v.Tokens = append(v.Tokens, pl.UserID)
			}
		case store.JobDead:
			v.Dead++
			if v.LastError == "" || j.UpdatedAt.After(deadAt) {
				v.LastError, deadAt = j.LastError, j.UpdatedAt
			}
		case store.JobPending, store.JobRunning:
			v.Pending++
			if j.RunAt != nil && (v.NextAt == nil || j.RunAt.Before(*v.NextAt)) {
				v.NextAt = j.RunAt
			}
		}
	}
	for i := range msgs {
		if msgs[i].Source == mapping.SourceJimoWebhook && msgs[i].Rejected == "" {
			v.Webhooks++
			if v.LastWebhook == nil {
				v.LastWebhook = &msgs[i]
			}
		}
	}
	if a.fwd != nil && !a.fwd.Jimo.On {
		why := "Forwarding to Jimo is off"
		if a.fwd.Jimo.Off != "" {
			why += ": " + a.fwd.Jimo.Off
		}
		v.Reasons = append(v.Reasons, why+"; the bridge sends Jimo nothing.")
	}
	if p.UserID == "" {
		v.Reasons = append(v.Reasons, "The profile is anonymous (no user ID): Jimo is only given people the app identified.")
	}
	for _, pi := range p.Identifiers {
		if pi.Kind == mapping.KindUserID && pi.Warning != "" {
			v.Reasons = append(v.Reasons, fmt.Sprintf("The user ID %s is guessable (%s): the bridge withholds it from Jimo.", pi.Value, pi.Warning))
		}
	}
	if v.Pending > 0 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("%s to Jimo %s waiting to be sent.", deliveries(v.Pending), isAre(v.Pending)))
	}
	if v.Dead > 0 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("%s to Jimo %s dead (last error: %s); retry below once the cause is fixed.", deliveries(v.Dead), isAre(v.Dead), v.LastError))
	}
	if !v.Given && len(v.Reasons) == 0 {
		why := "No message of this profile caused a delivery to Jimo: Jimo is given identify calls that carry a user ID"
		if a.fwd != nil && a.fwd.JimoTrack {
			why += ", and track calls"
		}
		v.Reasons = append(v.Reasons, why+".")
	}
	return v
}

// experience is what a Jimo webhook says about the experience it reports.
type experience struct {
	Name, Type string
}

// experienceOf reads the experience (tour, survey, ...) a Jimo webhook
// message names from its raw payload; ok is false for other messages and
// for payloads that expired or name none.
func experienceOf(m store.MessageInfo) (experience, bool) {
	if m.Source != mapping.SourceJimoWebhook || m.Raw == "" {
		return experience{}, false
	}
	var body struct {
		Experience struct {
			Name any `json:"name"`
			Type any `json:"type"`
		} `json:"experience"`
	}
	if json.Unmarshal([]byte(m.Raw), &body) != nil {
		return experience{}, false
	}
	x := experience{Name: scalarText(body.Experience.Name), Type: strings.ToLower(scalarText(body.Experience.Type))}
	return x, x.Name != ""
}

// scalarText renders a JSON string or number as text; anything else as "".
func scalarText(v any) string {
	switch x := v.(type) {
	case string:
		return strings.TrimSpace(x)
	case float64:
		return fmt.Sprint(x)
	}
	return ""
}

// deliveries is "1 delivery", "2 deliveries".
func deliveries(n int) string {
	if n == 1 {
		return "1 delivery"
	}
	return fmt.Sprintf("%d deliveries", n)
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}
