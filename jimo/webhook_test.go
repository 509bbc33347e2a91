package jimo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "jimo", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

func TestWebhookMessage(t *testing.T) {
	blocklist := mapping.NewBlocklist(nil)
	tests := []struct {
		name    string
		fixture string
		mode    Mode
		want    mapping.Message // ID, Raw and ReceivedAt are checked apart
	}{
		{
			name: "tour completed, shared", fixture: "webhook_tour_completed.json", mode: ModeShared,
			want: mapping.Message{
				Source: mapping.SourceJimoWebhook, Type: TypeJimoEvent, Event: "tour.completed",
				JimoTokenOrUserID: "0f8fad5b-d9cb-469f-a165-70867728950e", Email: "ada@example.com",
				Timestamp: time.UnixMilli(1763900000123).UTC(),
			},
		},
		{
			name: "tour completed, derived", fixture: "webhook_tour_completed.json", mode: ModeDerived,
			want: mapping.Message{
				Source: mapping.SourceJimoWebhook, Type: TypeJimoEvent, Event: "tour.completed",
				JimoToken: "0f8fad5b-d9cb-469f-a165-70867728950e", Email: "ada@example.com",
				Timestamp: time.UnixMilli(1763900000123).UTC(),
			},
		},
		{
			name: "numeric ids", fixture: "webhook_survey_answered.json", mode: ModeShared,
			want: mapping.Message{
				Source: mapping.SourceJimoWebhook, Type: TypeJimoEvent, Event: "survey.completed",
				JimoTokenOrUserID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Email: "grace@example.com",
				Timestamp: time.UnixMilli(1763900100456).UTC(),
			},
		},
		{
			name: "missing identify token", fixture: "webhook_missing_token.json", mode: ModeShared,
			want: mapping.Message{
				Source: mapping.SourceJimoWebhook, Type: TypeJimoEvent, Event: "tour.started",
				Timestamp: time.UnixMilli(1763900200789).UTC(), Rejected: RejectedMissingIdentifyToken,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := readFixture(t, tt.fixture)
			w, err := DecodeWebhook(body)
			if err != nil {
				t.Fatalf("DecodeWebhook: %v", err)
			}
			got := w.Message(tt.mode, blocklist, testReceivedAt)
			if !strings.HasPrefix(got.ID, "jimo-webhook-") {
				t.Errorf("ID = %q, want prefix jimo-webhook-", got.ID)
			}
			if string(got.Raw) != string(body) {
				t.Errorf("Raw = %s, want the body as received", got.Raw)
			}
			if !got.ReceivedAt.Equal(testReceivedAt) {
				t.Errorf("ReceivedAt = %v, want %v", got.ReceivedAt, testReceivedAt)
			}
			got.ID, got.Raw, got.ReceivedAt = "", nil, time.Time{}
			if got.Source != tt.want.Source || got.Type != tt.want.Type || got.Event != tt.want.Event ||
				got.JimoTokenOrUserID != tt.want.JimoTokenOrUserID || got.UserID != tt.want.UserID || got.JimoToken != tt.want.JimoToken || got.Email != tt.want.Email ||
				!got.Timestamp.Equal(tt.want.Timestamp) || got.Rejected != tt.want.Rejected || got.UserIDWarning != "" {
				t.Errorf("message:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestWebhookMessageID(t *testing.T) {
	blocklist := mapping.NewBlocklist(nil)
	id := func(body string) string {
		t.Helper()
		w, err := DecodeWebhook([]byte(body))
		if err != nil {
			t.Fatalf("DecodeWebhook(%s): %v", body, err)
		}
		return w.Message(ModeShared, blocklist, time.Now()).ID
	}
	base := `{"event":"tour.completed","time":1763900000123,"experience":{"id":"e1"},"jimer":{"uid":"u1","identifyToken":"0f8fad5b-d9cb-469f-a165-70867728950e"}}`
	reordered := `{"jimer":{"identifyToken":"0f8fad5b-d9cb-469f-a165-70867728950e","uid":"u1","extra":1},"experience":{"id":"e1","name":"changed"},"time":1763900000123,"event":"tour.completed","version":"0"}`
	if a, b := id(base), id(base); a != b {
		t.Errorf("retried delivery: got IDs %q and %q, want equal", a, b)
	}
	if a, b := id(base), id(reordered); a != b {
		t.Errorf("same event re-encoded: got IDs %q and %q, want equal", a, b)
	}
	for name, other := range map[string]string{
		"other time":       strings.Replace(base, "1763900000123", "1763900000124", 1),
		"other event":      strings.Replace(base, "tour.completed", "tour.started", 1),
		"other experience": strings.Replace(base, `"e1"`, `"e2"`, 1),
		"other jimer":      strings.Replace(base, `"u1"`, `"u2"`, 1),
	} {
		if id(base) == id(other) {
			t.Errorf("%s: got the same ID, want a different one", name)
		}
	}
	noTime := `{"event":"tour.completed","jimer":{"identifyToken":"t"}}`
	if a, b := id(noTime), id(noTime); a != b {
		t.Errorf("retried delivery without time: got IDs %q and %q, want equal", a, b)
	}
}

func TestDecodeWebhookLenient(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		wantErr      bool
		wantRejected string
		wantTime     bool
	}{
		{name: "not an object", body: `[1]`, wantErr: true},
		{name: "malformed", body: `{"event":`, wantErr: true},
		{name: "time as string", body: `{"event":"e","time":"1763900000123","jimer":{"identifyToken":"0f8fad5b-d9cb-469f-a165-70867728950e"}}`, wantTime: true},
		{name: "time as float", body: `{"event":"e","time":1.763900000123e12,"jimer":{"identifyToken":"0f8fad5b-d9cb-469f-a165-70867728950e"}}`, wantTime: true},
		{name: "time negative", body: `{"event":"e","time":-5,"jimer":{"identifyToken":"0f8fad5b-d9cb-469f-a165-70867728950e"}}`},
		{name: "time huge", body: `{"event":"e","time":1e300,"jimer":{"identifyToken":"0f8fad5b-d9cb-469f-a165-70867728950e"}}`},
		{name: "jimer not an object", body: `{"event":"e","time":1,"jimer":"x"}`, wantRejected: RejectedMissingIdentifyToken, wantTime: true},
		{name: "no jimer", body: `{"event":"e","time":1}`, wantRejected: RejectedMissingIdentifyToken, wantTime: true},
		{name: "blank token", body: `{"event":"e","time":1,"jimer":{"identifyToken":"  "}}`, wantRejected: RejectedMissingIdentifyToken, wantTime: true},
		{name: "no event", body: `{"time":1,"jimer":{"identifyToken":"0f8fad5b-d9cb-469f-a165-70867728950e"}}`, wantRejected: RejectedMissingEvent, wantTime: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := DecodeWebhook([]byte(tt.body))
			if tt.wantErr {
				if mapping.ErrorCode(err) != mapping.CodeInvalid || err == nil {
					t.Errorf("DecodeWebhook: got %v, want an invalid error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeWebhook: got %v, want no error", err)
			}
			msg := w.Message(ModeShared, mapping.NewBlocklist(nil), testReceivedAt)
			if msg.Rejected != tt.wantRejected {
				t.Errorf("Rejected = %q, want %q", msg.Rejected, tt.wantRejected)
			}
			if gotTime := !msg.Timestamp.Equal(testReceivedAt); gotTime != tt.wantTime {
				t.Errorf("Timestamp = %v: from the body %v, want %v", msg.Timestamp, gotTime, tt.wantTime)
			}
		})
	}
}

func TestWebhookGuessableTokenWarns(t *testing.T) {
	w, err := DecodeWebhook([]byte(`{"event":"tour.completed","time":1763900000123,"jimer":{"identifyToken":"12345"}}`))
	if err != nil {
		t.Fatal(err)
	}
	msg := w.Message(ModeShared, mapping.NewBlocklist(nil), testReceivedAt)
	if msg.JimoTokenOrUserID != "12345" || !strings.Contains(msg.UserIDWarning, "all digits") {
		t.Errorf("message: got token %q warning %q, want 12345 with the guessable warning", msg.JimoTokenOrUserID, msg.UserIDWarning)
	}
	if msg = w.Message(ModeDerived, mapping.NewBlocklist(nil), testReceivedAt); msg.UserIDWarning != "" {
		t.Errorf("derived mode: got warning %q, want none", msg.UserIDWarning)
	}
}

func TestCheckWebhookSecret(t *testing.T) {
	const secret = "s3cret-webhook-value"
	tests := []struct {
		name       string
		configured string
		query      string
		auth       string
		wantOK     bool
		wantIn     string
	}{
		{name: "query", configured: secret, query: secret, wantOK: true},
		{name: "bearer", configured: secret, auth: "Bearer " + secret, wantOK: true},
		{name: "bearer any case", configured: secret, auth: "bearer  " + secret, wantOK: true},
		{name: "wrong query", configured: secret, query: "nope", wantIn: "wrong"},
		{name: "wrong bearer", configured: secret, auth: "Bearer nope", wantIn: "wrong"},
		{name: "prefix of the secret", configured: secret, query: secret[:5], wantIn: "wrong"},
		{name: "basic auth", configured: secret, auth: "Basic " + secret, wantIn: "missing"},
		{name: "missing", configured: secret, wantIn: "missing"},
		{name: "not configured", configured: "", query: "", wantIn: "BRIDGE_JIMO_WEBHOOK_SECRET"},
		{name: "not configured, empty bearer", configured: "", auth: "Bearer ", wantIn: "until a webhook secret is configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckWebhookSecret(tt.configured, tt.query, tt.auth)
			if tt.wantOK {
				if err != nil {
					t.Errorf("CheckWebhookSecret: got %v, want nil", err)
				}
				return
			}
			if mapping.ErrorCode(err) != mapping.CodeUnauthorized || err == nil {
				t.Fatalf("CheckWebhookSecret: got %v, want an unauthorized error", err)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q, want it to contain %q", err, tt.wantIn)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
}
