package segment

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTimeString(t *testing.T) {
	utc := func(s string) time.Time {
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	tests := []struct {
		in    string
		want  time.Time
		zoned bool
	}{
		{"2024-05-14T09:00:00Z", utc("2024-05-14T09:00:00Z"), true},
		{"2024-05-14T11:00:00+02:00", utc("2024-05-14T09:00:00Z"), true},
		{"2024-05-14T11:00:00+0200", utc("2024-05-14T09:00:00Z"), true},
		{"2024-05-14T04:30:00-0430", utc("2024-05-14T09:00:00Z"), true},
		{"2024-05-14T11:00:00+02", utc("2024-05-14T09:00:00Z"), true},
		{"2024-05-14T09:00:00", utc("2024-05-14T09:00:00Z"), false},
		{"2024-05-14 09:00:00", utc("2024-05-14T09:00:00Z"), false},
		{"2024-05-14t09:00:00z", utc("2024-05-14T09:00:00Z"), true},
		{"2024-05-14T09:00", utc("2024-05-14T09:00:00Z"), false},
		{"2024-05-14", utc("2024-05-14T00:00:00Z"), false},
		{"2024-05-14T09:00:00.5Z", utc("2024-05-14T09:00:00.5Z"), true},
		{"2024-05-14T09:00:00,5Z", utc("2024-05-14T09:00:00.5Z"), true},
		{"2024-05-14T09:00:00.123", utc("2024-05-14T09:00:00.123Z"), false},
		{"2024-05-14T09:00:00.123456", utc("2024-05-14T09:00:00.123456Z"), false},
		{"2024-05-14T09:00:00.123456789012+00:00", utc("2024-05-14T09:00:00.123456789Z"), true},
	}
	for _, tt := range tests {
		got, zoned, ok := parseTimeString(tt.in)
		if !ok || !got.Equal(tt.want) || zoned != tt.zoned {
			t.Errorf("parseTimeString(%q) = %v, zoned %v, ok %v; want %v, zoned %v", tt.in, got, zoned, ok, tt.want, tt.zoned)
		}
	}
	for _, bad := range []string{"", "yesterday", "14/05/2024 09:00", "2024-05-14X09:00:00", "2024-05-14T25:00:00Z",
		"2024-05-14T09:00:00+2", "2024-05-14T09:00:00+02:0", "2024-05-14T09:00:00+ab:cd", "1715677200", "2024-05-14T"} {
		if got, _, ok := parseTimeString(bad); ok {
			t.Errorf("parseTimeString(%q) = %v, want unreadable", bad, got)
		}
	}
}

// TestTimestampDialects decodes the wire fixtures of each timestamp form
// (testdata/segment/TIMESTAMPS.md says where they come from).
func TestTimestampDialects(t *testing.T) {
	tests := []struct {
		fixture, route string
		want           []time.Time
		wantNote       string // a note every message must carry, or "" for none
	}{
		{
			// Both local (UTC+2): 11:00:07.123456 - 10:59:58.5 = 8.623456 s before receipt.
			fixture: "api_batch_flutter_local.json", route: "b",
			want: []time.Time{receivedAt.Add(-8623456 * time.Microsecond), receivedAt.Add(-5873333 * time.Microsecond)},
		},
		{
			// sentAt in UTC, timestamp local in Europe/Berlin: 10:59:58.5 there is 08:59:58.5Z.
			fixture: "api_batch_flutter_1_1_1.json", route: "b",
			want: []time.Time{receivedAt.Add(-8623 * time.Millisecond)},
		},
		{
			fixture: "api_track_no_zone.json", route: "track",
			want: []time.Time{time.Date(2019, 3, 2, 17, 45, 12, 0, time.UTC)},
		},
		{
			fixture: "api_track_basic_offset.json", route: "track",
			want: []time.Time{receivedAt.Add(-10 * time.Second)},
		},
		{
			fixture: "api_track_long_fraction.json", route: "track",
			want: []time.Time{receivedAt.Add(-(8*time.Second + 376543211*time.Nanosecond))},
		},
		{
			fixture: "api_track_unreadable_timestamp.json", route: "track",
			want:     []time.Time{receivedAt},
			wantNote: NoteUnreadableTimestamp + `: timestamp "14/05/2024 09:00" is not a date and time`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join("..", "testdata", "segment", tt.fixture))
			if err != nil {
				t.Fatal(err)
			}
			events := decode(t, tt.route, "wk", string(body))
			if len(events) != len(tt.want) {
				t.Fatalf("got %d events, want %d", len(events), len(tt.want))
			}
			for i, ev := range events {
				m := ev.Message
				if m.Rejected != "" {
					t.Errorf("event %d: rejected %q, want applied", i, m.Rejected)
				}
				if !m.Timestamp.Equal(tt.want[i]) {
					t.Errorf("event %d: got timestamp %v, want %v", i, m.Timestamp, tt.want[i])
				}
				if got, want := rawFields(t, m.Raw)["timestamp"], tt.want[i].UTC().Format(time.RFC3339Nano); got != want {
					t.Errorf("event %d: got Raw timestamp %v, want %v", i, got, want)
				}
				switch {
				case tt.wantNote == "" && len(m.Notes) > 0:
					t.Errorf("event %d: got notes %q, want none", i, m.Notes)
				case tt.wantNote != "" && (len(m.Notes) != 1 || !strings.HasPrefix(m.Notes[0], tt.wantNote)):
					t.Errorf("event %d: got notes %q, want one beginning %q", i, m.Notes, tt.wantNote)
				}
			}
		})
	}
}

