// Package mapping is the bridge's domain: identifiers and their kinds,
// messages and the jobs they cause, the unification rules (Unify, a pure
// function), and the error codes. It knows nothing of Segment's or Jimo's
// wire formats (the protocol packages translate into its types), of HTTP, or
// of the database: the store (mapping/store) keeps messages, the identity
// graph and the outbox in one database and applies these rules; the outbox's
// delivery policy is mapping/outbox; the admin page is mapping/admin.
package mapping

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kind names what an identifier identifies.
type Kind string

// The identifier kinds of the identity model.
const (
	// KindUserID is the shared user ID: Segment's userId, and Jimo's token in shared mode.
	KindUserID Kind = "user_id"
	// KindAnonymousID is a browser's Segment anonymousId.
	KindAnonymousID Kind = "anonymous_id"
	// KindJimoToken is a Jimo session token that is not the user ID (derived mode, legacy tokens).
	KindJimoToken Kind = "jimo_token"
	// KindEmail is an email address; it links profiles only when merging on email is enabled.
	KindEmail Kind = "email"
)

// Kinds lists every identifier kind, in display order.
var Kinds = []Kind{KindUserID, KindAnonymousID, KindJimoToken, KindEmail}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// Identifier is one (kind, value) pair.
type Identifier struct {
	Kind  Kind   `json:"kind"`
	Value string `json:"value"`
}

// String renders the identifier as KIND:VALUE, the form ParseIdentifier reads.
func (id Identifier) String() string { return string(id.Kind) + ":" + id.Value }

// ParseIdentifier reads KIND:VALUE (for example "user_id:u_123") and normalises the value.
func ParseIdentifier(s string) (Identifier, error) {
	kind, value, ok := strings.Cut(s, ":")
	if !ok || !Kind(kind).Valid() {
		return Identifier{}, Errorf(CodeInvalid, "identifier %q must be KIND:VALUE with KIND one of user_id, anonymous_id, jimo_token, email", truncate(s, 60))
	}
	v, reason := Normalize(value)
	if reason != "" {
		return Identifier{}, Errorf(CodeInvalid, "identifier value is not usable: %s", reason)
	}
	return Identifier{Kind: Kind(kind), Value: v}, nil
}

// MaxIdentifierLength is the longest identifier value accepted, in characters.
const MaxIdentifierLength = 400

// Reasons an identifier value is refused; they appear in metrics and on the admin page.
const (
	ReasonEmpty   = "empty"
	ReasonTooLong = "too_long"
	ReasonControl = "control_characters"
	ReasonInvalid = "invalid_utf8"
	ReasonBlocked = "blocked_value"
)

// Normalize trims v and checks rule 1 of the identity model. It returns the
// normalised value, or a non-empty reason why v is not an identifier.
func Normalize(v string) (string, string) {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return "", ReasonEmpty
	case !utf8.ValidString(v):
		return "", ReasonInvalid
	case utf8.RuneCountInString(v) > MaxIdentifierLength:
		return "", ReasonTooLong
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return "", ReasonControl
		}
	}
	return v, ""
}

// caseInsensitiveBlocked are PostHog's illegal distinct IDs, refused in any case.
var caseInsensitiveBlocked = []string{
	"anonymous", "guest", "distinctid", "distinct_id", "id", "not_authenticated",
	"email", "undefined", "true", "false",
}

// exactBlocked are refused only as written.
var exactBlocked = []string{"[object Object]", "NaN", "None", "none", "null", "0", "-1"}

// zerosAndDashes is Segment's suggestion: values made only of zeros and dashes
// (a nil UUID, "0000", "---") are placeholders, not people.
var zerosAndDashes = regexp.MustCompile(`^[0-]*$`)

// Blocklist decides rule 2: values that are never identifiers. The zero
// Blocklist is the built-in list alone.
type Blocklist struct {
	extra map[string]bool
}

// NewBlocklist returns the built-in blocklist plus extra values (compared exactly, after trimming).
func NewBlocklist(extra []string) Blocklist {
	b := Blocklist{extra: map[string]bool{}}
	for _, e := range extra {
		if e = strings.TrimSpace(e); e != "" {
			b.extra[e] = true
		}
	}
	return b
}

// Blocked reports whether the normalised value v must not be used as an identifier.
func (b Blocklist) Blocked(v string) bool {
	if b.extra[v] || zerosAndDashes.MatchString(v) {
		return true
	}
	unquoted := strings.Trim(v, `"'`)
	for _, s := range []string{v, unquoted} {
		for _, e := range exactBlocked {
			if s == e {
				return true
			}
		}
		for _, e := range caseInsensitiveBlocked {
			if strings.EqualFold(s, e) {
				return true
			}
		}
	}
	return b.extra[unquoted]
}

// Check normalises v and applies the blocklist. It returns the value to use or
// the reason it is refused.
func (b Blocklist) Check(v string) (string, string) {
	n, reason := Normalize(v)
	if reason != "" {
		return "", reason
	}
	if b.Blocked(n) {
		return "", ReasonBlocked
	}
	return n, ""
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// Errorf builds an *Error with a code and a message for the client.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
