package segment

import (
	"encoding/json"
	"time"
)

// stampTimes applies Segment's timestamp rules to a Tracking API event and
// returns its corrected time:
//
//   - originalTimestamp is the client's timestamp (or its originalTimestamp) as sent;
//   - receivedAt is when the bridge received the request;
//   - with both sentAt (the event's, else the batch's) and an original
//     timestamp, timestamp = receivedAt - (sentAt - originalTimestamp),
//     correcting the client's clock; otherwise the original timestamp, or
//     receivedAt when there is none (or it is not RFC 3339);
//   - a timestamp in the future is clamped to receivedAt.
func (t *translator) stampTimes(f object) time.Time {
	origRaw := f["timestamp"]
	if absent(origRaw) {
		origRaw = f["originalTimestamp"]
	}
	sentRaw := f["sentAt"]
	if absent(sentRaw) && !absent(t.env.sentAt) {
		sentRaw = t.env.sentAt
		f["sentAt"] = sentRaw
	}
	orig, hasOrig := parseTime(origRaw)
	sent, hasSent := parseTime(sentRaw)

	ts := t.receivedAt
	switch {
	case hasOrig && hasSent:
		ts = orig.Add(t.receivedAt.Sub(sent))
	case hasOrig:
		ts = orig
	}
	if ts.After(t.receivedAt) {
		ts = t.receivedAt
	}
	ts = ts.UTC()

	if !absent(origRaw) {
		f["originalTimestamp"] = origRaw
	}
	f["timestamp"] = quote(ts.Format(time.RFC3339Nano))
	f["receivedAt"] = quote(t.receivedAt.UTC().Format(time.RFC3339Nano))
	return ts
}

// deliveredTime returns the time of an event Segment delivered: its
// timestamp (already corrected by Segment), else originalTimestamp, else
// receivedAt, else now.
func deliveredTime(f object, now time.Time) time.Time {
	for _, name := range [...]string{"timestamp", "originalTimestamp", "receivedAt"} {
		if ts, ok := parseTime(f[name]); ok {
			return ts.UTC()
		}
	}
	return now.UTC()
}

// parseTime reads an RFC 3339 string with any offset and optional fractional seconds.
func parseTime(raw json.RawMessage) (time.Time, bool) {
	s, ok := stringValue(raw)
	if !ok {
		return time.Time{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return ts, true
}
