package jimo

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

var (
	testSigningSecret = []byte("app-backend-signing-secret")
	testTokenSecret   = []byte("token-derivation-secret")
	testReceivedAt    = time.Date(2025, 11, 23, 10, 30, 15, 0, time.UTC)
)

const (
	goodUserID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	anonID     = "6d2a4f1e-8c3b-4a5d-b7e9-0f1a2b3c4d5e"
	// legacyToken is a Jimo session token that is not the user ID (legacy session:reset).
	legacyToken = "Vx9kQ2mT7bLr4NzW8cHs"
)

func newTestSessions(t *testing.T, cfg SessionConfig) *Sessions {
	t.Helper()
	s, err := NewSessions(cfg)
	if err != nil {
		t.Fatalf("NewSessions: %v", err)
	}
	return s
}

func TestNewSessions(t *testing.T) {
	tests := []struct {
		name    string
		cfg     SessionConfig
		wantErr string
	}{
		{"shared default", SessionConfig{}, ""},
		{"shared requiring signatures", SessionConfig{RequireSignature: true, SigningSecret: testSigningSecret}, ""},
		{"required without secret", SessionConfig{RequireSignature: true}, "signing secret"},
		{"derived", SessionConfig{Mode: ModeDerived, SigningSecret: testSigningSecret, TokenSecret: testTokenSecret}, ""},
		{"derived without signing secret", SessionConfig{Mode: ModeDerived, TokenSecret: testTokenSecret}, "signing secret"},
		{"derived without token secret", SessionConfig{Mode: ModeDerived, SigningSecret: testSigningSecret}, "derivation secret"},
		{"unknown mode", SessionConfig{Mode: "opaque"}, "not one of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSessions(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("NewSessions: got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewSessions: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDecodeSession(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    SessionRequest // Raw is checked separately
		wantErr string         // fragment of the message; "" = success
	}{
		{
			name: "all fields",
			body: `{"token":"t","userId":"u","anonymousId":"a","signature":"s","impersonating":true,"email":"e@x","name":"N","attributes":{"plan":"pro"},"messageId":"m"}`,
			want: SessionRequest{Token: "t", UserID: "u", AnonymousID: "a", Signature: "s", Impersonating: true, Email: "e@x", Name: "N", Attributes: map[string]any{"plan": "pro"}, MessageID: "m"},
		},
		{name: "nulls", body: `{"token":null,"userId":null,"impersonating":null,"attributes":null}`, want: SessionRequest{}},
		{name: "unknown fields ignored", body: `{"token":"t","extra":[1,2],"nested":{"a":1}}`, want: SessionRequest{Token: "t"}},
		{name: "empty object", body: ` {} `, want: SessionRequest{}},
		{name: "token number", body: `{"token":12345}`, wantErr: `field "token" must be a string`},
		{name: "userId object", body: `{"userId":{"id":1}}`, wantErr: `field "userId" must be a string`},
		{name: "signature array", body: `{"signature":["ab"]}`, wantErr: `field "signature" must be a string`},
		{name: "impersonating string", body: `{"impersonating":"yes"}`, wantErr: `field "impersonating" must be true, false or null`},
		{name: "attributes array", body: `{"attributes":[1]}`, wantErr: `field "attributes" must be a JSON object`},
		{name: "email bool", body: `{"email":true}`, wantErr: `field "email" must be a string`},
		{name: "malformed", body: `{"token":"t"`, wantErr: "not valid JSON"},
		{name: "trailing data", body: `{"token":"t"} {}`, wantErr: "not valid JSON"},
		{name: "array", body: `[{"token":"t"}]`, wantErr: "must be a JSON object"},
		{name: "string", body: `"t"`, wantErr: "must be a JSON object"},
		{name: "empty", body: ``, wantErr: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeSession([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("DecodeSession: got no error, want one containing %q", tt.wantErr)
				}
				if code := mapping.ErrorCode(err); code != mapping.CodeInvalid {
					t.Errorf("error code: got %s, want %s", code, mapping.CodeInvalid)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error: got %q, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeSession: got %v, want no error", err)
			}
			got.Raw = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeSession:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeSessionRawDropsSignature(t *testing.T) {
	req, err := DecodeSession([]byte(`{"token":"t","signature":"deadbeef","extra":"kept"}`))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(req.Raw, &raw); err != nil {
		t.Fatalf("Raw is not JSON: %v", err)
	}
	if _, ok := raw["signature"]; ok {
		t.Errorf("Raw = %s, want no signature", req.Raw)
	}
	if raw["extra"] != "kept" || raw["token"] != "t" {
		t.Errorf("Raw = %s, want the other fields kept", req.Raw)
	}
}

func TestReport(t *testing.T) {
	shared := SessionConfig{Blocklist: mapping.NewBlocklist(nil)}
	sharedSigned := SessionConfig{RequireSignature: true, SigningSecret: testSigningSecret, Blocklist: mapping.NewBlocklist(nil)}
	sharedWithSecret := SessionConfig{SigningSecret: testSigningSecret, Blocklist: mapping.NewBlocklist(nil)}
	derived := SessionConfig{Mode: ModeDerived, SigningSecret: testSigningSecret, TokenSecret: testTokenSecret, Blocklist: mapping.NewBlocklist(nil)}
	derivedToken := DeriveToken(testTokenSecret, "42")
	sig := func(v string) string { return Sign(testSigningSecret, v) }

	tests := []struct {
		name     string
		cfg      SessionConfig
		req      SessionRequest
		wantCode mapping.Code // "" = success
		wantResp SessionResponse
		// checks on the message; wantStored means a message is returned for the store
		wantStored bool
		check      func(t *testing.T, msg mapping.Message)
	}{
		{
			name: "shared ok", cfg: shared,
			req:        SessionRequest{Token: goodUserID, AnonymousID: anonID, Email: " ada@example.com ", Name: "Ada", Attributes: map[string]any{"plan": "pro", "name": "overridden"}},
			wantResp:   SessionResponse{UserID: goodUserID, JimoToken: goodUserID},
			wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				want := mapping.Message{
					Source: mapping.SourceJimoSession, ID: msg.ID, Type: TypeSession,
					UserID: goodUserID, JimoToken: goodUserID, AnonymousID: anonID, Email: "ada@example.com",
					Traits:    map[string]any{"plan": "pro", "name": "Ada", "email": "ada@example.com"},
					Timestamp: testReceivedAt, ReceivedAt: testReceivedAt, Raw: msg.Raw,
				}
				if !reflect.DeepEqual(msg, want) {
					t.Errorf("message:\n got %+v\nwant %+v", msg, want)
				}
				if !strings.HasPrefix(msg.ID, "jimo-session-") {
					t.Errorf("ID = %q, want prefix jimo-session-", msg.ID)
				}
			},
		},
		{
			name: "shared userId repeats token", cfg: shared,
			req:      SessionRequest{Token: goodUserID, UserID: goodUserID},
			wantResp: SessionResponse{UserID: goodUserID, JimoToken: goodUserID}, wantStored: true,
		},
		{
			name: "shared userId only", cfg: shared,
			req:      SessionRequest{UserID: " " + goodUserID + " "},
			wantResp: SessionResponse{UserID: goodUserID, JimoToken: goodUserID}, wantStored: true,
		},
		{
			name: "legacy token", cfg: shared,
			req:        SessionRequest{Token: legacyToken, UserID: goodUserID, AnonymousID: anonID, Email: "ada@example.com"},
			wantResp:   SessionResponse{UserID: goodUserID, JimoToken: legacyToken},
			wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				want := mapping.Message{
					Source: mapping.SourceJimoSession, ID: msg.ID, Type: TypeSession,
					UserID: goodUserID, JimoToken: legacyToken, AnonymousID: anonID, Email: "ada@example.com",
					Traits:    map[string]any{"email": "ada@example.com"},
					Timestamp: testReceivedAt, ReceivedAt: testReceivedAt, Raw: msg.Raw,
				}
				if !reflect.DeepEqual(msg, want) {
					t.Errorf("message:\n got %+v\nwant %+v", msg, want)
				}
			},
		},
		{
			name: "legacy token, guessable user ID accepted with a warning", cfg: shared,
			req:        SessionRequest{Token: legacyToken, UserID: "42", AnonymousID: anonID},
			wantResp:   SessionResponse{UserID: "42", JimoToken: legacyToken},
			wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				if msg.UserID != "42" || msg.JimoToken != legacyToken || msg.Rejected != "" {
					t.Errorf("message: got user %q token %q rejected %q, want 42, %q, not rejected", msg.UserID, msg.JimoToken, msg.Rejected, legacyToken)
				}
				if !strings.Contains(msg.UserIDWarning, "all digits") {
					t.Errorf("UserIDWarning = %q, want the reason the user ID is guessable", msg.UserIDWarning)
				}
			},
		},
		{
			name: "legacy token guessable", cfg: shared,
			req: SessionRequest{Token: "12345", UserID: goodUserID, AnonymousID: anonID}, wantCode: mapping.CodeUnprocessable, wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				if msg.Rejected != RejectedGuessableToken {
					t.Errorf("Rejected = %q, want %q", msg.Rejected, RejectedGuessableToken)
				}
				if !strings.HasPrefix(msg.UserIDWarning, "session token") || !strings.Contains(msg.UserIDWarning, "all digits") {
					t.Errorf("UserIDWarning = %q, want the reason about the session token", msg.UserIDWarning)
				}
			},
		},
		{name: "legacy token short", cfg: shared, req: SessionRequest{Token: "abc123", UserID: goodUserID}, wantCode: mapping.CodeUnprocessable, wantStored: true},
		{name: "legacy token blocked", cfg: shared, req: SessionRequest{Token: "undefined", UserID: goodUserID}, wantCode: mapping.CodeUnprocessable, wantStored: true},
		{name: "legacy blocked user ID", cfg: shared, req: SessionRequest{Token: legacyToken, UserID: "null"}, wantCode: mapping.CodeUnprocessable},
		{name: "legacy user ID with control characters", cfg: shared, req: SessionRequest{Token: legacyToken, UserID: "ab\x00cd"}, wantCode: mapping.CodeInvalid},
		{name: "legacy token with control characters", cfg: shared, req: SessionRequest{Token: "tok\x07" + legacyToken, UserID: goodUserID}, wantCode: mapping.CodeInvalid},
		{name: "legacy token over 400 characters", cfg: shared, req: SessionRequest{Token: strings.Repeat("x", 401), UserID: goodUserID}, wantCode: mapping.CodeInvalid},
		{
			name: "legacy signed over the user ID", cfg: sharedSigned,
			req:      SessionRequest{Token: legacyToken, UserID: goodUserID, Signature: sig(goodUserID)},
			wantResp: SessionResponse{UserID: goodUserID, JimoToken: legacyToken}, wantStored: true,
		},
		{name: "legacy signed over the token", cfg: sharedSigned, req: SessionRequest{Token: legacyToken, UserID: goodUserID, Signature: sig(legacyToken)}, wantCode: mapping.CodeUnauthorized},
		{name: "legacy unsigned when required", cfg: sharedSigned, req: SessionRequest{Token: legacyToken, UserID: goodUserID}, wantCode: mapping.CodeUnauthorized},
		{
			name: "legacy impersonating", cfg: shared, req: SessionRequest{Token: legacyToken, UserID: goodUserID, Impersonating: true},
			wantResp: SessionResponse{UserID: goodUserID}, wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				if !msg.Impersonating || msg.JimoToken != legacyToken {
					t.Errorf("message: got impersonating %v token %q, want true and the legacy token", msg.Impersonating, msg.JimoToken)
				}
			},
		},
		{name: "shared control characters", cfg: shared, req: SessionRequest{Token: "abc\x01def"}, wantCode: mapping.CodeInvalid},
		{
			name: "shared guessable", cfg: shared,
			req: SessionRequest{Token: "12345", AnonymousID: anonID}, wantCode: mapping.CodeUnprocessable, wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				if msg.Rejected != RejectedGuessableToken {
					t.Errorf("Rejected = %q, want %q", msg.Rejected, RejectedGuessableToken)
				}
				if !strings.Contains(msg.UserIDWarning, "all digits") {
					t.Errorf("UserIDWarning = %q, want the reason", msg.UserIDWarning)
				}
			},
		},
		{name: "shared email token", cfg: shared, req: SessionRequest{Token: "alice@example.com"}, wantCode: mapping.CodeUnprocessable, wantStored: true},
		{
			name: "signed ok", cfg: sharedSigned, req: SessionRequest{Token: goodUserID, Signature: sig(goodUserID)},
			wantResp: SessionResponse{UserID: goodUserID, JimoToken: goodUserID}, wantStored: true,
		},
		{name: "signature missing", cfg: sharedSigned, req: SessionRequest{Token: goodUserID}, wantCode: mapping.CodeUnauthorized},
		{name: "signature wrong", cfg: sharedSigned, req: SessionRequest{Token: goodUserID, Signature: sig("someone-else")}, wantCode: mapping.CodeUnauthorized},
		{name: "signature not hex", cfg: sharedSigned, req: SessionRequest{Token: goodUserID, Signature: "not-hex"}, wantCode: mapping.CodeUnauthorized},
		{name: "signature checked before guessable", cfg: sharedSigned, req: SessionRequest{Token: "12345"}, wantCode: mapping.CodeUnauthorized},
		{name: "optional signature wrong", cfg: sharedWithSecret, req: SessionRequest{Token: goodUserID, Signature: sig("x")}, wantCode: mapping.CodeUnauthorized},
		{
			name: "optional signature absent", cfg: sharedWithSecret, req: SessionRequest{Token: goodUserID},
			wantResp: SessionResponse{UserID: goodUserID, JimoToken: goodUserID}, wantStored: true,
		},
		{
			name: "signature ignored without secret", cfg: shared, req: SessionRequest{Token: goodUserID, Signature: "whatever"},
			wantResp: SessionResponse{UserID: goodUserID, JimoToken: goodUserID}, wantStored: true,
		},
		{
			name: "derived ok", cfg: derived,
			req:      SessionRequest{UserID: "42", Signature: sig("42"), AnonymousID: anonID},
			wantResp: SessionResponse{UserID: "42", JimoToken: derivedToken}, wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				if msg.UserID != "42" || msg.JimoToken != derivedToken || msg.AnonymousID != anonID {
					t.Errorf("message identifiers: got user %q token %q anonymous %q, want 42, %q, %q", msg.UserID, msg.JimoToken, msg.AnonymousID, derivedToken, anonID)
				}
				if msg.UserIDWarning != "" || msg.Rejected != "" {
					t.Errorf("message: got warning %q rejected %q, want none (the user ID never reaches Jimo)", msg.UserIDWarning, msg.Rejected)
				}
			},
		},
		{
			name: "derived with matching token", cfg: derived,
			req:      SessionRequest{UserID: "42", Token: derivedToken, Signature: sig("42")},
			wantResp: SessionResponse{UserID: "42", JimoToken: derivedToken}, wantStored: true,
		},
		{name: "derived with other token", cfg: derived, req: SessionRequest{UserID: "42", Token: "something-else-entirely", Signature: sig("42")}, wantCode: mapping.CodeInvalid},
		{name: "derived blocked user ID", cfg: derived, req: SessionRequest{UserID: "undefined", Signature: sig("undefined")}, wantCode: mapping.CodeUnprocessable},
		{name: "derived without signature", cfg: derived, req: SessionRequest{UserID: "42"}, wantCode: mapping.CodeUnauthorized},
		{name: "derived wrong signature", cfg: derived, req: SessionRequest{UserID: "42", Signature: sig("43")}, wantCode: mapping.CodeUnauthorized},
		{name: "derived token only", cfg: derived, req: SessionRequest{Token: derivedToken, Signature: sig(derivedToken)}, wantCode: mapping.CodeInvalid},
		{
			name: "logout null token", cfg: shared, req: SessionRequest{AnonymousID: anonID, Email: "ignored@example.com"},
			wantResp: SessionResponse{}, wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				want := mapping.Message{Source: mapping.SourceJimoSession, ID: msg.ID, Type: TypeLogout, AnonymousID: anonID,
					Timestamp: testReceivedAt, ReceivedAt: testReceivedAt, Raw: msg.Raw}
				if !reflect.DeepEqual(msg, want) {
					t.Errorf("message:\n got %+v\nwant %+v", msg, want)
				}
			},
		},
		{name: "logout in derived mode needs no signature", cfg: derived, req: SessionRequest{Token: "  "}, wantResp: SessionResponse{}, wantStored: true},
		{name: "logout with signatures required", cfg: sharedSigned, req: SessionRequest{}, wantResp: SessionResponse{}, wantStored: true},
		{
			name: "impersonating shared", cfg: shared, req: SessionRequest{Token: goodUserID, Impersonating: true},
			wantResp: SessionResponse{UserID: goodUserID}, wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				if !msg.Impersonating {
					t.Errorf("Impersonating = false, want true")
				}
			},
		},
		{
			name: "impersonating derived", cfg: derived, req: SessionRequest{UserID: "42", Signature: sig("42"), Impersonating: true},
			wantResp: SessionResponse{UserID: "42"}, wantStored: true,
			check: func(t *testing.T, msg mapping.Message) {
				if !msg.Impersonating || msg.JimoToken != derivedToken {
					t.Errorf("message: got impersonating %v token %q, want true and the derived token", msg.Impersonating, msg.JimoToken)
				}
			},
		},
		{name: "messageId too long", cfg: shared, req: SessionRequest{Token: goodUserID, MessageID: strings.Repeat("m", 101)}, wantCode: mapping.CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSessions(t, tt.cfg)
			resp, msg, err := s.Report(tt.req, testReceivedAt)
			if code := codeOf(err); code != tt.wantCode {
				t.Fatalf("Report error: got %v (code %q), want code %q", err, code, tt.wantCode)
			}
			if resp != tt.wantResp {
				t.Errorf("response: got %+v, want %+v", resp, tt.wantResp)
			}
			if stored := msg.ID != ""; stored != tt.wantStored {
				t.Fatalf("message stored: got %v, want %v (%+v)", stored, tt.wantStored, msg)
			}
			if tt.wantStored {
				if msg.Source != mapping.SourceJimoSession || !msg.Timestamp.Equal(testReceivedAt) {
					t.Errorf("message: got source %q timestamp %v, want %q %v", msg.Source, msg.Timestamp, mapping.SourceJimoSession, testReceivedAt)
				}
				if strings.Contains(string(msg.Raw), "signature") {
					t.Errorf("Raw = %s, want no signature", msg.Raw)
				}
			}
			if tt.check != nil {
				tt.check(t, msg)
			}
		})
	}
}

