package main

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
)

// requireAdmin accepts the admin password as Basic auth for user "admin" or
// as "Authorization: Bearer <password>", compared in constant time.
func requireAdmin(password string) echo.MiddlewareFunc {
	want := []byte(password)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			var got []byte
			req := c.Request()
			if user, pass, ok := req.BasicAuth(); ok && user == "admin" {
				got = []byte(pass)
			} else if token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
				got = []byte(strings.TrimSpace(token))
			}
			if len(got) == 0 || subtle.ConstantTimeCompare(got, want) != 1 {
				c.Response().Header().Set("WWW-Authenticate", `Basic realm="bridge admin", charset="UTF-8"`)
				return mapping.Errorf(mapping.CodeUnauthorized, "the admin API needs the admin password: Basic auth as user admin, or Authorization: Bearer <password>")
			}
			return next(c)
		}
	}
}

// profileResponse is the lookup API's body.
type profileResponse struct {
	Profile mapping.Profile `json:"profile"`
}

// getProfile answers GET /api/v1/profiles?identifier=KIND:VALUE.
func getProfile(store *mapping.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		raw := c.QueryParam("identifier")
		if raw == "" {
			return mapping.Errorf(mapping.CodeInvalid, "add ?identifier=KIND:VALUE, for example ?identifier=user_id:u_123")
		}
		id, err := mapping.ParseIdentifier(raw)
		if err != nil {
			return err
		}
		p, err := store.ProfileOf(c.Request().Context(), id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, profileResponse{Profile: p})
	}
}

// listWarnings answers GET /api/v1/warnings: identifiers an operator should look at.
func listWarnings(store *mapping.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		ws, err := store.Warnings(c.Request().Context(), 500)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"warnings": ws})
	}
}
