package main

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

// statusOf is the one table from error codes to HTTP statuses.
var statusOf = map[mapping.Code]int{
	mapping.CodeInvalid:       http.StatusBadRequest,
	mapping.CodeUnauthorized:  http.StatusUnauthorized,
	mapping.CodeNotFound:      http.StatusNotFound,
	mapping.CodeConflict:      http.StatusConflict,
	mapping.CodeTooLarge:      http.StatusBadRequest, // Segment answers 400 for oversize
	mapping.CodeUnprocessable: http.StatusUnprocessableEntity,
	mapping.CodeRateLimited:   http.StatusTooManyRequests,
	mapping.CodeUnavailable:   http.StatusServiceUnavailable,
	mapping.CodeInternal:      http.StatusInternalServerError,
}

// errorBody is every error response: a code and a message that says what to do.
type errorBody struct {
	Code    mapping.Code `json:"code"`
	Message string       `json:"message"`
}

// errorHandler renders *mapping.Error (found with errors.As) and Echo's own
// errors as JSON; anything else is an internal error, logged once here with
// its details and shown to the client without them.
func errorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var body errorBody
		var status int
		var me *mapping.Error
		var he *echo.HTTPError
		switch {
		case errors.As(err, &me):
			body = errorBody{Code: me.Code, Message: me.Message}
			status = statusOf[me.Code]
			// Unavailable is logged where it arises (the store logs why it
			// cannot store, once and then rate-limited), not per request.
			if me.Code == mapping.CodeInternal {
				logger.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
			}
			if me.Code == mapping.CodeUnavailable || me.RetryAfter > 0 {
				c.Response().Header().Set(echo.HeaderRetryAfter, strconv.Itoa(retryAfterSeconds(me.RetryAfter)))
			}
		case errors.As(err, &he):
			status = he.Code
			body = errorBody{Code: codeForStatus(status), Message: fmt.Sprint(he.Message)}
		case errors.Is(err, context.Canceled):
			status = 499 // the client went away; nothing to tell it
			body = errorBody{Code: mapping.CodeUnavailable, Message: "request cancelled"}
		default:
			logger.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
			status = http.StatusInternalServerError
			body = errorBody{Code: mapping.CodeInternal, Message: "internal error; the bridge logged the details. Retry later."}
		}
		if status == 0 {
			status = http.StatusInternalServerError
		}
		if c.Request().Method == http.MethodHead {
			c.NoContent(status)
			return
		}
		c.JSON(status, body)
	}
}

// retryAfterSeconds rounds d up to whole seconds, at least one.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

func codeForStatus(status int) mapping.Code {
	for code, s := range statusOf {
		if s == status && code != mapping.CodeTooLarge {
			return code
		}
	}
	if status == http.StatusMethodNotAllowed || status == http.StatusRequestEntityTooLarge {
		return mapping.CodeInvalid
	}
	return mapping.CodeInternal
}
