package jimo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// MaxSessionBody is the largest POST /jimo/session body accepted, in bytes.
const MaxSessionBody = 16 << 10

// Message types of session reports.
const (
	// TypeSession is a session reset or identify that names a user.
	TypeSession = "session"
	// TypeLogout is a session reset to no user; it links nothing.
	TypeLogout = "logout"
)

// RejectedGuessableToken is Message.Rejected for a shared-mode session whose
// user ID is guessable: the message is stored so operators see the warning,
// but it links nothing.
const RejectedGuessableToken = "guessable_token"

// SessionRequest is one POST /jimo/session body, as the page sent it.
// Strings are as received (Report trims them).
type SessionRequest struct {
	// Token is the value the page passed to Jimo's session:reset or identify;
	// in shared mode it is the user ID. "" (or JSON null) with no UserID is a logout.
	Token string
	// UserID is the app's user ID. In derived mode it is what the page wants a
	// Jimo token for; in shared mode it may repeat Token.
	UserID string
	// AnonymousID is the browser's Segment anonymous ID, when known.
	AnonymousID string
	// Signature is hex(HMAC-SHA256(signing secret, user ID or token)) from the app's backend.
	Signature string
	// Impersonating marks a support session acting as the user: stored, links nothing.
	Impersonating bool
	// Email, Name and Attributes are what the page set on Jimo's user.
	Email      string
	Name       string
	Attributes map[string]any
	// MessageID is an optional client-chosen ID of this report (bridge.js sends
	// a random one), so that a resent report deduplicates.
	MessageID string
	// Raw is the body with "signature" removed, as DecodeSession read it. When
	// nil, Report stores a re-encoding of the fields above.
	Raw json.RawMessage
}

// DecodeSession reads a POST /jimo/session body. The body must be a JSON
// object; the known fields must have their types (strings or null; a boolean
// or null for impersonating; an object or null for attributes), otherwise the
// error is a *mapping.Error with CodeInvalid that names the field. Unknown
// fields are ignored but kept in Raw; the signature is never kept in Raw.
func DecodeSession(body []byte) (SessionRequest, error) {
	fields, err := decodeObject(body, "session")
	if err != nil {
		return SessionRequest{}, err
	}
	var req SessionRequest
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"token", &req.Token},
		{"userId", &req.UserID},
		{"anonymousId", &req.AnonymousID},
		{"signature", &req.Signature},
		{"email", &req.Email},
		{"name", &req.Name},
		{"messageId", &req.MessageID},
	} {
		if *f.dst, err = stringField(fields, f.name); err != nil {
			return SessionRequest{}, err
		}
	}
	if req.Impersonating, err = boolField(fields, "impersonating"); err != nil {
		return SessionRequest{}, err
	}
	if req.Attributes, err = objectField(fields, "attributes"); err != nil {
		return SessionRequest{}, err
	}
	delete(fields, "signature")
	if req.Raw, err = json.Marshal(fields); err != nil {
		return SessionRequest{}, err
	}
	return req, nil
}

// SessionResponse is the answer to POST /jimo/session.
type SessionResponse struct {
	// UserID is the user the session belongs to; "" after a logout.
	UserID string `json:"userId"`
	// JimoToken is what the page must pass to Jimo's identify: the user ID in
	// shared mode, the derived token in derived mode; "" after a logout and for
	// an impersonated session (a support agent must not be identified to Jimo).
	JimoToken string `json:"jimoToken"`
}

// SessionConfig is the token policy of session reports.
type SessionConfig struct {
	// Mode is ModeShared (the zero value means shared) or ModeDerived.
	Mode Mode
	// SigningSecret is shared with the app's backend, which signs user IDs
	// with it (BRIDGE_JIMO_SIGNING_SECRET). Required in derived mode and when
	// RequireSignature is set.
	SigningSecret []byte
	// RequireSignature makes shared-mode reports without a valid signature fail
	// with 401. Derived mode always requires one. The bridge sets it whenever
	// the operator configured SigningSecret (or asked for it), DESIGN §4.
	RequireSignature bool
	// Blocklist refuses placeholder user IDs.
	Blocklist mapping.Blocklist
	// TokenSecret derives Jimo tokens in derived mode (see DeriveToken); required there.
	TokenSecret []byte
}

