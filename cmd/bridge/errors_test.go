package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/bridgeworks/bridge/jimo"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/httperror"
)

// TestErrorsOneTableEndToEnd: every renderer of the real server (the JSON
// error handler, the CORS refusal of /jimo/session, the admin's HTML pages)
// answers a code with the status of httperror's one table.
func TestErrorsOneTableEndToEnd(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, acceptUnsigned)
	const evil = "https://evil.example.test"

	jsonError := func(t *testing.T, r httpResult, code mapping.Code, inMessage string) {
		t.Helper()
		if want := httperror.Status(code); r.status != want {
			t.Errorf("status: got %d, want %d (the table's for %s): %s", r.status, want, code, r.body)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type: got %q, want JSON", ct)
		}
		var body httperror.Body
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
		if body.Code != code || !strings.Contains(body.Message, inMessage) {
			t.Errorf("body: got %+v, want code %q with a message containing %q", body, code, inMessage)
		}
	}

	t.Run("CORS preflight refused", func(t *testing.T) {
		r := b.do(t, http.MethodOptions, "/jimo/session", nil, map[string]string{
			"Origin": evil, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
		})
		jsonError(t, r, mapping.CodeForbidden, "BRIDGE_ALLOWED_ORIGINS")
	})
	t.Run("CORS POST refused", func(t *testing.T) {
		r := b.session(t, evil, map[string]any{"token": newUUID(t)})
		jsonError(t, r, mapping.CodeForbidden, evil)
		if got := r.header.Values("Vary"); !strings.Contains(strings.Join(got, ","), "Origin") {
			t.Errorf("Vary: got %q, want Origin", got)
		}
	})
	t.Run("too large", func(t *testing.T) {
		r := b.session(t, jimoPageOrigin, map[string]any{"token": newUUID(t), "name": strings.Repeat("x", jimo.MaxSessionBody)})
		jsonError(t, r, mapping.CodeTooLarge, "")
	})
	t.Run("API without password", func(t *testing.T) {
		r := b.do(t, http.MethodGet, "/api/v1/warnings", nil, nil)
		jsonError(t, r, mapping.CodeUnauthorized, "admin password")
	})
	t.Run("no such route", func(t *testing.T) {
		r := b.do(t, http.MethodGet, "/no/such/route", nil, nil)
		jsonError(t, r, mapping.CodeNotFound, "")
	})
	t.Run("admin form without its token", func(t *testing.T) {
		r := b.do(t, http.MethodPost, "/admin/login", []byte("password=x"), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		if want := httperror.Status(mapping.CodeForbidden); r.status != want {
			t.Errorf("status: got %d, want %d (the table's for forbidden)", r.status, want)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("Content-Type: got %q, want the admin's HTML page", ct)
		}
	})
}
