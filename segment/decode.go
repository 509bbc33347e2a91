package segment

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bridgeworks/bridge/mapping"
)

// Reasons an event is stored but not applied; they become mapping.Message.Rejected
// and label the rejected-events metric. A rejected event never fails its request.
const (
	ReasonUnknownType        = "unknown_type"          // type missing, not a string, or not a Segment call type
	ReasonDeleteNotAccepted  = "delete_not_accepted"   // a deletion on the Tracking API: only Segment's webhook deletes
	ReasonUnsignedDelete     = "unsigned_delete"       // a deletion past element 0 of a webhook array, which the signature does not cover
	ReasonBadUserIDType      = "bad_user_id_type"      // userId is an object, array or boolean
	ReasonBadAnonymousIDType = "bad_anonymous_id_type" // anonymousId is an object, array or boolean
	ReasonBadPreviousIDType  = "bad_previous_id_type"  // an alias's previousId is an object, array or boolean
	ReasonBadMessageIDType   = "bad_message_id_type"   // messageId is not a string
	ReasonMessageIDTooLong   = "message_id_too_long"   // messageId over mapping.MaxMessageIDLength bytes
	ReasonBadContext         = "bad_context"           // context is not an object (null and [] count as empty)
	ReasonBadTraits          = "bad_traits"            // traits (or context.traits) is not an object (null and [] count as empty)
	ReasonBadNumericID       = "bad_numeric_id"        // a numeric userId, anonymousId or previousId that is not a plain integer of at most 20 digits (1e300, 12.5)
	ReasonMissingIdentity    = "missing_identity"      // neither userId nor anonymousId
	ReasonIDTooLong          = "id_too_long"           // an identifier over mapping.MaxIdentifierLength characters
	ReasonIDControl          = "id_control_characters" // an identifier holds a control character (NUL included)
	ReasonMissingPreviousID  = "missing_previous_id"   // an alias without previousId
	ReasonMissingEvent       = "missing_event"         // a track without an event name
)

// Event is one decoded Segment message: the message for the store, and what
// the bridge needs to know about it besides.
type Event struct {
	// Message is the translation; Message.Rejected is set when the event is
	// stored but must not be applied.
	Message mapping.Message
	// WriteKey is the key the event was sent with: the Authorization header's,
	// else the event's writeKey, else the batch's. Empty for webhook deliveries.
	WriteKey string
}

// Request is what DecodeTrackingAPI needs besides the body.
type Request struct {
	// Route is the path after /v1/: identify, track, page, screen, group,
	// alias, batch, import, or a short form (i, t, p, s, g, a, b).
	Route string
	// WriteKey is the key from the Authorization header, or "".
	WriteKey string
	// ReceivedAt is when the request arrived; it stamps receivedAt and anchors skew correction.
	ReceivedAt time.Time
	// Source is recorded on every message; empty means mapping.SourceSegmentAPI.
	Source mapping.Source
}

// RouteType returns the message type a Tracking API route implies ("" for
// the batch routes batch, import and b) and whether the route is a batch.
// ok is false for an unknown route.
func RouteType(route string) (typ string, batch bool, ok bool) {
	switch route {
	case "identify", "i":
		return "identify", false, true
	case "track", "t":
		return "track", false, true
	case "page", "p":
		return "page", false, true
	case "screen", "s":
		return "screen", false, true
	case "group", "g":
		return "group", false, true
	case "alias", "a":
		return "alias", false, true
	case "batch", "import", "b":
		return "", true, true
	}
	return "", false, false
}

func knownType(typ string) bool {
	switch typ {
	case "identify", "track", "page", "screen", "group", "alias", "delete":
		return true
	}
	return false
}

