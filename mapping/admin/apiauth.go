package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
)

// RequireAPI is the middleware of the JSON API (/api/v1): it accepts the
// admin password as Basic auth for user "admin" or as "Authorization: Bearer
// <password>", compared in constant time. Wrong passwords count against the
// client IP in the same lockout as the login form, so guessing through the
// API is as slow as through the page. Every answer behind it, refusals
// included, carries Cache-Control: no-store and X-Content-Type-Options: nosniff.
func (a *Admin) RequireAPI() echo.MiddlewareFunc {
	want := sha256.Sum256(a.password)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			// Answers hold personal data: never cached, never sniffed; also the refusals.
			h := c.Response().Header()
			h.Set(echo.HeaderCacheControl, "no-store")
			h.Set(echo.HeaderXContentTypeOptions, "nosniff")
			ctx, ip, now := c.Request().Context(), clientIP(c), a.now()
			wait, failed, err := a.locked(ctx, ip, now)
			if err != nil {
				return err
			}
			if wait > 0 {
				return apiLockedOut(wait)
			}
			var got []byte
			req := c.Request()
			if user, pass, ok := req.BasicAuth(); ok && user == "admin" {
				got = []byte(pass)
			} else if token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
				got = []byte(strings.TrimSpace(token))
			}
			sum := sha256.Sum256(got)
			if len(got) == 0 || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				if len(got) > 0 {
					wait, err := a.wrongPassword(ctx, ip, now)
					if err != nil {
						return err
					}
					if wait > 0 {
						return apiLockedOut(wait)
					}
				}
				c.Response().Header().Set("WWW-Authenticate", `Basic realm="bridge admin", charset="UTF-8"`)
				return mapping.Errorf(mapping.CodeUnauthorized, "the admin API needs the admin password: Basic auth as user admin, or Authorization: Bearer <password>")
			}
			if err := a.rightPassword(ctx, ip, failed); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// apiLockedOut is the refusal of a locked-out client: rate_limited, with
// Retry-After (whole seconds, rounded up) set by the error handler from RetryAfter.
func apiLockedOut(wait time.Duration) error {
	secs := int(math.Ceil(wait.Seconds()))
	return &mapping.Error{Code: mapping.CodeRateLimited, RetryAfter: wait,
		Message: fmt.Sprintf("too many wrong passwords from this address; retry after %d s", secs)}
}
