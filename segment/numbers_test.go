package segment

import (
	"encoding/json"
	"testing"
)

// TestTraitsKeepLargeIntegers: traits decode numbers as json.Number, so an
// integer beyond 2^53 keeps every digit.
func TestTraitsKeepLargeIntegers(t *testing.T) {
	m := decodeOne(t, "identify", `{"userId":"u","traits":{"snowflake":1593412345678901234,"big":1234567890123456789012,"ratio":0.5,"nested":{"id":9007199254740993}}}`)
	for key, want := range map[string]json.Number{"snowflake": "1593412345678901234", "big": "1234567890123456789012", "ratio": "0.5"} {
		if got := m.Traits[key]; got != want {
			t.Errorf("trait %s: got %#v, want %#v", key, got, want)
		}
	}
	nested, _ := m.Traits["nested"].(map[string]any)
	if got := nested["id"]; got != json.Number("9007199254740993") {
		t.Errorf("nested id: got %#v, want 9007199254740993", got)
	}
}
