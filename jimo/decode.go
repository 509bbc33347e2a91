package jimo

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/bridgeworks/bridge/mapping"
)

// MaxDepth is the deepest JSON nesting accepted in a session report or a
// webhook (objects and arrays, counted from the body's root), as on /v1.
const MaxDepth = mapping.MaxJSONDepth

// decodeObject reads body as one JSON object whose values are left raw.
// Anything else (bytes that are not UTF-8, nesting deeper than MaxDepth,
// malformed JSON, an array, trailing data) is an invalid error that names
// what was expected.
func decodeObject(body []byte, what string) (map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, mapping.Errorf(mapping.CodeInvalid, "%s body is empty; send a JSON object", what)
	}
	if trimmed[0] != '{' {
		return nil, mapping.Errorf(mapping.CodeInvalid, "%s body must be a JSON object", what)
	}
	if err := checkShape(trimmed, what); err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &fields); err != nil {
		return nil, &mapping.Error{Code: mapping.CodeInvalid, Message: what + " body is not valid JSON: " + jsonProblem(err), Err: err}
	}
	return fields, nil
}

// checkShape refuses, before encoding/json sees them, bytes that are not
// UTF-8 (encoding/json would replace them silently) and nesting deeper than
// MaxDepth (which would cost memory and time in every later reader, the admin
// page included). It scans once and allocates nothing.
func checkShape(b []byte, what string) error {
	if !utf8.Valid(b) {
		return mapping.Errorf(mapping.CodeInvalid, "%s body is not valid UTF-8; encode the JSON as UTF-8", what)
	}
	if mapping.JSONDepth(b, MaxDepth) > MaxDepth {
		return mapping.Errorf(mapping.CodeInvalid, "%s body is nested deeper than %d levels; flatten the attributes", what, MaxDepth)
	}
	return nil
}

// jsonProblem describes a JSON syntax error without echoing the input.
func jsonProblem(err error) string {
	if se, ok := err.(*json.SyntaxError); ok {
		return se.Error() + " at byte " + strconv.FormatInt(se.Offset, 10)
	}
	return err.Error()
}

// isNull reports whether a raw value is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// stringField reads fields[name] as a string; null or absent is "".
func stringField(fields map[string]json.RawMessage, name string) (string, error) {
	raw := fields[name]
	if isNull(raw) {
		return "", nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", mapping.Errorf(mapping.CodeInvalid, "field %q must be a string or null", name)
	}
	return s, nil
}

// boolField reads fields[name] as a boolean; null or absent is false.
func boolField(fields map[string]json.RawMessage, name string) (bool, error) {
	raw := fields[name]
	if isNull(raw) {
		return false, nil
	}
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, mapping.Errorf(mapping.CodeInvalid, "field %q must be true, false or null", name)
}

// objectField reads fields[name] as a JSON object; null or absent is nil.
func objectField(fields map[string]json.RawMessage, name string) (map[string]any, error) {
	raw := fields[name]
	if isNull(raw) {
		return nil, nil
	}
	// Numbers stay json.Number: integers beyond 2^53 keep every digit.
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if raw[0] != '{' || d.Decode(&m) != nil {
		return nil, mapping.Errorf(mapping.CodeInvalid, "field %q must be a JSON object or null", name)
	}
	return m, nil
}

// scalarString reads a raw value that may be a string or a number as a
// string; anything else (null, object, array, boolean) is "".
func scalarString(raw json.RawMessage) string {
	if isNull(raw) {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			return n.String()
		}
	}
	return ""
}
