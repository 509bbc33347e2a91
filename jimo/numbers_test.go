package jimo

import (
	"encoding/json"
	"testing"
)

// TestSessionAttributesKeepLargeIntegers: the page's attributes decode
// numbers as json.Number, so a Snowflake ID reaches Segment with every digit.
func TestSessionAttributesKeepLargeIntegers(t *testing.T) {
	req, err := DecodeSession([]byte(`{"token":"0f8fad5b-d9cb-469f-a165-70867728950e","attributes":{"org_id":1593412345678901236,"seats":12}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Attributes["org_id"]; got != json.Number("1593412345678901236") {
		t.Errorf("org_id: got %#v, want json.Number 1593412345678901236", got)
	}
	if got := req.Attributes["seats"]; got != json.Number("12") {
		t.Errorf("seats: got %#v, want json.Number 12", got)
	}
}