func codeOf(err error) mapping.Code {
	if err == nil {
		return ""
	}
	return mapping.ErrorCode(err)
}

func TestReportMessageID(t *testing.T) {
	s := newTestSessions(t, SessionConfig{})
	id := func(req SessionRequest, at time.Time) string {
		t.Helper()
		_, msg, err := s.Report(req, at)
		if err != nil {
			t.Fatalf("Report: %v", err)
		}
		return msg.ID
	}
	base := SessionRequest{Token: goodUserID, AnonymousID: anonID, Attributes: map[string]any{"a": 1.0, "b": "x"}}
	sameAttrs := base
	sameAttrs.Attributes = map[string]any{"b": "x", "a": 1.0}
	otherAnon := base
	otherAnon.AnonymousID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
	withSig := base
	withSig.Signature = "abcdef"
	withMsgID := base
	withMsgID.MessageID = "jb-1"
	withOtherMsgID := base
	withOtherMsgID.MessageID = "jb-2"

	at := testReceivedAt
	if a, b := id(base, at), id(sameAttrs, at.Add(30*time.Second)); a != b {
		t.Errorf("retry within the minute: got IDs %q and %q, want equal", a, b)
	}
	if a, b := id(base, at), id(withSig, at); a != b {
		t.Errorf("signature changed the ID: got %q and %q, want equal", a, b)
	}
	if a, b := id(base, at), id(base, at.Add(2*time.Minute)); a == b {
		t.Errorf("a second reset minutes later: got ID %q twice, want different IDs", a)
	}
	if a, b := id(base, at), id(otherAnon, at); a == b {
		t.Errorf("another browser: got ID %q twice, want different IDs", a)
	}
	if a, b := id(withMsgID, at), id(withMsgID, at.Add(time.Hour)); a != b {
		t.Errorf("resent report with messageId: got IDs %q and %q, want equal", a, b)
	}
	if a, b := id(withMsgID, at), id(withOtherMsgID, at); a == b {
		t.Errorf("two reports with different messageIds: got ID %q twice, want different IDs", a)
	}
}

func TestReportRawFromFields(t *testing.T) {
	s := newTestSessions(t, SessionConfig{})
	_, msg, err := s.Report(SessionRequest{Token: goodUserID, Signature: "secret-sig"}, testReceivedAt)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(msg.Raw) || strings.Contains(string(msg.Raw), "secret-sig") || !strings.Contains(string(msg.Raw), goodUserID) {
		t.Errorf("Raw = %s, want the fields as JSON without the signature", msg.Raw)
	}
	_, msg, err = s.Report(SessionRequest{Token: goodUserID, Raw: json.RawMessage(`{"token":"x","signature":"secret-sig"}`)}, testReceivedAt)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(msg.Raw), "secret-sig") {
		t.Errorf("Raw = %s, want the signature removed from a caller's Raw too", msg.Raw)
	}
}
