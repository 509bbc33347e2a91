package segment

import (
	"encoding/base64"
	"testing"
)

func TestWriteKeys(t *testing.T) {
	keys := NewWriteKeys([]string{" wk_server ", "", "wk_browser", "wk_server"})
	if got, want := keys.Len(), 2; got != want {
		t.Fatalf("got %d keys, want %d", got, want)
	}
	tests := []struct {
		key  string
		want bool
	}{
		{"wk_server", true},
		{"wk_browser", true},
		{"wk_serve", false},
		{"wk_server ", false},
		{"WK_SERVER", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := keys.Contains(tt.key); got != tt.want {
			t.Errorf("Contains(%q): got %v, want %v", tt.key, got, tt.want)
		}
	}
	var none WriteKeys
	if none.Contains("wk_server") {
		t.Errorf("zero WriteKeys: got Contains true, want false")
	}
}

func TestBasicWriteKey(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name   string
		header string
		want   string
		wantOK bool
	}{
		{"segment libraries", "Basic " + b64([]byte("wk_123:")), "wk_123", true},
		{"password ignored", "Basic " + b64([]byte("wk_123:secret")), "wk_123", true},
		{"no colon", "Basic " + b64([]byte("wk_123")), "wk_123", true},
		{"lower-case scheme", "basic " + b64([]byte("wk_123:")), "wk_123", true},
		{"unpadded base64", "Basic " + base64.RawStdEncoding.EncodeToString([]byte("wk_1:")), "wk_1", true},
		{"empty user", "Basic " + b64([]byte(":secret")), "", false},
		{"bearer", "Bearer wk_123", "", false},
		{"not base64", "Basic !!!", "", false},
		{"scheme only", "Basic", "", false},
		{"empty", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := BasicWriteKey(tt.header)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %q, %v, want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
