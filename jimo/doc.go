// Package jimo speaks the Jimo side of the bridge: the session resets and
// identifies that the page reports through the companion script (bridge.js),
// the token policy (shared or derived tokens, guessable IDs, signatures), and
// Jimo's outgoing webhooks. It translates them into mapping.Message values;
// Echo stays at the edge (handler.go), the core functions take plain values.
package jimo
