package main

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

// profileResponse is the lookup API's body.
type profileResponse struct {
	Profile store.Profile `json:"profile"`
}

// getProfile answers GET /api/v1/profiles?identifier=KIND:VALUE.
func getProfile(store *store.Store) echo.HandlerFunc {
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
func listWarnings(store *store.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		ws, err := store.Warnings(c.Request().Context(), 500)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"warnings": ws})
	}
}
