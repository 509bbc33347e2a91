package segment

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"
)

// WriteKeys is a set of accepted Segment write keys. The zero value accepts nothing.
type WriteKeys struct {
	digests [][sha256.Size]byte
}

// NewWriteKeys returns the set of keys, trimmed; empty entries are ignored,
// so the result of strings.Split on a comma-separated list can be passed as is.
func NewWriteKeys(keys []string) WriteKeys {
	var w WriteKeys
	seen := map[[sha256.Size]byte]bool{}
	for _, k := range keys {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		d := sha256.Sum256([]byte(k))
		if !seen[d] {
			seen[d] = true
			w.digests = append(w.digests, d)
		}
	}
	return w
}

// Len returns the number of keys in the set.
func (w WriteKeys) Len() int { return len(w.digests) }

// Contains reports whether key is in the set. It compares fixed-size digests
// against every key in constant time, so timing reveals neither which key
// nor how much of it matched. The empty key is never contained.
func (w WriteKeys) Contains(key string) bool {
	if key == "" {
		return false
	}
	d := sha256.Sum256([]byte(key))
	found := 0
	for i := range w.digests {
		found |= subtle.ConstantTimeCompare(d[:], w.digests[i][:])
	}
	return found == 1
}

// BasicWriteKey reads the write key from an Authorization header value of the
// form "Basic base64(writeKey + ":")", as Segment's libraries send it; the
// password part is ignored. ok is false when the value is not Basic
// credentials with a non-empty user part.
func BasicWriteKey(authorization string) (key string, ok bool) {
	scheme, encoded, found := strings.Cut(strings.TrimSpace(authorization), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	encoded = strings.TrimSpace(encoded)
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		if raw, err = base64.RawStdEncoding.DecodeString(encoded); err != nil {
			return "", false
		}
	}
	key, _, _ = strings.Cut(string(raw), ":")
	return key, key != ""
}
