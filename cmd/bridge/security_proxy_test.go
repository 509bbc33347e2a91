package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// sessionFrom posts a signed session report with the given X-Forwarded-For.
func sessionFrom(t *testing.T, b *testBridge, xff string) int {
	t.Helper()
	user := "user-rate-5d2c8e1a9f3b7046"
	body := fmt.Appendf(nil, `{"token":%q,"signature":%q}`, user, signUserID(testSigningSecret, user))
	headers := map[string]string{"Content-Type": "application/json", "Origin": jimoPageOrigin}
	if xff != "" {
		headers["X-Forwarded-For"] = xff
	}
	return b.do(t, http.MethodPost, "/jimo/session", body, headers).status
}

// loginFrom submits the admin login form with the given X-Forwarded-For.
func loginFrom(t *testing.T, b *testBridge, password, xff string) int {
	t.Helper()
	status, _ := adminLogin(t, b, password, map[string]string{"X-Forwarded-For": xff})
	return status
}

// TestSpoofedForwardedForDoesNotEscapeLimits: a peer that is not a trusted
// proxy is the client, so one that writes a new X-Forwarded-For on every
// request stays locked out and rate limited; with no trusted proxies, and with
// proxies configured elsewhere (loopback, the peer here, is trusted only when
// listed).
func TestSpoofedForwardedForDoesNotEscapeLimits(t *testing.T) {
	for _, proxies := range []string{"", "10.0.0.0/8,192.168.0.0/16"} {
		t.Run("trusted proxies "+proxies, func(t *testing.T) {
			b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, "-jimo-session-rate", "1", "-trusted-proxies", proxies)
			// Session rate 1/s: a burst of 2, then 429, whatever the header says.
			var statuses []int
			for i := range 3 {
				statuses = append(statuses, sessionFrom(t, b, fmt.Sprintf("203.0.113.%d", i+1)))
			}
			if fmt.Sprint(statuses) != "[200 200 429]" {
				t.Errorf("session reports with spoofed X-Forwarded-For: got %v, want [200 200 429]", statuses)
			}
			// Login: 5 wrong passwords lock the peer out; the 5th answer is the lockout.
			statuses = nil
			for i := range 5 {
				statuses = append(statuses, loginFrom(t, b, "guess", fmt.Sprintf("198.51.100.%d", i+1)))
			}
			if fmt.Sprint(statuses) != "[401 401 401 401 429]" {
				t.Errorf("wrong passwords with spoofed X-Forwarded-For: got %v, want [401 401 401 401 429]", statuses)
			}
			if got := loginFrom(t, b, testAdminPassword, "198.51.100.200"); got != http.StatusTooManyRequests {
				t.Errorf("right password with a fresh spoofed X-Forwarded-For while locked out: got %d, want 429", got)
			}
		})
	}
}

// TestTrustedProxyForwardedFor: behind a proxy named in
// BRIDGE_TRUSTED_PROXIES the client is the address the proxy appended to
// X-Forwarded-For, so one client's lockout or rate limit is not everyone's,
// and what a client writes in front of it is not believed.
func TestTrustedProxyForwardedFor(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, "-jimo-session-rate", "1", "-trusted-proxies", "127.0.0.0/8, ::1")
	statuses := []int{sessionFrom(t, b, "203.0.113.1"), sessionFrom(t, b, "203.0.113.1"), sessionFrom(t, b, "203.0.113.1")}
	if fmt.Sprint(statuses) != "[200 200 429]" {
		t.Errorf("one client through the proxy: got %v, want [200 200 429]", statuses)
	}
	// The proxy appends the real client; what the client sent in front is its word only.
	if got := sessionFrom(t, b, "203.0.113.77, 203.0.113.1"); got != http.StatusTooManyRequests {
		t.Errorf("limited client with a spoofed entry in front: got %d, want 429", got)
	}
	if got := sessionFrom(t, b, "203.0.113.2"); got != http.StatusOK {
		t.Errorf("another client through the proxy: got %d, want 200", got)
	}

	for range 5 {
		loginFrom(t, b, "guess", "198.51.100.1")
	}
	if got := loginFrom(t, b, testAdminPassword, "198.51.100.1"); got != http.StatusTooManyRequests {
		t.Errorf("locked-out client: got %d, want 429", got)
	}
	if got := loginFrom(t, b, testAdminPassword, "198.51.100.1, 127.0.0.1"); got != http.StatusTooManyRequests {
		t.Errorf("locked-out client behind two trusted proxies: got %d, want 429", got)
	}
	if got := loginFrom(t, b, testAdminPassword, "198.51.100.2"); got != http.StatusSeeOther {
		t.Errorf("another client through the proxy: got %d, want 303", got)
	}
}

func TestTrustProxyRemoved(t *testing.T) {
	db := filepath.Join(t.TempDir(), "bridge.db")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"environment", nil, map[string]string{"BRIDGE_TRUST_PROXY": "true"}, "BRIDGE_TRUSTED_PROXIES"},
		{"flag", []string{"-trust-proxy"}, nil, "BRIDGE_TRUSTED_PROXIES"},
		{"not a range", []string{"-trusted-proxies", "10.0.0.0/33"}, nil, "not a CIDR range"},
		{"not an address", nil, map[string]string{"BRIDGE_TRUSTED_PROXIES": "proxy.local"}, "BRIDGE_TRUSTED_PROXIES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-addr", "127.0.0.1:0", "-db", db}, tt.args...)
			err := run(context.Background(), args, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// TestAPIAnswersAreNotCachedOrSniffed: /api/v1 answers (refusals included)
// and admin pages carry Cache-Control: no-store and X-Content-Type-Options: nosniff.
func TestAPIAnswersAreNotCachedOrSniffed(t *testing.T) {
	b := startBridge(t, "")
	tests := []struct {
		name, path, auth string
		want             int
	}{
		{"profile lookup", "/api/v1/profiles?identifier=user_id:nobody-5e1f", "Bearer " + testAdminPassword, 404},
		{"jobs", "/api/v1/jobs", "Bearer " + testAdminPassword, 200},
		{"warnings", "/api/v1/warnings", "Bearer " + testAdminPassword, 200},
		{"no password", "/api/v1/jobs", "", 401},
		{"admin login page", "/admin/login", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, b.URL+tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tt.want)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control: got %q, want no-store", got)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options: got %q, want nosniff", got)
			}
		})
	}
}
