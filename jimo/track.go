package jimo

import (
	"encoding/json"
	"sort"
	"strings"
	"unicode"
)

// TrackName names a Jimo webhook event for Segment, in Segment's
// "Object Action" style prefixed with Jimo: "tour.completed" becomes
// "Jimo Tour Completed", "survey.answered" "Jimo Survey Answered",
// "checklist_task.done" "Jimo Checklist Task Done". Words are split at any
// character that is not a letter or digit and at camelCase boundaries; each
// is capitalised. A non-blank event with no words is "Jimo Event"; a blank
// one has no name (""), and causes no track.
func TrackName(jimoEvent string) string {
	if strings.TrimSpace(jimoEvent) == "" {
		return ""
	}
	var words []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			cur[0] = unicode.ToUpper(cur[0])
			words = append(words, string(cur))
			cur = cur[:0]
		}
	}
	var prev rune
	for _, r := range jimoEvent {
		switch {
		case !unicode.IsLetter(r) && !unicode.IsDigit(r):
			flush()
		case unicode.IsUpper(r) && (unicode.IsLower(prev) || unicode.IsDigit(prev)):
			flush()
			cur = append(cur, r)
		default:
			cur = append(cur, r)
		}
		prev = r
	}
	flush()
	if len(words) == 0 {
		return "Jimo Event"
	}
	return "Jimo " + strings.Join(words, " ")
}

// WebhookProperties returns the Segment track properties of a Jimo webhook
// body (mapping.Message.Raw of a Jimo webhook): "event" and "version" as Jimo
// sent them, and every field of every other top-level object except "jimer"
// (the person, who is the track's user) flattened one level with the object's
// name as prefix: experience.id becomes "experience_id", experience.name
// "experience_name", data.answers "data_answers" (values kept as they are,
// nested or not). Other top-level scalars are kept under their own names;
// "time" is the track's timestamp and is left out. A body that is not a JSON
// object gives nil.
func WebhookProperties(raw json.RawMessage) map[string]any {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil || body == nil {
		return nil
	}
	props := map[string]any{}
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := body[k]
		switch k {
		case "jimer", "time":
			continue
		}
		var inner map[string]json.RawMessage
		if len(v) > 0 && v[0] == '{' && json.Unmarshal(v, &inner) == nil {
			for ik, iv := range inner {
				name := k + "_" + ik
				if _, taken := props[name]; !taken {
					props[name] = iv
				}
			}
			continue
		}
		if _, taken := props[k]; !taken && string(v) != "null" {
			props[k] = v
		}
	}
	return props
}
