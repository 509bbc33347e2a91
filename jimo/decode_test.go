package jimo

import (
	"net/http"
	"strings"
	"testing"
)

// deepArrays returns {"a":[[...]]} with depth levels of arrays: 16 KB for 8,000.
func deepArrays(depth int) string {
	return `{"a":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
}

// nested returns attributes nested depth levels deep: {"a":{"a":...{}}}.
func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth) + `{}` + strings.Repeat(`}`, depth)
}

func TestDecodersRefuseDeepNestingAndInvalidUTF8(t *testing.T) {
	session := func(attributes string) string {
		return `{"token":"` + goodUserID + `","attributes":` + attributes + `}`
	}
	webhook := func(experience string) string {
		return `{"event":"tour.completed","time":1700000000000,"jimer":{"identifyToken":"` + goodUserID + `"},"experience":` + experience + `}`
	}
	tests := []struct {
		name, path, body string
		wantStatus       int
		wantMessage      string
	}{
		// A session report's root is level 1 and attributes level 2.
		{"session at the limit", "/jimo/session", session(nested(MaxDepth - 2)), 200, ""},
		{"session one level deeper", "/jimo/session", session(nested(MaxDepth - 1)), 400, "nested deeper than 64 levels"},
		{"session 8,000 levels deep", "/jimo/session", session(deepArrays(8000)), 400, "nested deeper than 64 levels"},
		{"session with arrays", "/jimo/session", session(deepArrays(100)), 400, "nested deeper than 64 levels"},
		{"session braces inside strings count for nothing", "/jimo/session", session(`{"a":"` + strings.Repeat("{[", 100) + `\"{"}`), 200, ""},
		{"session invalid UTF-8", "/jimo/session", session(`{"name":"caf` + "\xe9" + `"}`), 400, "not valid UTF-8"},
		{"webhook at the limit", "/jimo/webhook?secret=" + testWebhookSecret, webhook(nested(MaxDepth - 2)), 200, ""},
		{"webhook 8,000 levels deep", "/jimo/webhook?secret=" + testWebhookSecret, webhook(deepArrays(8000)), 400, "nested deeper than 64 levels"},
		{"webhook invalid UTF-8", "/jimo/webhook?secret=" + testWebhookSecret, webhook(`{"name":"` + "\xff\xfe" + `"}`), 400, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			rec := ts.do(http.MethodPost, tt.path, tt.body, nil)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: got %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			stored := len(ts.store.messages())
			if tt.wantStatus != 200 {
				got := decodeJSON(t, rec)
				if got["code"] != "invalid" {
					t.Errorf("code: got %v, want invalid", got["code"])
				}
				if msg, _ := got["message"].(string); !strings.Contains(msg, tt.wantMessage) {
					t.Errorf("message: got %q, want it to contain %q", msg, tt.wantMessage)
				}
				if stored != 0 {
					t.Errorf("stored: got %d messages, want none", stored)
				}
			} else if stored != 1 {
				t.Errorf("stored: got %d messages, want 1", stored)
			}
		})
	}
}