// Sessions turns session reports into messages under one token policy.
type Sessions struct {
	cfg SessionConfig
}

// NewSessions checks cfg and returns the Sessions that apply it. It refuses a
// derived mode without a signing secret or a token secret, and
// RequireSignature without a signing secret.
func NewSessions(cfg SessionConfig) (*Sessions, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeShared
	}
	switch cfg.Mode {
	case ModeShared:
		if cfg.RequireSignature && len(cfg.SigningSecret) == 0 {
			return nil, errors.New("jimo: signatures are required but no signing secret is set (BRIDGE_JIMO_SIGNING_SECRET)")
		}
	case ModeDerived:
		if len(cfg.SigningSecret) == 0 {
			return nil, errors.New("jimo: derived token mode needs a signing secret (BRIDGE_JIMO_SIGNING_SECRET)")
		}
		if len(cfg.TokenSecret) == 0 {
			return nil, errors.New("jimo: derived token mode needs a token derivation secret")
		}
	default:
		return nil, errors.New("jimo: token mode " + string(cfg.Mode) + " is not one of shared, derived")
	}
	return &Sessions{cfg: cfg}, nil
}

// Mode returns the token mode in force.
func (s *Sessions) Mode() Mode { return s.cfg.Mode }

// Report applies the token policy to one session report received at
// receivedAt. It returns the answer for the page and the message to store.
//
//   - No token and no user ID: a logout, a Message of TypeLogout carrying only
//     the anonymous ID; the answer is empty.
//   - Shared mode: the token is the user ID (userId may repeat it). With
//     RequireSignature, or whenever a signature is sent and a signing secret
//     is set, the signature over the user ID must verify (CodeUnauthorized).
//     A guessable user ID (see Guessable) is a CodeUnprocessable error,
//     returned together with a message to store that carries the warning and
//     is Rejected (it links nothing).
//   - Shared mode, legacy token: a token that differs from userId is a legacy
//     Jimo session token (session:reset with a token, then set user:id with
//     the user ID). The message links the user ID to the token as a jimo_token
//     identifier, and the answer carries the user ID and that token. Both must
//     be usable (CodeInvalid), the signature is over the user ID, and a
//     blocked user ID is CodeUnprocessable (nothing stored). The token is
//     what Jimo keys the session on, so a guessable token is refused like a
//     guessable shared user ID: CodeUnprocessable with a Rejected message
//     carrying the warning. A guessable user ID is accepted, because Jimo gets
//     it only as an attribute (set user:id), never as the session key, and the
//     app's Segment user ID must still join; it is stored with UserIDWarning
//     so the admin page lists it (that user could not move to identify, the
//     current way, in shared mode).
//   - Derived mode: userId and its signature are required (CodeInvalid
//     without userId, CodeUnauthorized without a valid signature, and
//     CodeUnprocessable for a blocked placeholder such as "guest"); the answer
//     carries DeriveToken(TokenSecret, userId), and so does the message, which
//     links the user ID to the token. A token sent along must equal it.
//   - Impersonating: the message is marked (stored, links nothing) and the
//     answer carries no Jimo token.
//
// The message ID is "jimo-session-" and a hash of the report's content (the
// signature aside) and of the client's messageId; without one, of the minute
// of receivedAt instead. A resent report thus deduplicates, and two identical
// reports in different minutes (a genuine second reset) do not collide.
// Errors are *mapping.Error values; the message's zero value means "store
// nothing".
func (s *Sessions) Report(req SessionRequest, receivedAt time.Time) (SessionResponse, mapping.Message, error) {
	token := strings.TrimSpace(req.Token)
	userID := strings.TrimSpace(req.UserID)
	if len(req.MessageID) > mapping.MaxMessageIDLength {
		return SessionResponse{}, mapping.Message{}, mapping.Errorf(mapping.CodeInvalid, "messageId is longer than %d bytes", mapping.MaxMessageIDLength)
	}
	msg := mapping.Message{
		Source:        mapping.SourceJimoSession,
		ID:            sessionMessageID(req, receivedAt),
		Type:          TypeSession,
		AnonymousID:   strings.TrimSpace(req.AnonymousID),
		Impersonating: req.Impersonating,
		Timestamp:     receivedAt,
		ReceivedAt:    receivedAt,
		Raw:           redactedRaw(req),
	}
	if token == "" && userID == "" {
		msg.Type = TypeLogout
		return SessionResponse{}, msg, nil
	}
	msg.Email = strings.TrimSpace(req.Email)
	msg.Traits = traits(req)

	var resp SessionResponse
	switch s.cfg.Mode {
	case ModeDerived:
		if userID == "" {
			return SessionResponse{}, mapping.Message{}, mapping.Errorf(mapping.CodeInvalid,
				"in derived token mode, send userId (the app's user ID) with its signature; the bridge answers with the Jimo token to pass to Jimo (bridge.js: jimoBridge.identify(userId, signature))")
		}
		if err := usable("userId", userID); err != nil {
			return SessionResponse{}, mapping.Message{}, err
		}
		if err := s.checkSignature(userID, req.Signature, true); err != nil {
			return SessionResponse{}, mapping.Message{}, err
		}
		if s.cfg.Blocklist.Blocked(userID) {
			return SessionResponse{}, mapping.Message{}, mapping.Errorf(mapping.CodeUnprocessable,
				"userId is a placeholder value that many users share (blocked), not a user; sign and send the app's real user ID")
		}
		derived := DeriveToken(s.cfg.TokenSecret, userID)
		if token != "" && token != derived {
			return SessionResponse{}, mapping.Message{}, mapping.Errorf(mapping.CodeInvalid,
				"token is not the Jimo token of this userId; in derived mode send only userId and signature, and pass the jimoToken of the answer to Jimo")
		}
		msg.UserID, msg.JimoToken = userID, derived
		resp = SessionResponse{UserID: userID, JimoToken: derived}
	default:
		if token != "" && userID != "" && token != userID {
			var err error
			if resp, err = s.legacy(token, userID, req.Signature, &msg); err != nil {
				return SessionResponse{}, msg, err
			}
			break
		}
		id := token
		if id == "" {
			id = userID
		}
		if err := usable("token", id); err != nil {
			return SessionResponse{}, mapping.Message{}, err
		}
		if err := s.checkSignature(id, req.Signature, s.cfg.RequireSignature); err != nil {
			return SessionResponse{}, mapping.Message{}, err
		}
		msg.UserID = id
		resp = SessionResponse{UserID: id, JimoToken: id}
		if reason := Guessable(id, s.cfg.Blocklist); reason != "" {
			msg.UserIDWarning = reason
			msg.Rejected = RejectedGuessableToken
			return SessionResponse{}, msg, mapping.Errorf(mapping.CodeUnprocessable, "%s", reason)
		}
		// The token the page gave Jimo is a Jimo token too (the user ID's, in
		// shared mode): it is found as one before any Jimo webhook names it.
		msg.JimoToken = id
	}
	if req.Impersonating {
		resp.JimoToken = ""
	}
	return resp, msg, nil
}