// DecodeTrackingAPI decodes the (decompressed) body of a Tracking API request
// into its events, in order. The content type is irrelevant: the body is JSON.
//
// It fails, with a *mapping.Error, only when retrying cannot help: an unknown
// route (CodeNotFound); a body over 32 KB for a single call or 500 KB for a
// batch, a batch event over 32 KB, more than 2,500 events, or events that
// sum to over 2 MB once the batch context is merged into each (CodeTooLarge);
// invalid JSON or UTF-8, nesting deeper than MaxDepth, a body or batch event
// that is not an object, or batch fields of the wrong JSON type (CodeInvalid).
// An event that parses but is semantically invalid is returned with
// Message.Rejected set to one of the Reason constants.
//
// Each message's Raw is the event with the batch context and integrations
// merged in (the event's keys win), messageId filled in when missing
// (deterministically, from the write key and the event's bytes), timestamp
// corrected for clock skew, originalTimestamp, sentAt and receivedAt set, and
// writeKey removed, encoded compactly.
func DecodeTrackingAPI(req Request, body []byte) ([]Event, error) {
	typ, batch, ok := RouteType(req.Route)
	if !ok {
		return nil, mapping.Errorf(mapping.CodeNotFound,
			"/v1/%s is not a Tracking API route; use identify, track, page, screen, group, alias, batch or import", truncate(req.Route, 40))
	}
	t := translator{source: req.Source, receivedAt: req.ReceivedAt, headerKey: req.WriteKey}
	if t.source == "" {
		t.source = mapping.SourceSegmentAPI
	}
	if !batch {
		if len(body) > MaxEventBytes {
			return nil, mapping.Errorf(mapping.CodeTooLarge, "the call is %d bytes; Segment accepts at most 32 KB per call: trim its properties and traits", len(body))
		}
		if err := checkJSON(body); err != nil {
			return nil, err
		}
		if !isObject(body) {
			return nil, mapping.Errorf(mapping.CodeInvalid, "the body of /v1/%s must be one JSON object (the event)", req.Route)
		}
		return []Event{t.event(body, typ)}, nil
	}

	if len(body) > MaxBatchBytes {
		return nil, mapping.Errorf(mapping.CodeTooLarge, "the batch is %d bytes; Segment accepts at most 500 KB per batch: split it", len(body))
	}
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	if !isObject(body) {
		return nil, mapping.Errorf(mapping.CodeInvalid, `the body of /v1/%s must be a JSON object {"batch":[...events]}`, req.Route)
	}
	env, _ := splitObject(body)
	elems, ok := splitArray(env["batch"])
	if !ok {
		return nil, mapping.Errorf(mapping.CodeInvalid, `the body has no "batch" array; send {"batch":[...events]}`)
	}
	if len(elems) > MaxBatchEvents {
		return nil, mapping.Errorf(mapping.CodeTooLarge, "the batch holds %d events; Segment accepts at most %d per batch: split it", len(elems), MaxBatchEvents)
	}
	if t.env.context, ok = decodeObject(env["context"]); !ok {
		return nil, mapping.Errorf(mapping.CodeInvalid, `the batch "context" must be a JSON object`)
	}
	if t.env.integrations, ok = decodeObject(env["integrations"]); !ok {
		return nil, mapping.Errorf(mapping.CodeInvalid, `the batch "integrations" must be a JSON object`)
	}
	if _, ok := stringValue(env["sentAt"]); !ok && !absent(env["sentAt"]) {
		return nil, mapping.Errorf(mapping.CodeInvalid, `the batch "sentAt" must be an RFC 3339 string`)
	}
	t.env.sentAt = env["sentAt"]
	if key, ok := stringValue(env["writeKey"]); ok {
		t.env.writeKey = key
	} else if !absent(env["writeKey"]) {
		return nil, mapping.Errorf(mapping.CodeInvalid, `the batch "writeKey" must be a string`)
	}

	events := make([]Event, 0, len(elems))
	decoded := 0
	for i, raw := range elems {
		if len(raw) > MaxEventBytes {
			return nil, mapping.Errorf(mapping.CodeTooLarge, "event %d of the batch is %d bytes; Segment accepts at most 32 KB per event: trim its properties and traits", i, len(raw))
		}
		if !isObject(raw) {
			return nil, mapping.Errorf(mapping.CodeInvalid, "event %d of the batch is not a JSON object; every element of \"batch\" must be an event object", i)
		}
		ev := t.event(raw, "")
		// The batch context is copied into every event: bound what a small
		// request can make the bridge allocate and store.
		if decoded += len(ev.Message.Raw); decoded > maxDecodedBatchBytes {
			return nil, mapping.Errorf(mapping.CodeTooLarge, "the batch context, merged into each event, makes the batch over %s; send a smaller batch context or fewer events per batch", formatBytes(maxDecodedBatchBytes))
		}
		events = append(events, ev)
	}
	return events, nil
}

// maxDecodedBatchBytes bounds the events of one batch once the batch context
// is merged into each of them (Raw, summed). analytics-go's batch context
// (the library) adds about 60 bytes per event.
const maxDecodedBatchBytes = 4 * MaxBatchBytes

