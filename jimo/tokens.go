package jimo

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/bridgeworks/bridge/mapping"
)

// Mode says what the bridge hands to Jimo as the session token.
type Mode string

// The token modes.
const (
	// ModeShared (the default): the Jimo token is the shared user ID itself,
	// which is what Jimo's Segment integration expects.
	ModeShared Mode = "shared"
	// ModeDerived: the Jimo token is DeriveToken(secret, userID), an opaque
	// value; the bridge translates between token and user ID.
	ModeDerived Mode = "derived"
)

// ParseMode reads a token mode as configured (BRIDGE_JIMO_TOKEN_MODE). It
// ignores case and surrounding space; an empty string is ModeShared. Any other
// value is an error that names the accepted ones.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", string(ModeShared):
		return ModeShared, nil
	case string(ModeDerived):
		return ModeDerived, nil
	}
	return "", fmt.Errorf("jimo token mode %q is not one of shared, derived", s)
}

// String returns the mode as configured ("shared" or "derived").
func (m Mode) String() string { return string(m) }

// MinTokenLength is the shortest user ID accepted as a Jimo token in shared
// mode, in characters.
const MinTokenLength = 16

// MinTokenEntropyBits is the least estimated entropy (Shannon entropy of the
// value's character distribution times its length) of a user ID accepted as a
// Jimo token in shared mode.
const MinTokenEntropyBits = 64

// minDistinctCharacters is the fewest different characters a token may use.
const minDistinctCharacters = 6

// derivedHint ends every Guessable reason: the way out that always works.
const derivedHint = "; use a random ID (UUID, NanoID, CUID) or set BRIDGE_JIMO_TOKEN_MODE=derived so Jimo gets an opaque token instead"

// Guessable reports why userID is unsafe to hand to Jimo as a session token
// (shared mode), or "" when it is fine. A Jimo token identifies the person to
// Jimo without a password, so it must be unique and not guessable: the value
// is refused when it is not a usable identifier (empty, control characters,
// over 400 characters), blocked by blocklist, looks like an email address, is
// all digits, is shorter than MinTokenLength, uses fewer than six different
// characters, or has less than MinTokenEntropyBits of estimated entropy. A
// UUID, a NanoID or a CUID passes. The reason is a sentence for the client and
// the admin page; it does not repeat the value.
func Guessable(userID string, blocklist mapping.Blocklist) (reason string) {
	v, why := mapping.Normalize(userID)
	if why != "" {
		return "user ID is not a usable identifier (" + why + ")" + derivedHint
	}
	switch {
	case blocklist.Blocked(v):
		return "user ID is a placeholder value that many users share, not a unique ID" + derivedHint
	case strings.Contains(v, "@"):
		return "user ID looks like an email address, which anyone who knows the address can use to act as that user in Jimo" + derivedHint
	case allDigits(v):
		return "user ID is all digits, so anyone can guess another user's" + derivedHint
	case utf8.RuneCountInString(v) < MinTokenLength:
		return fmt.Sprintf("user ID is shorter than %d characters, so it can be guessed", MinTokenLength) + derivedHint
	}
	bits, distinct := entropy(v)
	if distinct < minDistinctCharacters || bits < MinTokenEntropyBits {
		return fmt.Sprintf("user ID is too regular to be unguessable (about %.0f bits of entropy, %d different characters; at least %d bits are needed)", bits, distinct, MinTokenEntropyBits) + derivedHint
	}
	return ""
}

func allDigits(v string) bool {
	for _, r := range v {
		if r < '0' || r > '9' {
			return false
		}
	}
	return v != ""
}

// entropy estimates the information in v: the Shannon entropy of its
// character distribution times its length, and the number of distinct
// characters. It is a cheap estimate that catches repeated and low-variety
// values; it cannot detect predictable structure such as "abcdefghijklmnop".
func entropy(v string) (bits float64, distinct int) {
	counts := map[rune]int{}
	n := 0
	for _, r := range v {
		counts[r]++
		n++
	}
	var h float64
	for _, c := range counts {
		p := float64(c) / float64(n)
		h -= p * math.Log2(p)
	}
	return h * float64(n), len(counts)
}

// tokenPrefix separates derived tokens from any other use of the same secret.
const tokenPrefix = "jimo-token:"

// DeriveToken returns the Jimo token of userID in derived mode: the URL-safe
// base64 (no padding) of HMAC-SHA256(secret, "jimo-token:"+userID), all 256
// bits, 43 characters. The same secret and user ID always give the same token;
// without the secret the token reveals nothing about the user ID.
func DeriveToken(secret []byte, userID string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(tokenPrefix + userID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Sign returns the signature the app's backend computes for value:
// hex(HMAC-SHA256(secret, value)), lowercase. VerifySignature accepts it.
func Sign(secret []byte, value string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports whether signatureHex is hex(HMAC-SHA256(secret,
// value)), in either case of hex digits, comparing in constant time. It is
// false for an empty secret (anyone can compute that), for malformed hex and
// for a signature of the wrong length.
func VerifySignature(secret []byte, value, signatureHex string) bool {
	if len(secret) == 0 {
		return false
	}
	got, err := hex.DecodeString(signatureHex)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(value))
	return hmac.Equal(got, m.Sum(nil))
}
