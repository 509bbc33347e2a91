package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strings"
	"time"
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

// secretKeys are JSON keys whose values the page never shows, whatever the
// protocol packages left in a raw message (they strip these already).
var secretKeys = map[string]bool{
	"writekey": true, "signature": true, "secret": true, "password": true, "apikey": true,
	"api_key": true, "x-api-key": true, "authorization": true, "sharedsecret": true,
}

// prettyRaw indents a raw message for a <pre> block, with secret-looking
// fields redacted. Text that is not JSON is returned as it is.
func prettyRaw(raw string) string {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	v = redact(v)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return raw
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if secretKeys[strings.ToLower(k)] {
				x[k] = "[redacted]"
				continue
			}
			x[k] = redact(e)
		}
	case []any:
		for i, e := range x {
			x[i] = redact(e)
		}
	}
	return v
}
