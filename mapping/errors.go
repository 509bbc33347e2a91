package mapping

import (
	"errors"
	"time"
)

// Code classifies an error for the client; mapping/httperror maps each code to one HTTP status.
type Code string

// The error codes the bridge answers with.
const (
	CodeInvalid       Code = "invalid"       // the request cannot be understood; do not retry as is
	CodeUnauthorized  Code = "unauthorized"  // missing or wrong credentials
	CodeForbidden     Code = "forbidden"     // refused whoever asks (an origin not allowed by CORS); credentials do not help
	CodeNotFound      Code = "not_found"     // nothing by that identifier
	CodeConflict      Code = "conflict"      // the request contradicts the current state
	CodeTooLarge      Code = "too_large"     // body, event or batch over a limit
	CodeUnprocessable Code = "unprocessable" // well-formed but refused by policy (guessable token)
	CodeRateLimited   Code = "rate_limited"  // slow down and retry after the indicated time
	CodeUnavailable   Code = "unavailable"   // cannot store now (shutting down, disk full, locked, overloaded); retry after a while
	CodeInternal      Code = "internal"      // a bug or a failing disk; details are in the log
)

// Error is the one error type the bridge returns to clients: a code and a
// message that says what was wrong and what to do. Err, if set, is the cause;
// it is logged, never shown to the client.
type Error struct {
	Code    Code
	Message string
	Err     error
	// RetryAfter, if set, is how long the client should wait before retrying
	// (the Retry-After header of a 503 or 429).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return string(e.Code) + ": " + e.Message + ": " + e.Err.Error()
	}
	return string(e.Code) + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the code of the first *Error in err's chain, or CodeInternal.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
