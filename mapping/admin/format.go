package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bridgeworks/bridge/mapping"
)

// funcs are the template functions; they read the Admin's clock.
func (a *Admin) funcs() template.FuncMap {
	return template.FuncMap{
		"when": when,
		"iso": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format(time.RFC3339)
		},
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return humanDuration(a.now().Sub(t)) + " ago"
		},
		"value": traitValue,
		"shown": showRaw,
	}
}

// when formats a time for the page: UTC, to the second.
func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// humanDuration renders d roughly: "45 s", "12 min", "3 h 5 min", "2 d 4 h".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) - 60*h; m > 0 {
			return fmt.Sprintf("%d h %d min", h, m)
		}
		return fmt.Sprintf("%d h", h)
	}
	days := int(d.Hours()) / 24
	if h := int(d.Hours()) - 24*days; h > 0 {
		return fmt.Sprintf("%d d %d h", days, h)
	}
	return fmt.Sprintf("%d d", days)
}

// traitValue renders a trait value: strings as they are, anything else as JSON.
func traitValue(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // html/template escapes; keep what the operator sees readable
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// Redacted replaces the value of every secret-looking field a client sent in
// a raw payload, wherever the admin pages or the API show one.
const Redacted = "[redacted]"

// secretKeys are JSON keys (lower case, without "_", "-" and ".") whose
// values are credentials: never shown, whatever the protocol packages left in
// a raw message or a job payload. Identity fields stay: a Jimo session's
// "token" or a webhook's "identifyToken" is an identifier shown on purpose.
var secretKeys = map[string]bool{
	"writekey": true, "apikey": true, "xapikey": true, "authorization": true, "proxyauthorization": true,
	"signature": true, "xsignature": true, "accesstoken": true, "refreshtoken": true, "authtoken": true,
	"bearertoken": true, "idtoken": true, "apitoken": true, "privatekey": true, "cookie": true, "setcookie": true,
}

// secretKey reports whether a JSON key names a credential: one of
// secretKeys, or any key containing "password", "passwd" or "secret"
// ("clientSecret", "db_password"), compared without case, "_", "-" or ".".
func secretKey(k string) bool {
	n := strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', '.':
			return -1
		}
		return unicode.ToLower(r)
	}, k)
	return secretKeys[n] || strings.Contains(n, "password") || strings.Contains(n, "passwd") || strings.Contains(n, "secret")
}

// redact replaces the values of secret keys in v, in place, and reports
// whether it replaced any.
func redact(v any) bool {
	changed := false
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if secretKey(k) {
				x[k] = Redacted
				changed = true
				continue
			}
			changed = redact(e) || changed
		}
	case []any:
		for _, e := range x {
			changed = redact(e) || changed
		}
	}
	return changed
}

// decodeRaw decodes a stored payload with numbers kept as written; ok is
// false when it is not one JSON value.
func decodeRaw(raw string) (v any, ok bool) {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	return v, true
}

// encodeRaw encodes v without HTML escaping (html/template escapes what the
// page shows), indented with indent unless it is "".
func encodeRaw(v any, indent string) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// RedactJSON returns raw with the values of secret-looking fields (see
// secretKey) replaced by Redacted, re-encoded compactly. raw is returned as
// it is when it has no such field or is not JSON.
func RedactJSON(raw string) string {
	v, ok := decodeRaw(raw)
	if !ok || !redact(v) {
		return raw
	}
	out, err := encodeRaw(v, "")
	if err != nil {
		return raw
	}
	return out
}

// Caps on what a page renders of one raw payload: a stored payload is at
// most what its route accepted, but indenting a deeply nested one multiplies
// it (16 KB nested 8,000 levels deep indents to 131 MB).
const (
	// maxShownBytes is the most of one payload a page shows.
	maxShownBytes = 16 << 10
	// maxPrettyBytes bounds the indented form; past it the compact one is shown.
	maxPrettyBytes = 4 * maxShownBytes
	// maxPrettyDepth is the deepest payload that is indented.
	maxPrettyDepth = 16
)

// shown is a raw payload as a page shows it.
type shown struct {
	// Text is the payload, redacted, indented or compact, at most maxShownBytes.
	Text string
	// Note says when Text is cut short: "truncated, N bytes in all".
	Note string
}

// showRaw renders a raw payload for a <pre> block, with secret-looking fields
// redacted. JSON no deeper than maxPrettyDepth whose compact form fits in
// maxShownBytes is indented; other JSON is shown compact, and text that is
// not JSON as it is. Whatever is longer than maxShownBytes is cut there (at a
// character boundary) with a Note giving the stored size, so what a page
// renders of one payload stays bounded whatever was stored.
func showRaw(raw string) shown {
	text := raw
	if v, ok := decodeRaw(raw); ok {
		redact(v)
		if compact, err := encodeRaw(v, ""); err == nil {
			text = compact
			if len(compact) <= maxShownBytes && mapping.JSONDepth([]byte(compact), maxPrettyDepth) <= maxPrettyDepth {
				if pretty, err := encodeRaw(v, "  "); err == nil && len(pretty) <= maxPrettyBytes {
					text = pretty
				}
			}
		}
	}
	if len(text) <= maxShownBytes {
		return shown{Text: text}
	}
	cut := maxShownBytes
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return shown{Text: text[:cut] + "…", Note: fmt.Sprintf("truncated, %d bytes in all", len(raw))}
}
