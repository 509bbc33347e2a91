package segment

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // context.timezone names are read the same on every host
)

// NoteUnreadableTimestamp begins the note (mapping.Message.Notes) on an event
// whose timestamp, originalTimestamp or sentAt is present but is not a date
// and time the bridge can read; the rest of the note says which field and
// what the bridge used instead. Counters use it as their label.
const NoteUnreadableTimestamp = "unreadable_timestamp"

// stampTimes applies Segment's timestamp rules to a Tracking API event and
// returns its corrected time, with a note for each time field present but
// unreadable (see parseTimeString for what is read):
//
//   - originalTimestamp is the client's timestamp (or its originalTimestamp) as sent;
//   - receivedAt is when the bridge received the request;
//   - with both sentAt (the event's, else the batch's) and an original
//     timestamp, timestamp = receivedAt - (sentAt - originalTimestamp),
//     correcting the client's clock. Two times without a zone share one (the
//     device's: Segment's Flutter library before 1.1.1 sends both in local
//     time), so their difference holds; when only one of the two has a zone
//     (Flutter 1.1.1 sends sentAt in UTC, timestamp in local time) the other
//     is read in the zone context.timezone names, where it names one;
//   - otherwise the original timestamp, or receivedAt when there is none or
//     it is unreadable;
//   - a timestamp in the future is clamped to receivedAt.
func (t *translator) stampTimes(f object) (time.Time, []string) {
	origName := "timestamp"
	origRaw := f["timestamp"]
	if absent(origRaw) {
		origName, origRaw = "originalTimestamp", f["originalTimestamp"]
	}
	sentRaw := f["sentAt"]
	if absent(sentRaw) && !absent(t.env.sentAt) {
		sentRaw = t.env.sentAt
		f["sentAt"] = sentRaw
	}
	orig, origZoned, hasOrig := parseTime(origRaw)
	sent, sentZoned, hasSent := parseTime(sentRaw)
	var notes []string
	if !hasOrig && !absent(origRaw) {
		notes = append(notes, unreadableNote(origName, origRaw, "receivedAt is the event time"))
	}
	if !hasSent && !absent(sentRaw) {
		notes = append(notes, unreadableNote("sentAt", sentRaw, "the client's clock is not corrected"))
	}

	ts := t.receivedAt
	switch {
	case hasOrig && hasSent:
		if origZoned != sentZoned {
			if loc := contextLocation(f); loc != nil {
				if !origZoned {
					orig = inLocation(orig, loc)
				} else {
					sent = inLocation(sent, loc)
				}
			}
		}
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
	return ts, notes
}

// deliveredTime returns the time of an event Segment delivered: its
// timestamp (already corrected by Segment), else originalTimestamp, else
// receivedAt, else now; with a note for each of those fields that is present
// but unreadable.
func deliveredTime(f object, now time.Time) (time.Time, []string) {
	var notes []string
	for _, name := range [...]string{"timestamp", "originalTimestamp", "receivedAt"} {
		if ts, _, ok := parseTime(f[name]); ok {
			return ts.UTC(), notes
		}
		if !absent(f[name]) {
			notes = append(notes, unreadableNote(name, f[name], "the next time field is used"))
		}
	}
	return now.UTC(), notes
}

// unreadableNote is the note on a time field that is present but unreadable.
func unreadableNote(field string, raw json.RawMessage, instead string) string {
	return fmt.Sprintf("%s: %s %s is not a date and time the bridge can read (ISO 8601, as Segment's libraries send); %s",
		NoteUnreadableTimestamp, field, truncate(string(raw), 64), instead)
}

// contextLocation returns the zone the event's context.timezone names (an
// IANA name such as "Europe/Berlin", as Segment's mobile libraries and
// analytics.js send it), or nil.
func contextLocation(f object) *time.Location {
	ctx, _ := decodeObject(f["context"])
	name, _ := stringValue(ctx["timezone"])
	if name == "" || name == "Local" || len(name) > 64 {
		return nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil
	}
	return loc
}

// inLocation reads the wall clock of ts (a time read without a zone, so in
// UTC) in loc instead.
func inLocation(ts time.Time, loc *time.Location) time.Time {
	y, mo, d := ts.Date()
	h, mi, s := ts.Clock()
	return time.Date(y, mo, d, h, mi, s, ts.Nanosecond(), loc)
}

// parseTime reads a JSON string with parseTimeString.
func parseTime(raw json.RawMessage) (ts time.Time, zoned, ok bool) {
	s, isString := stringValue(raw)
	if !isString {
		return time.Time{}, false, false
	}
	return parseTimeString(s)
}

// parseTimeString reads a date and time as Segment's libraries and
// historical imports write them (ISO 8601 / RFC 3339): a date, "T" (or "t",
// or a space), hours and minutes, optionally seconds with any number of
// fractional digits (after "." or ","), and a zone: "Z", an offset
// "+02:00", a basic offset "+0200" or hours alone "+02", or none. A time
// without a zone is read as UTC, as Segment reads it; zoned says whether
// there was one. A date alone is midnight UTC.
func parseTimeString(s string) (ts time.Time, zoned, ok bool) {
	s = strings.TrimSpace(s)
	if len(s) < len("2006-01-02") {
		return time.Time{}, false, false
	}
	date, rest := s[:10], s[10:]
	if rest == "" {
		ts, err := time.Parse(time.DateOnly, date)
		return ts, false, err == nil
	}
	if c := rest[0]; c != 'T' && c != 't' && c != ' ' {
		return time.Time{}, false, false
	}
	clock := rest[1:]
	zone := ""
	if n := len(clock); n > 0 && (clock[n-1] == 'Z' || clock[n-1] == 'z') {
		clock, zone = clock[:n-1], "Z"
	} else if i := strings.LastIndexAny(clock, "+-"); i >= 0 {
		clock, zone = clock[:i], clock[i:]
		if zone, ok = extendedOffset(zone); !ok {
			return time.Time{}, false, false
		}
	}
	if len(clock) == len("15:04") {
		clock += ":00"
	}
	layout := "2006-01-02T15:04:05.999999999"
	if zone != "" {
		layout += "Z07:00"
	}
	ts, err := time.Parse(layout, date+"T"+clock+zone)
	if err != nil {
		return time.Time{}, false, false
	}
	return ts, zone != "", true
}

// extendedOffset rewrites an offset "+hh:mm", "+hhmm" or "+hh" (or with
// "-") as "+hh:mm"; ok is false for anything else.
func extendedOffset(z string) (string, bool) {
	digits := strings.ReplaceAll(z[1:], ":", "")
	for _, c := range digits {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	switch {
	case len(digits) == 2 && len(z) == 3:
		return z + ":00", true
	case len(digits) == 4 && (len(z) == 5 || len(z) == 6 && z[3] == ':'):
		return z[:1] + digits[:2] + ":" + digits[2:], true
	}
	return "", false
}
