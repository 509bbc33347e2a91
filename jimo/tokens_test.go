package jimo

import (
	"regexp"
	"strings"
	"testing"

	"github.com/bridgeworks/bridge/mapping"
)

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{"", ModeShared, false},
		{"shared", ModeShared, false},
		{" Derived ", ModeDerived, false},
		{"DERIVED", ModeDerived, false},
		{"opaque", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMode(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseMode(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseMode(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), "shared, derived") {
				t.Errorf("error %q does not name the accepted modes", err)
			}
		})
	}
}

func TestGuessable(t *testing.T) {
	blocklist := mapping.NewBlocklist([]string{"test-user-do-not-use"})
	tests := []struct {
		name     string
		in       string
		wantPass bool
		wantIn   string // a fragment of the reason
	}{
		{"uuid v4", "f47ac10b-58cc-4372-a567-0e02b2c3d479", true, ""},
		{"uuid upper case", "0F8FAD5B-D9CB-469F-A165-70867728950E", true, ""},
		{"nanoid", "V1StGXR8_Z5jdHi6B-myT", true, ""},
		{"cuid", "cjld2cjxh0000qzrmn831i7rn", true, ""},
		{"cuid2", "tz4a98xxat96iws9zmbrgj3a", true, ""},
		{"ulid", "01ARZ3NDEKTSV4RRFFQ69G5FAV", true, ""},
		{"prefixed random", "usr_2NfXq8vL0pQz7RkT", true, ""},
		{"short digits", "12345", false, "all digits"},
		{"long digits", "12345678901234567890", false, "all digits"},
		{"email", "alice@example.com", false, "email"},
		{"blocked guest", "guest", false, "placeholder"},
		{"blocked any case", "Anonymous", false, "placeholder"},
		{"blocked extra", "test-user-do-not-use", false, "placeholder"},
		{"nil uuid", "00000000-0000-0000-0000-000000000000", false, "placeholder"},
		{"repeated", "aaaaaaaaaaaaaaaaaaaa", false, "too regular"},
		{"two letters", "abababababababababab", false, "too regular"},
		{"mostly zeros", "user_000000000001", false, "too regular"},
		{"short", "u_8fK2pQ", false, "shorter than 16"},
		{"empty", "", false, "not a usable identifier"},
		{"control", "f47ac10b-58cc-4372\x00-a567-0e02b2c3d479", false, "not a usable identifier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Guessable(tt.in, blocklist)
			if tt.wantPass {
				if got != "" {
					t.Errorf("Guessable(%q) = %q, want \"\"", tt.in, got)
				}
				return
			}
			if got == "" {
				t.Fatalf("Guessable(%q) = \"\", want a reason containing %q", tt.in, tt.wantIn)
			}
			if !strings.Contains(got, tt.wantIn) {
				t.Errorf("Guessable(%q) = %q, want it to contain %q", tt.in, got, tt.wantIn)
			}
			if !strings.Contains(got, "BRIDGE_JIMO_TOKEN_MODE=derived") {
				t.Errorf("Guessable(%q) = %q, want it to point at derived mode", tt.in, got)
			}
			if tt.in != "" && len(tt.in) > 4 && strings.Contains(got, tt.in) {
				t.Errorf("Guessable(%q) = %q, want the reason not to repeat the value", tt.in, got)
			}
		})
	}
}

func TestDeriveToken(t *testing.T) {
	secret := []byte("derivation secret")
	a := DeriveToken(secret, "user-1")
	if got := DeriveToken(secret, "user-1"); got != a {
		t.Errorf("DeriveToken twice = %q and %q, want the same", a, got)
	}
	if len(a) != 43 {
		t.Errorf("len(DeriveToken) = %d, want 43 (256 bits, unpadded base64)", len(a))
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(a) {
		t.Errorf("DeriveToken = %q, want URL-safe base64 without padding", a)
	}
	if got := DeriveToken(secret, "user-2"); got == a {
		t.Errorf("DeriveToken for another user = %q, want a different token", got)
	}
	if got := DeriveToken([]byte("other secret"), "user-1"); got == a {
		t.Errorf("DeriveToken with another secret = %q, want a different token", got)
	}
	// The token must not be the plain signature of the user ID: a backend
	// signature must never double as a Jimo token.
	if Sign(secret, "user-1") == a {
		t.Errorf("DeriveToken equals Sign, want domain separation")
	}
	if reason := Guessable(a, mapping.NewBlocklist(nil)); reason != "" {
		t.Errorf("Guessable(DeriveToken(...)) = %q, want \"\"", reason)
	}
}

func TestVerifySignature(t *testing.T) {
	secret := []byte("signing secret")
	good := Sign(secret, "user-1")
	tests := []struct {
		name   string
		secret []byte
		value  string
		sig    string
		want   bool
	}{
		{"valid", secret, "user-1", good, true},
		{"upper-case hex", secret, "user-1", strings.ToUpper(good), true},
		{"other value", secret, "user-2", good, false},
		{"other secret", []byte("nope"), "user-1", good, false},
		{"empty secret", nil, "user-1", Sign(nil, "user-1"), false},
		{"bad hex", secret, "user-1", "zz" + good[2:], false},
		{"odd length", secret, "user-1", good[1:], false},
		{"truncated", secret, "user-1", good[:32], false},
		{"empty", secret, "user-1", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerifySignature(tt.secret, tt.value, tt.sig); got != tt.want {
				t.Errorf("VerifySignature = %v, want %v", got, tt.want)
			}
		})
	}
}
