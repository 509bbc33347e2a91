package httperror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
)

// TestStatus pins the one table: every code the bridge answers with, and an
// unknown one.
func TestStatus(t *testing.T) {
	tests := []struct {
		code mapping.Code
		want int
	}{
		{mapping.CodeInvalid, http.StatusBadRequest},
		{mapping.CodeUnauthorized, http.StatusUnauthorized},
		{mapping.CodeForbidden, http.StatusForbidden},
		{mapping.CodeNotFound, http.StatusNotFound},
		{mapping.CodeConflict, http.StatusConflict},
		{mapping.CodeTooLarge, http.StatusBadRequest}, // as Segment answers oversize
		{mapping.CodeUnprocessable, http.StatusUnprocessableEntity},
		{mapping.CodeRateLimited, http.StatusTooManyRequests},
		{mapping.CodeUnavailable, http.StatusServiceUnavailable},
		{mapping.CodeInternal, http.StatusInternalServerError},
		{"", http.StatusInternalServerError},
		{"no_such_code", http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			if got := Status(tt.code); got != tt.want {
				t.Errorf("Status(%q): got %d, want %d", tt.code, got, tt.want)
			}
		})
	}
}

// TestCodeOfAgreesWithStatus: an Echo error answered with a code's status
// carries that code, so the two directions never disagree.
func TestCodeOfAgreesWithStatus(t *testing.T) {
	for _, code := range []mapping.Code{mapping.CodeInvalid, mapping.CodeUnauthorized, mapping.CodeForbidden,
		mapping.CodeNotFound, mapping.CodeConflict, mapping.CodeUnprocessable, mapping.CodeRateLimited,
		mapping.CodeUnavailable, mapping.CodeInternal} {
		if got := codeOf(Status(code)); got != code {
			t.Errorf("codeOf(Status(%q) = %d): got %q, want %q", code, Status(code), got, code)
		}
	}
}

type answer struct {
	status     int
	body       Body
	raw        string
	retryAfter string
}

func serve(t *testing.T, method string, h echo.HandlerFunc) (answer, string) {
	t.Helper()
	var logs bytes.Buffer
	e := echo.New()
	e.HTTPErrorHandler = Handler(slog.New(slog.NewTextHandler(&logs, nil)))
	e.Add(method, "/x", h)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(method, "/x", nil))
	a := answer{status: rec.Code, raw: rec.Body.String(), retryAfter: rec.Header().Get(echo.HeaderRetryAfter)}
	if method != http.MethodHead {
		if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
			t.Fatalf("body %q is not the JSON error body: %v", rec.Body.String(), err)
		}
	}
	return a, logs.String()
}

func TestHandler(t *testing.T) {
	cause := errors.New("disk says secret-detail")
	tests := []struct {
		name        string
		method      string
		err         error
		wantStatus  int
		wantBody    Body
		wantRetry   string
		wantLogged  bool
		notInAnswer string
	}{
		{name: "invalid", err: mapping.Errorf(mapping.CodeInvalid, "fix it"),
			wantStatus: 400, wantBody: Body{mapping.CodeInvalid, "fix it"}},
		{name: "wrapped forbidden", err: fmt.Errorf("cors: %w", mapping.Errorf(mapping.CodeForbidden, "not you")),
			wantStatus: 403, wantBody: Body{mapping.CodeForbidden, "not you"}},
		{name: "too large is 400", err: mapping.Errorf(mapping.CodeTooLarge, "smaller"),
			wantStatus: 400, wantBody: Body{mapping.CodeTooLarge, "smaller"}},
		{name: "unavailable has Retry-After and is not logged", err: &mapping.Error{Code: mapping.CodeUnavailable, Message: "busy", Err: cause},
			wantStatus: 503, wantBody: Body{mapping.CodeUnavailable, "busy"}, wantRetry: "1", notInAnswer: "secret-detail"},
		{name: "unavailable rounds RetryAfter up", err: &mapping.Error{Code: mapping.CodeUnavailable, Message: "busy", RetryAfter: 4100 * time.Millisecond},
			wantStatus: 503, wantBody: Body{mapping.CodeUnavailable, "busy"}, wantRetry: "5"},
		{name: "rate limited with RetryAfter", err: &mapping.Error{Code: mapping.CodeRateLimited, Message: "slow", RetryAfter: 2 * time.Second},
			wantStatus: 429, wantBody: Body{mapping.CodeRateLimited, "slow"}, wantRetry: "2"},
		{name: "internal logged, cause hidden", err: &mapping.Error{Code: mapping.CodeInternal, Message: "broke", Err: cause},
			wantStatus: 500, wantBody: Body{mapping.CodeInternal, "broke"}, wantLogged: true, notInAnswer: "secret-detail"},
		{name: "plain error is internal", err: cause,
			wantStatus: 500, wantBody: Body{mapping.CodeInternal, internalMessage}, wantLogged: true, notInAnswer: "secret-detail"},
		{name: "echo error keeps its status", err: echo.ErrMethodNotAllowed,
			wantStatus: 405, wantBody: Body{mapping.CodeInvalid, "Method Not Allowed"}},
		{name: "echo 404", err: echo.ErrNotFound,
			wantStatus: 404, wantBody: Body{mapping.CodeNotFound, "Not Found"}},
		{name: "cancelled", err: context.Canceled,
			wantStatus: 499, wantBody: Body{mapping.CodeUnavailable, "request cancelled"}},
		{name: "HEAD has no body", method: http.MethodHead, err: mapping.Errorf(mapping.CodeNotFound, "none"), wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			got, logs := serve(t, method, func(echo.Context) error { return tt.err })
			if got.status != tt.wantStatus {
				t.Errorf("status: got %d, want %d", got.status, tt.wantStatus)
			}
			if got.body != tt.wantBody {
				t.Errorf("body: got %+v, want %+v", got.body, tt.wantBody)
			}
			if method == http.MethodHead && got.raw != "" {
				t.Errorf("HEAD body: got %q, want none", got.raw)
			}
			if got.retryAfter != tt.wantRetry {
				t.Errorf("Retry-After: got %q, want %q", got.retryAfter, tt.wantRetry)
			}
			if logged := strings.Contains(logs, "request failed"); logged != tt.wantLogged {
				t.Errorf("logged: got %v, want %v: %s", logged, tt.wantLogged, logs)
			}
			if tt.wantLogged && strings.Count(logs, "request failed") != 1 {
				t.Errorf("logged %d times, want once: %s", strings.Count(logs, "request failed"), logs)
			}
			if tt.notInAnswer != "" && strings.Contains(got.raw, tt.notInAnswer) {
				t.Errorf("answer %q shows the cause %q", got.raw, tt.notInAnswer)
			}
		})
	}
}

// TestHandlerCommitted: an error after the answer started writes nothing more.
func TestHandlerCommitted(t *testing.T) {
	got, _ := serve(t, http.MethodGet, func(c echo.Context) error {
		if err := c.JSON(http.StatusOK, Body{Code: "ok", Message: "done"}); err != nil {
			return err
		}
		return mapping.Errorf(mapping.CodeInvalid, "too late")
	})
	if got.status != http.StatusOK || got.body.Message != "done" {
		t.Errorf("got %d %q, want the first answer alone", got.status, got.raw)
	}
}