// legacy applies the shared-mode policy to a legacy session token that
// differs from the user ID (see Report). On success it fills msg and returns
// the answer. On failure msg is zeroed (store nothing), except for a
// guessable token, whose msg is Rejected and carries the warning.
func (s *Sessions) legacy(token, userID, signature string, msg *mapping.Message) (SessionResponse, error) {
	refuse := func(err error) (SessionResponse, error) {
		*msg = mapping.Message{}
		return SessionResponse{}, err
	}
	if err := usable("userId", userID); err != nil {
		return refuse(err)
	}
	if err := usable("token", token); err != nil {
		return refuse(err)
	}
	if err := s.checkSignature(userID, signature, s.cfg.RequireSignature); err != nil {
		return refuse(err)
	}
	if s.cfg.Blocklist.Blocked(userID) {
		return refuse(mapping.Errorf(mapping.CodeUnprocessable,
			"userId is a placeholder value that many users share (blocked), not a user; send the app's real user ID in set user:id"))
	}
	msg.UserID, msg.JimoToken = userID, token
	if reason := Guessable(token, s.cfg.Blocklist); reason != "" {
		reason = tokenReason(reason)
		msg.UserIDWarning = reason
		msg.Rejected = RejectedGuessableToken
		return SessionResponse{}, mapping.Errorf(mapping.CodeUnprocessable, "%s", reason)
	}
	msg.UserIDWarning = Guessable(userID, s.cfg.Blocklist)
	return SessionResponse{UserID: userID, JimoToken: token}, nil
}

