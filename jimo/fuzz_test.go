package jimo

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/bridgeworks/bridge/mapping"
)

// addFixtureSeeds adds every testdata/jimo file whose name starts with prefix.
func addFixtureSeeds(f *testing.F, prefix string) {
	f.Helper()
	names, err := filepath.Glob(filepath.Join("..", "testdata", "jimo", prefix+"*.json"))
	if err != nil || len(names) == 0 {
		f.Fatalf("no %s fixtures in testdata/jimo (%v)", prefix, err)
	}
	for _, name := range names {
		f.Add(readFixture(f, filepath.Base(name)))
	}
}

func FuzzDecodeSession(f *testing.F) {
	addFixtureSeeds(f, "session_")
	for _, s := range []string{`{}`, `{"token":null}`, `{"token":1}`, `{"attributes":{"a":[1,{"b":null}]}}`, `[]`, `{"signature":"ab","signature":"cd"}`, "{\"token\":\"\\u0000\"}"} {
		f.Add([]byte(s))
	}
	shared, err := NewSessions(SessionConfig{Blocklist: mapping.NewBlocklist(nil), SigningSecret: testSigningSecret})
	if err != nil {
		f.Fatal(err)
	}
	derived, err := NewSessions(SessionConfig{Mode: ModeDerived, SigningSecret: testSigningSecret, TokenSecret: testTokenSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeSession(body)
		if err != nil {
			if mapping.ErrorCode(err) != mapping.CodeInvalid {
				t.Fatalf("DecodeSession error code: got %s, want invalid (%v)", mapping.ErrorCode(err), err)
			}
			return
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(req.Raw, &raw); err != nil {
			t.Fatalf("Raw %q is not a JSON object: %v", req.Raw, err)
		}
		if _, ok := raw["signature"]; ok {
			t.Fatalf("Raw %s keeps the signature", req.Raw)
		}
		for _, s := range []*Sessions{shared, derived} {
			resp, msg, err := s.Report(req, testReceivedAt)
			if err != nil && msg.ID == "" && resp != (SessionResponse{}) {
				t.Fatalf("Report refused with %v but answered %+v", err, resp)
			}
			if msg.ID != "" {
				_, again, _ := s.Report(req, testReceivedAt)
				if again.ID != msg.ID {
					t.Fatalf("message ID not deterministic: %q then %q", msg.ID, again.ID)
				}
				var stored map[string]json.RawMessage
				if json.Unmarshal(msg.Raw, &stored) != nil {
					t.Fatalf("stored Raw %q is not a JSON object", msg.Raw)
				}
				if _, ok := stored["signature"]; ok {
					t.Fatalf("stored Raw %s keeps the signature", msg.Raw)
				}
			}
		}
	})
}

func FuzzDecodeWebhook(f *testing.F) {
	addFixtureSeeds(f, "webhook_")
	for _, s := range []string{`{}`, `{"time":"12"}`, `{"time":1e400}`, `{"jimer":[]}`, `{"experience":{"id":{}}}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := DecodeWebhook(body)
		if err != nil {
			if mapping.ErrorCode(err) != mapping.CodeInvalid {
				t.Fatalf("DecodeWebhook error code: got %s, want invalid (%v)", mapping.ErrorCode(err), err)
			}
			return
		}
		for _, mode := range []Mode{ModeShared, ModeDerived} {
			msg := w.Message(mode, mapping.NewBlocklist(nil), testReceivedAt)
			if msg.ID == "" || msg.Source != mapping.SourceJimoWebhook || !bytes.Equal(msg.Raw, body) {
				t.Fatalf("message: got ID %q source %q raw %q", msg.ID, msg.Source, msg.Raw)
			}
			if msg.Timestamp.IsZero() {
				t.Fatalf("message has no timestamp")
			}
			if (msg.JimoTokenOrUserID == "" && msg.JimoToken == "") != (msg.Rejected == RejectedMissingIdentifyToken) {
				t.Fatalf("message: identity %q/%q but rejected %q", msg.JimoTokenOrUserID, msg.JimoToken, msg.Rejected)
			}
			if again := w.Message(mode, mapping.NewBlocklist(nil), testReceivedAt.Add(1)); again.ID != msg.ID {
				t.Fatalf("message ID depends on arrival: %q then %q", msg.ID, again.ID)
			}
		}
	})
}