// TestTimestampOneZoneWithoutContextZone: with one of sentAt and timestamp
// zone-less and no context.timezone, the zone-less one is read as UTC, as
// Segment reads it.
func TestTimestampOneZoneWithoutContextZone(t *testing.T) {
	m := decodeOne(t, "track", `{"userId":"u","event":"E","timestamp":"2024-05-14T09:00:00","sentAt":"2024-05-14T09:00:04Z"}`)
	if want := receivedAt.Add(-4 * time.Second); !m.Timestamp.Equal(want) {
		t.Errorf("got timestamp %v, want %v", m.Timestamp, want)
	}
}

func TestUnreadableTimes(t *testing.T) {
	tests := []struct {
		name, body string
		want       time.Time
		notes      []string // the start of each note, after NoteUnreadableTimestamp
	}{
		{"unreadable sentAt: the timestamp as sent", `{"timestamp":"2024-05-14T09:00:00Z","sentAt":"soon"}`,
			time.Date(2024, 5, 14, 9, 0, 0, 0, time.UTC), []string{`: sentAt "soon"`}},
		{"a number", `{"timestamp":1715677200,"sentAt":"2024-05-14T09:00:04Z"}`, receivedAt, []string{`: timestamp 1715677200`}},
		{"both", `{"originalTimestamp":"x","sentAt":"y"}`, receivedAt, []string{`: originalTimestamp "x"`, `: sentAt "y"`}},
		{"null is absent, not unreadable", `{"timestamp":null}`, receivedAt, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := decodeOne(t, "track", strings.Replace(tt.body, "{", `{"userId":"u","event":"E",`, 1))
			if !m.Timestamp.Equal(tt.want) {
				t.Errorf("got timestamp %v, want %v", m.Timestamp, tt.want)
			}
			if len(m.Notes) != len(tt.notes) {
				t.Fatalf("got notes %q, want %d", m.Notes, len(tt.notes))
			}
			for i, n := range tt.notes {
				if !strings.HasPrefix(m.Notes[i], NoteUnreadableTimestamp+n) {
					t.Errorf("note %d: got %q, want it to begin %q", i, m.Notes[i], NoteUnreadableTimestamp+n)
				}
			}
		})
	}
}

func TestDeliveredTimeNotes(t *testing.T) {
	events, err := DecodeWebhook([]byte(`{"type":"track","event":"E","userId":"u","messageId":"m1","timestamp":"when","receivedAt":"2024-05-14T09:00:01Z"}`), receivedAt)
	if err != nil {
		t.Fatal(err)
	}
	m := events[0].Message
	if want := time.Date(2024, 5, 14, 9, 0, 1, 0, time.UTC); !m.Timestamp.Equal(want) {
		t.Errorf("got timestamp %v, want %v", m.Timestamp, want)
	}
	if len(m.Notes) != 1 || !strings.HasPrefix(m.Notes[0], NoteUnreadableTimestamp+`: timestamp "when"`) {
		t.Errorf("got notes %q, want one about the timestamp", m.Notes)
	}
}

// TestTimestampOneZoneInContextZone: when only one of sentAt and timestamp
// has a zone, the other is read in context.timezone, whichever it is.
func TestTimestampOneZoneInContextZone(t *testing.T) {
	for _, body := range []string{
		`{"timestamp":"2024-05-14T10:59:58","sentAt":"2024-05-14T09:00:06Z","context":{"timezone":"Europe/Berlin"}}`,
		`{"timestamp":"2024-05-14T08:59:58Z","sentAt":"2024-05-14T11:00:06","context":{"timezone":"Europe/Berlin"}}`,
		`{"timestamp":"2024-05-14T04:59:58","sentAt":"2024-05-14T09:00:06Z","context":{"timezone":"America/New_York"}}`,
	} {
		m := decodeOne(t, "track", strings.Replace(body, "{", `{"userId":"u","event":"E",`, 1))
		if want := receivedAt.Add(-8 * time.Second); !m.Timestamp.Equal(want) {
			t.Errorf("%s: got timestamp %v, want %v", body, m.Timestamp, want)
		}
	}
}