// tokenReason rewords a Guessable reason about a user ID as one about the
// legacy session token passed to session:reset.
func tokenReason(reason string) string {
	if rest, ok := strings.CutPrefix(reason, "user ID"); ok {
		return "session token (the value passed to session:reset)" + rest
	}
	return reason
}

// checkSignature verifies sig over value when required, or when it is sent
// and a signing secret is configured (a wrong signature is never ignored).
func (s *Sessions) checkSignature(value, sig string, required bool) error {
	sig = strings.TrimSpace(sig)
	if sig == "" {
		if required {
			return mapping.Errorf(mapping.CodeUnauthorized,
				"signature is required: have your backend sign the user ID with BRIDGE_JIMO_SIGNING_SECRET (hex HMAC-SHA256) and send it as signature")
		}
		return nil
	}
	if !required && len(s.cfg.SigningSecret) == 0 {
		return nil
	}
	if !VerifySignature(s.cfg.SigningSecret, value, sig) {
		return mapping.Errorf(mapping.CodeUnauthorized,
			"signature does not match the user ID: it must be hex(HMAC-SHA256(BRIDGE_JIMO_SIGNING_SECRET, user ID)) computed by your backend")
	}
	return nil
}

// usable refuses a value that cannot be an identifier at all.
func usable(field, v string) error {
	if _, reason := mapping.Normalize(v); reason != "" {
		return mapping.Errorf(mapping.CodeInvalid, "%s is not a usable identifier (%s)", field, reason)
	}
	return nil
}

// traits gathers what the page set: attributes, then name and email, which win.
func traits(req SessionRequest) map[string]any {
	t := make(map[string]any, len(req.Attributes)+2)
	for k, v := range req.Attributes {
		t[k] = v
	}
	if name := strings.TrimSpace(req.Name); name != "" {
		t["name"] = name
	}
	if email := strings.TrimSpace(req.Email); email != "" {
		t["email"] = email
	}
	if len(t) == 0 {
		return nil
	}
	return t
}

// sessionContent is what a session message ID is computed over.
type sessionContent struct {
	Token         string         `json:"token"`
	UserID        string         `json:"userId"`
	AnonymousID   string         `json:"anonymousId"`
	Impersonating bool           `json:"impersonating"`
	Email         string         `json:"email"`
	Name          string         `json:"name"`
	Attributes    map[string]any `json:"attributes"`
	MessageID     string         `json:"messageId,omitempty"`
	Minute        int64          `json:"minute,omitempty"`
}

func (r SessionRequest) content() sessionContent {
	return sessionContent{
		Token: r.Token, UserID: r.UserID, AnonymousID: r.AnonymousID, Impersonating: r.Impersonating,
		Email: r.Email, Name: r.Name, Attributes: r.Attributes, MessageID: r.MessageID,
	}
}

// sessionMessageID is deterministic over the report's content (map keys are
// encoded sorted) and its messageId, or the minute it arrived.
func sessionMessageID(req SessionRequest, receivedAt time.Time) string {
	c := req.content()
	if c.MessageID == "" {
		c.Minute = receivedAt.UTC().Truncate(time.Minute).Unix()
	}
	b, err := json.Marshal(c)
	if err != nil {
		// Attributes came from JSON, so they encode; hash what can be hashed.
		c.Attributes = nil
		b, _ = json.Marshal(c)
	}
	sum := sha256.Sum256(b)
	return "jimo-session-" + hex.EncodeToString(sum[:16])
}

// redactedRaw is the report as stored: its Raw, or its fields re-encoded,
// never with a signature.
func redactedRaw(req SessionRequest) json.RawMessage {
	if len(req.Raw) > 0 {
		var fields map[string]json.RawMessage
		if json.Unmarshal(req.Raw, &fields) == nil {
			delete(fields, "signature")
			if b, err := json.Marshal(fields); err == nil {
				return b
			}
		}
	}
	b, err := json.Marshal(req.content())
	if err != nil {
		return nil
	}
	return b
}