// Forwarded reports whether the raw message carries the marker the bridge puts
// on what it sends itself, "context":{"bridge":{"forwarded":true}}. A message
// that carries it is stored but never forwarded again, so nothing loops.
func Forwarded(raw []byte) bool {
	if !json.Valid(raw) {
		return false
	}
	f, _ := splitObject(raw)
	ctx, _ := decodeObject(f["context"])
	return forwardedContext(ctx)
}

func forwardedContext(ctx object) bool {
	bridge, _ := decodeObject(ctx["bridge"])
	return string(bridge["forwarded"]) == "true"
}

// envelope is what a batch carries besides its events, shared by all of them.
type envelope struct {
	context      object
	integrations object
	sentAt       json.RawMessage
	writeKey     string
}

// translator turns one event's bytes into an Event.
type translator struct {
	source     mapping.Source
	receivedAt time.Time
	headerKey  string
	env        envelope
	// delivered is true for webhook deliveries: Segment already stamped and
	// corrected the timestamps, so they are read, not rewritten.
	delivered bool
}

// rejection keeps the first reason an event cannot be applied.
type rejection string

func (r *rejection) add(reason string) {
	if *r == "" {
		*r = rejection(reason)
	}
}

// event translates one event: raw must be a valid JSON object (checked by
// the caller). route is the type the route implies, "" for a batch element
// or a webhook delivery (then the event's type counts). The event's fields f
// are edited in place and become Message.Raw.
func (t *translator) event(raw []byte, route string) Event {
	f, _ := splitObject(raw)
	var why rejection
	ev := Event{WriteKey: t.writeKey(f)}
	m := &ev.Message
	m.Source, m.ReceivedAt = t.source, t.receivedAt
	m.Type = eventType(f, route, &why)
	if m.Type == "delete" && !t.delivered {
		// Deletions are Segment's to send (regulations, through the webhook);
		// browser write keys are public, so the Tracking API never deletes.
		why.add(ReasonDeleteNotAccepted)
	}
	m.UserID = idField(f, "userId", ReasonBadUserIDType, &why)
	m.AnonymousID = idField(f, "anonymousId", ReasonBadAnonymousIDType, &why)
	if m.Type == "alias" {
		m.PreviousID = idField(f, "previousId", ReasonBadPreviousIDType, &why)
	}

	// A deletion is carried out whatever shape its optional fields take
	// (Segment's own examples vary): only its identifiers can refuse it.
	optional := &why
	if m.Type == "delete" {
		optional = new(rejection)
	}
	ctx := t.mergeContext(f, optional)
	m.Impersonating = string(ctx["impersonating"]) == "true"
	m.Forwarded = forwardedContext(ctx)
	m.Traits, m.Email = traitsAndEmail(f, ctx, m.Type, optional)
	m.Event = eventName(f, m.Type, &why)
	m.ID = messageIDField(f, ev.WriteKey, raw, optional)
	if optional != &why {
		f["messageId"] = quote(m.ID) // a delete kept under a derived ID carries it
	}
	checkIdentities(m, &why)
	m.Rejected = string(why)

	if t.delivered {
		m.Timestamp, m.Notes = deliveredTime(f, t.receivedAt)
	} else {
		m.Timestamp, m.Notes = t.stampTimes(f)
	}
	m.Raw = encodeObject(f)
	return ev
}

// writeKey returns the event's write key (the header's, else the event's,
// else the batch's; none for webhook deliveries) and removes it from f, so
// stored messages do not carry it.
func (t *translator) writeKey(f object) string {
	key, _ := stringValue(f["writeKey"])
	delete(f, "writeKey")
	switch {
	case t.headerKey != "" || t.delivered:
		return t.headerKey
	case key != "":
		return key
	default:
		return t.env.writeKey
	}
}

// eventType returns the route's type, written into f if the event says
// otherwise, or else the event's own type, which must be a known one.
func eventType(f object, route string, why *rejection) string {
	typ, _ := stringValue(f["type"])
	switch {
	case route != "":
		if typ != route {
			f["type"] = quote(route)
		}
		return route
	case !knownType(typ):
		why.add(ReasonUnknownType)
	}
	return typ
}

// idField reads an identifier field, rewriting a number to its decimal
// string in f; a value of another type adds reason, and a number that is not
// a plain integer of at most maxNumericIDDigits digits adds
// ReasonBadNumericID; both read as "".
func idField(f object, name, reason string, why *rejection) string {
	raw := f[name]
	v, number, ok := idValue(raw)
	if !ok {
		if isNumber(raw) {
			why.add(ReasonBadNumericID)
		} else {
			why.add(reason)
		}
		return ""
	}
	if number {
		f[name] = quote(v)
	}
	return v
}

