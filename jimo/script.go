package jimo

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// bridgeJS is the companion script; see the comment at its top for what it does.
//
//go:embed bridge.js
var bridgeJS []byte

// scriptETag is the strong entity tag of bridgeJS.
var scriptETag = func() string {
	sum := sha256.Sum256(bridgeJS)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}()

// ScriptSource returns the companion script served at GET /jimo/bridge.js.
func ScriptSource() []byte { return append([]byte(nil), bridgeJS...) }

// Script serves the companion script (GET and HEAD /jimo/bridge.js) as
// application/javascript, cacheable for five minutes, with an ETag; a request
// whose If-None-Match names it gets 304 Not Modified without a body.
func (h *Handler) Script(c echo.Context) error {
	header := c.Response().Header()
	header.Set(echo.HeaderCacheControl, "public, max-age=300")
	header.Set("ETag", scriptETag)
	header.Set(echo.HeaderXContentTypeOptions, "nosniff")
	if etagMatches(c.Request().Header.Get("If-None-Match"), scriptETag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, "application/javascript; charset=utf-8", bridgeJS)
}

// etagMatches implements If-None-Match's weak comparison against etag.
func etagMatches(ifNoneMatch, etag string) bool {
	for _, candidate := range strings.Split(ifNoneMatch, ",") {
		candidate = strings.TrimSpace(candidate)
		if candidate == "*" || strings.TrimPrefix(candidate, "W/") == etag {
			return true
		}
	}
	return false
}
