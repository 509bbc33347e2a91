// Package httperror is the HTTP face of mapping's error codes: the one table
// from a mapping.Code to its HTTP status, the JSON body of every error
// answer, the function that writes one, and the Echo error handler that
// renders whatever a handler returns. Every renderer (the JSON API, the admin
// pages' HTML, CORS refusals) takes its status from Status, so a code answers
// with the same status wherever it arises.
package httperror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
)

// Status is the one table from error codes to HTTP statuses. An unknown code
// (or the empty one) is a bug and answers 500.
func Status(code mapping.Code) int {
	switch code {
	case mapping.CodeInvalid:
		return http.StatusBadRequest
	case mapping.CodeUnauthorized:
		return http.StatusUnauthorized
	case mapping.CodeForbidden:
		return http.StatusForbidden
	case mapping.CodeNotFound:
		return http.StatusNotFound
	case mapping.CodeConflict:
		return http.StatusConflict
	case mapping.CodeTooLarge:
		return http.StatusBadRequest // Segment answers 400 for oversize, and its clients expect that
	case mapping.CodeUnprocessable:
		return http.StatusUnprocessableEntity
	case mapping.CodeRateLimited:
		return http.StatusTooManyRequests
	case mapping.CodeUnavailable:
		return http.StatusServiceUnavailable
	default: // mapping.CodeInternal and unknown codes
		return http.StatusInternalServerError
	}
}

// codeOf is the code of an Echo error answered with status (a route that
// does not exist, a method it does not take): the code whose Status it is,
// with invalid for 400 and for the client errors no code names (405, 413).
func codeOf(status int) mapping.Code {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge:
		return mapping.CodeInvalid
	case http.StatusUnauthorized:
		return mapping.CodeUnauthorized
	case http.StatusForbidden:
		return mapping.CodeForbidden
	case http.StatusNotFound:
		return mapping.CodeNotFound
	case http.StatusConflict:
		return mapping.CodeConflict
	case http.StatusUnprocessableEntity:
		return mapping.CodeUnprocessable
	case http.StatusTooManyRequests:
		return mapping.CodeRateLimited
	case http.StatusServiceUnavailable:
		return mapping.CodeUnavailable
	}
	return mapping.CodeInternal
}

// Body is every JSON error answer: a code and a message that says what was
// wrong and what to do.
type Body struct {
	Code    mapping.Code `json:"code"`
	Message string       `json:"message"`
}

// Write answers e as JSON: status Status(e.Code), body {"code","message"}
// (never e.Err, which is for the log), and a Retry-After header in whole
// seconds, rounded up, for unavailable (at least 1) and for any code whose
// RetryAfter is set; a Retry-After already on the response is replaced only
// then. A HEAD request gets the status and headers without a body.
func Write(c echo.Context, e *mapping.Error) error {
	if e.Code == mapping.CodeUnavailable || e.RetryAfter > 0 {
		c.Response().Header().Set(echo.HeaderRetryAfter, strconv.Itoa(retryAfterSeconds(e.RetryAfter)))
	}
	return writeBody(c, Status(e.Code), Body{Code: e.Code, Message: e.Message})
}

// writeBody answers status with body as JSON, or without a body to a HEAD request.
func writeBody(c echo.Context, status int, body Body) error {
	if c.Request().Method == http.MethodHead {
		return c.NoContent(status)
	}
	return c.JSON(status, body)
}

// retryAfterSeconds rounds d up to whole seconds, at least one.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// internalMessage is what a client is told of an error whose details are only in the log.
const internalMessage = "internal error; the bridge logged the details. Retry later."

// Handler is the server's echo.HTTPErrorHandler. It finds a *mapping.Error
// in err's chain with errors.As (Echo's default handler does not unwrap) and
// answers it with Write, logging it at error level with its cause when its
// code is internal. Unavailable is not logged here, per request: it is logged
// where it arises (the store logs why it cannot store, once and then
// rate-limited). An *echo.HTTPError keeps its status, with the code of that
// status; a cancelled request gets 499 (the client went away); anything else
// is an internal error, logged once here with its details and answered
// without them. Nothing is written when the response is already committed.
func Handler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var me *mapping.Error
		var he *echo.HTTPError
		switch {
		case errors.As(err, &me):
			if me.Code == mapping.CodeInternal {
				logger.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
			}
			_ = Write(c, me)
		case errors.As(err, &he):
			status := he.Code
			if status == 0 {
				status = http.StatusInternalServerError
			}
			_ = writeBody(c, status, Body{Code: codeOf(status), Message: fmt.Sprint(he.Message)})
		case errors.Is(err, context.Canceled):
			_ = writeBody(c, 499, Body{Code: mapping.CodeUnavailable, Message: "request cancelled"})
		default:
			logger.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
			_ = Write(c, &mapping.Error{Code: mapping.CodeInternal, Message: internalMessage})
		}
	}
}