// mergeContext merges the batch context into the event's and returns the
// result (nil if the event's context is not an object); it merges the
// batch integrations too.
func (t *translator) mergeContext(f object, why *rejection) object {
	if len(t.env.integrations) > 0 {
		if own, ok := decodeObject(f["integrations"]); ok {
			f["integrations"] = encodeObject(merge(own, t.env.integrations))
		}
	}
	ctx, ok := decodeObject(f["context"])
	if !ok {
		why.add(ReasonBadContext)
		return nil
	}
	if len(t.env.context) > 0 {
		ctx = merge(ctx, t.env.context)
		f["context"] = encodeObject(ctx)
	}
	return ctx
}

// traitsAndEmail returns the person's traits (an identify's traits, else
// context.traits: a group's traits describe the group) and email (from those
// traits, or for an identify from context.traits too).
func traitsAndEmail(f, ctx object, typ string, why *rejection) (map[string]any, string) {
	raw := ctx["traits"]
	if typ == "identify" {
		raw = f["traits"]
	}
	traits, ok := traitsValue(raw)
	if !ok {
		why.add(ReasonBadTraits)
	}
	email, _ := traits["email"].(string)
	if email == "" && typ == "identify" {
		ctxTraits, _ := decodeObject(ctx["traits"])
		email, _ = stringValue(ctxTraits["email"])
	}
	return traits, email
}

// eventName returns a track's event, which it must have, or a page's or
// screen's name.
func eventName(f object, typ string, why *rejection) string {
	switch typ {
	case "track":
		name, _ := stringValue(f["event"])
		if strings.TrimSpace(name) == "" {
			why.add(ReasonMissingEvent)
		}
		return name
	case "page", "screen":
		name, _ := stringValue(f["name"])
		return name
	}
	return ""
}

// messageIDField returns the event's messageId, or a deterministic one
// (written into f when the event had none) when it is missing, not a string
// or too long.
func messageIDField(f object, writeKey string, raw []byte, why *rejection) string {
	id, isString := stringValue(f["messageId"])
	switch {
	case !isString && !absent(f["messageId"]):
		why.add(ReasonBadMessageIDType)
		return messageID(writeKey, raw)
	case id == "":
		id = messageID(writeKey, raw)
		f["messageId"] = quote(id)
	case len(id) > mapping.MaxMessageIDLength:
		why.add(ReasonMessageIDTooLong)
		return messageID(writeKey, raw)
	}
	return id
}

// checkIdentities requires a userId or an anonymousId (and an alias's
// previousId), each usable as an identifier.
func checkIdentities(m *mapping.Message, why *rejection) {
	if strings.TrimSpace(m.UserID) == "" && strings.TrimSpace(m.AnonymousID) == "" {
		why.add(ReasonMissingIdentity)
	}
	for _, v := range [...]string{m.UserID, m.AnonymousID, m.PreviousID} {
		if reason := idProblem(v); reason != "" {
			why.add(reason)
		}
	}
	if m.Type == "alias" && strings.TrimSpace(m.PreviousID) == "" {
		why.add(ReasonMissingPreviousID)
	}
}

// idProblem returns why a present identifier cannot be used, or "".
// Empty values are left to the missing-identity checks.
func idProblem(v string) string {
	if utf8.RuneCountInString(v) > mapping.MaxIdentifierLength {
		return ReasonIDTooLong
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return ReasonIDControl
		}
	}
	return ""
}

// traitsValue decodes a traits object; missing, null and [] (how PHP
// encodes an empty map) give nil, true. Numbers are json.Number, so integers
// beyond 2^53 (Snowflake IDs) keep every digit in the profile and in what is
// forwarded.
func traitsValue(raw json.RawMessage) (map[string]any, bool) {
	if absent(raw) || emptyArray(raw) {
		return nil, true
	}
	if raw[0] != '{' {
		return nil, false
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var traits map[string]any
	if err := d.Decode(&traits); err != nil {
		return nil, false
	}
	return traits, true
}

// messageID derives the ID of an event sent without one from the write key
// and the event's bytes as received, so a retried request deduplicates.
func messageID(writeKey string, raw []byte) string {
	h := sha256.New()
	h.Write([]byte(writeKey))
	h.Write([]byte{0})
	h.Write(raw)
	return "bridge-" + hex.EncodeToString(h.Sum(nil))[:32]
}
