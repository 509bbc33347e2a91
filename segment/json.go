package segment

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/bridgeworks/bridge/mapping"
)

// Decoding strategy: a body is checked once (checkJSON: UTF-8, depth, then
// the JSON grammar with encoding/json's scanner). From then on its bytes are
// known to be valid JSON, so objects and arrays are split into their members
// with the cheap scanner below instead of being parsed again, and events are
// re-encoded by copying their members' bytes. Only traits, which become Go
// values, go through json.Unmarshal.

// object is a JSON object with its values left encoded: keys match exactly
// (unlike struct decoding, which ignores case) and each value is decoded only
// if it is needed.
type object map[string]json.RawMessage

// checkJSON refuses what must not be decoded: bytes that are not UTF-8
// (encoding/json would replace them silently), nesting deeper than MaxDepth
// (checked before encoding/json sees the bytes) and invalid JSON.
func checkJSON(b []byte) error {
	if !utf8.Valid(b) {
		return mapping.Errorf(mapping.CodeInvalid, "the body is not valid UTF-8; encode the JSON as UTF-8")
	}
	if mapping.JSONDepth(b, MaxDepth) > MaxDepth {
		return mapping.Errorf(mapping.CodeInvalid, "the JSON is nested deeper than %d levels; flatten the properties", MaxDepth)
	}
	if !json.Valid(b) {
		// Only on failure: let encoding/json say where the syntax breaks.
		err := json.Unmarshal(b, new(json.RawMessage))
		if err == nil || len(bytes.TrimSpace(b)) == 0 {
			return mapping.Errorf(mapping.CodeInvalid, "the body is empty; send a JSON object")
		}
		return &mapping.Error{Code: mapping.CodeInvalid, Err: err,
			Message: "the body is not valid JSON (" + err.Error() + "); send UTF-8 JSON as Segment's libraries do"}
	}
	return nil
}

// firstByte returns the first non-space byte of b, or 0.
func firstByte(b []byte) byte {
	if i := skipSpace(b, 0); i < len(b) {
		return b[i]
	}
	return 0
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// isObject reports whether the JSON value b is an object.
func isObject(b []byte) bool { return firstByte(b) == '{' }

// absent reports whether a field is missing or null.
func absent(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// skipValue returns the index just past the JSON value that starts at b[i].
// b must be valid JSON.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just past the JSON string that starts at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// splitObject returns the members of the JSON object b, values left encoded
// (and aliasing b); a repeated key keeps its last value, as encoding/json
// does. b must be valid JSON and valid UTF-8 (as checkJSON ensures); ok is
// false if it is not an object.
func splitObject(b []byte) (o object, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	o = object{}
	for i = skipSpace(b, i+1); i < len(b) && b[i] != '}'; {
		end := skipString(b, i)
		key := b[i+1 : end-1]
		var k string
		if bytes.IndexByte(key, '\\') < 0 {
			k = string(key)
		} else if err := json.Unmarshal(b[i:end], &k); err != nil {
			return nil, false
		}
		i = skipSpace(b, end)
		i = skipSpace(b, i+1) // past ':'
		end = skipValue(b, i)
		o[k] = b[i:end:end]
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return o, true
}

// splitArray returns the elements of the JSON array b, left encoded (and
// aliasing b). b must be valid JSON (as checkJSON ensures); ok is false if
// it is not an array.
func splitArray(b []byte) (elems []json.RawMessage, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	elems = []json.RawMessage{}
	for i = skipSpace(b, i+1); i < len(b) && b[i] != ']'; {
		end := skipValue(b, i)
		elems = append(elems, b[i:end:end])
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return elems, true
}

// stringValue decodes raw if it is a JSON string. ok is false for any other
// type, missing or null included.
func stringValue(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		// Valid UTF-8 JSON without escapes: the bytes are the string.
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// idValue reads an identifier: a string, or a number (some SDKs send numeric
// user IDs) converted to its decimal string. A number must be a plain
// integer of at most maxNumericIDDigits digits (12345), or written otherwise
// but equal to an integer a float64 holds exactly (1.2345e4); anything else
// (1e300, 12.5) would become an ID nobody sent, so ok is false for it, as for
// other types. Missing and null give "", true.
func idValue(raw json.RawMessage) (value string, number bool, ok bool) {
	if absent(raw) {
		return "", false, true
	}
	switch c := raw[0]; {
	case c == '"':
		s, ok := stringValue(raw)
		return s, false, ok
	case isNumber(raw):
		if isInteger(raw) {
			digits := len(raw)
			if raw[0] == '-' {
				digits--
			}
			return string(raw), true, digits <= maxNumericIDDigits
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return "", false, false
		}
		return strconv.FormatFloat(f, 'f', -1, 64), true, true
	default:
		return "", false, false
	}
}

// maxNumericIDDigits is the most digits a numeric identifier may have: a
// 64-bit integer's.
const maxNumericIDDigits = 20

// isNumber reports whether the valid JSON value raw is a number.
func isNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

func isInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// decodeObject splits raw if it is a JSON object. ok is false for any other
// type; missing, null and [] (an empty map as PHP encodes it, which Segment
// accepts) give nil, true. raw must be valid JSON.
func decodeObject(raw json.RawMessage) (object, bool) {
	if absent(raw) || emptyArray(raw) {
		return nil, true
	}
	return splitObject(raw)
}

// emptyArray reports whether the valid JSON value raw is [] (spaces allowed).
func emptyArray(raw json.RawMessage) bool {
	i := skipSpace(raw, 0)
	return i < len(raw) && raw[i] == '[' && firstByte(raw[i+1:]) == ']'
}

// quote encodes s as a JSON string.
func quote(s string) json.RawMessage { return appendString(nil, s) }

// appendString appends s as a JSON string, escaping only what JSON requires.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// encodeObject encodes o compactly, keys sorted, values copied without the
// whitespace between tokens. Its values must be valid JSON.
func encodeObject(o object) json.RawMessage {
	keys := make([]string, 0, len(o))
	size := 2
	for k, v := range o {
		keys = append(keys, k)
		size += len(k) + len(v) + 4
	}
	slices.Sort(keys)
	buf := make([]byte, 0, size)
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, k)
		buf = append(buf, ':')
		buf = appendCompact(buf, o[k])
	}
	return append(buf, '}')
}

// appendCompact appends the valid JSON value v without whitespace outside strings.
func appendCompact(dst, v []byte) []byte {
	start, inString := 0, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case ' ', '\t', '\r', '\n':
			dst = append(dst, v[start:i]...)
			start = i + 1
		}
	}
	return append(dst, v[start:]...)
}

// merge copies into dst every key of src that dst lacks (or holds as null),
// merging nested objects present in both; dst's values win. It returns dst,
// allocated if nil.
func merge(dst, src object) object {
	if dst == nil {
		dst = make(object, len(src))
	}
	for k, sv := range src {
		dv, ok := dst[k]
		if !ok || absent(dv) || emptyArray(dv) {
			dst[k] = sv
			continue
		}
		do, dok := splitObject(dv)
		so, sok := splitObject(sv)
		if dok && sok {
			dst[k] = encodeObject(merge(do, so))
		}
	}
	return dst
}
